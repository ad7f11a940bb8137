"""Described moving digits: clips of one coloured handwritten digit doing one motion, three semantic
slots per clip (``digit``, ``motion``, ``colour``) and several sentences per clip from a seeded
grammar ("the digit seven slides to the left", "a red 7 moves left across the frame", ...).

The frames come from the moving-digit generator of the activity-recognition task
(:func:`deepfeat.tasks.video.moving_digits.render_clip`: same trajectories, same digit sources, same
video writer), tinted with the clip's colour (``colour_jitter`` perturbs it per clip, ``noise`` adds
Gaussian pixel noise; both make the colour and digit slots harder to predict).

Four parts, each drawn independently: ``slots`` (clips for training the slot classifiers, never used
to train a sentence model), ``train`` and ``val`` (the sentence models), ``test``. The test clips draw
their digits from the held-out digit images (unseen writers). Files written under ``out``:

- ``clips/<part>/<part>_<NNNN>.<ext>``: the videos;
- ``descriptions.csv``: ``path,sentence,split``, one row per sentence (``sentences_per_clip`` per clip
  of ``train``, ``val`` and ``test``);
- ``slot_<slot>.csv``: ``path,label,split`` of the ``slots`` clips (split ``train``), the training set
  of that slot's classifier (``deepfeat video train DATA/slot_digit.csv ...``);
- ``truth.json``: every clip's true slot values; ``described_digits.json``: the settings.

Everything is a function of the seed: clip ``i`` of part ``p`` draws from its own generator seeded
by (seed, p, i); rerunning with the same settings keeps the files already written.
"""

from __future__ import annotations

import csv
import io
import json
import numbers
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from deepfeat.data.video import write_video
from deepfeat.errors import ConfigError, DataError
from deepfeat.fileio import atomic_write_text, to_jsonable, write_json
from deepfeat.tasks.video.moving_digits import FORMATS, MOTIONS, MovingDigits, load_digit_images, render_clip
from deepfeat.validation import check_choice, check_float, check_int

SLOTS = ("digit", "motion", "colour")
PARTS = ("slots", "train", "val", "test")
#: colour name -> RGB
PALETTE = {
    "red": (235, 45, 40),
    "green": (45, 205, 70),
    "blue": (55, 95, 235),
    "yellow": (235, 215, 45),
    "orange": (245, 135, 35),
    "purple": (155, 65, 210),
    "cyan": (45, 215, 225),
    "white": (235, 235, 235),
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: motion -> verb phrases (present tense, third person)
MOTION_PHRASES = {
    "left": (
        "moves to the left",
        "slides left",
        "drifts leftwards",
        "travels left across the frame",
        "goes left",
    ),
    "right": (
        "moves to the right",
        "slides right",
        "drifts rightwards",
        "travels right across the frame",
        "goes right",
    ),
    "up": ("moves up", "rises towards the top", "slides upwards", "climbs up the frame", "goes up"),
    "down": (
        "moves down",
        "falls towards the bottom",
        "slides downwards",
        "drops down the frame",
        "goes down",
    ),
    "zoom-in": ("grows larger", "zooms in", "gets bigger", "expands"),
    "zoom-out": ("shrinks", "zooms out", "gets smaller", "contracts"),
    "rotate-cw": ("turns clockwise", "rotates clockwise", "spins clockwise"),
    "rotate-ccw": ("turns counterclockwise", "rotates counterclockwise", "spins counterclockwise"),
}
#: sentence templates: {s} plain subject, {c} coloured subject, {m} motion phrase, {colour}
TEMPLATES = (
    "{c} {m}",
    "{c} {m}",
    "{s} {m}",
    "{s} in {colour} {m}",
    "in this clip {c} {m}",
    "there is {c} that {m}",
    "{s} {m} , it is {colour}",
    "we see {c} which {m}",
)


@dataclass(frozen=True)
class DescribedDigits:
    """Settings of a described moving-digit set (see the module docstring). ``clips``: clips per part
    (slots, train, val, test); slot values are drawn uniformly and independently per clip."""

    digits: tuple[int, ...] = (0, 1, 2, 3, 4)
    motions: tuple[str, ...] = ("left", "right", "up", "down")
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    clips: tuple[int, int, int, int] = (120, 160, 40, 60)
    sentences_per_clip: int = 4
    frames: int = 12
    size: int = 56
    fps: float = 25.0
    format: str = "mp4"
    speed: tuple[float, float] = (1.8, 2.6)
    colour_jitter: float = 0.0
    noise: float = 0.0
    seed: int = 0

    def validate(self) -> DescribedDigits:
        if not self.digits or any(not (isinstance(d, numbers.Integral) and 0 <= d <= 9) for d in self.digits):
            raise ConfigError(f"digits must be integers 0..9, got {self.digits}")
        if not self.motions or not self.colours:
            raise ConfigError("give at least one motion and one colour")
        for m in self.motions:
            check_choice("motion", m, MOTIONS)
        for c in self.colours:
            check_choice("colour", c, PALETTE)
        for what, values in (("digits", self.digits), ("motions", self.motions), ("colours", self.colours)):
            if len(set(values)) != len(values):
                raise ConfigError(f"{what}: a value is listed twice")
        if len(self.clips) != len(PARTS):
            raise ConfigError(f"clips: one count per part {PARTS}, got {self.clips}")
        for part, n in zip(PARTS, self.clips):
            check_int(f"clips of part {part!r}", n, 1)
        check_int("sentences_per_clip", self.sentences_per_clip, 1)
        check_int("frames", self.frames, 2)
        check_int("size", self.size, 56)
        check_float("fps", self.fps, 0, low_open=True)
        check_choice("format", self.format, FORMATS)
        check_float("colour_jitter", self.colour_jitter, 0, 1)
        check_float("noise (pixel standard deviation)", self.noise, 0)
        return self

    def slot_values(self) -> dict[str, list[str]]:
        return {
            "digit": [str(d) for d in self.digits],
            "motion": list(self.motions),
            "colour": list(self.colours),
        }

    def to_dict(self) -> dict:
        return to_jsonable(asdict(self))  # plain JSON values, NumPy numbers included


def describe(slots: dict[str, str], rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct sentences (when the grammar allows) for a clip with ``slots``."""
    digit, motion, colour = int(slots["digit"]), slots["motion"], slots["colour"]
    word = NUMBER_WORDS[digit]
    out: list[str] = []
    for _ in range(20 * n):
        name = str(rng.choice([word, word, str(digit)]))
        plain = str(rng.choice([f"the digit {name}", f"a {name}", f"the number {name}", f"the {name}"]))
        det = str(rng.choice(["a", "the"]))
        coloured = str(rng.choice([f"{det} {colour} {name}", f"{det} {colour} digit {name}"]))
        template = str(rng.choice(TEMPLATES))
        phrase = str(rng.choice(MOTION_PHRASES[motion]))
        text = template.format(s=plain, c=coloured, m=phrase, colour=colour)
        if text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out


def _tint(frames: np.ndarray, colour: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    grey = frames[..., :1].astype(np.float32) / 255.0
    rgb = grey * colour[None, None, None, :]
    if noise:
        rgb = rgb + rng.normal(0.0, noise, size=rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _csv(rows: list[list[str]], header: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def make_described_digits(
    out: str | os.PathLike,
    spec: DescribedDigits | None = None,
    digit_source: str | os.PathLike | None = None,
    *,
    progress: bool = True,
) -> dict:
    """Write the described set ``spec`` into ``out`` (see the module docstring); returns its record."""
    spec = (spec or DescribedDigits()).validate()
    out = Path(out)
    pools, source = load_digit_images(digit_source)
    settings = {**spec.to_dict(), "digit_source": source}
    record_path = out / "described_digits.json"
    if record_path.exists():
        try:
            old = json.loads(record_path.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            old = None
        if old != json.loads(json.dumps(settings)):
            raise ConfigError(
                f"{out} holds a described digit set made with other settings; choose another folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json(record_path, {"settings": settings, "complete": False})
    render = MovingDigits(frames=spec.frames, size=spec.size, fps=spec.fps, speed=spec.speed)
    values = spec.slot_values()
    truth: dict[str, dict] = {}
    described: list[list[str]] = []
    slot_rows: dict[str, list[list[str]]] = {s: [] for s in SLOTS}
    bar = tqdm(total=sum(spec.clips), unit="clip", desc="described digits", disable=not progress)
    for p, (part, count) in enumerate(zip(PARTS, spec.clips)):
        images, labels = pools["test" if part == "test" else "train"]
        for i in range(count):
            rng = np.random.default_rng([spec.seed, p, i])
            slots = {s: str(rng.choice(values[s])) for s in SLOTS}
            candidates = np.flatnonzero(labels == int(slots["digit"]))
            if candidates.size == 0:
                raise DataError(f"{source}: no image of digit {slots['digit']}")
            pick = int(rng.choice(candidates))
            frames, _ = render_clip(render, slots["motion"], [images[pick]], rng)
            colour = np.asarray(PALETTE[slots["colour"]], np.float32)
            if spec.colour_jitter:
                colour = np.clip(colour + rng.uniform(-1, 1, 3) * 255 * spec.colour_jitter, 0, 255)
            rel = f"clips/{part}/{part}_{i:04d}.{spec.format}"
            video = _tint(frames, colour, spec.noise, rng)
            if not (out / rel).exists():
                write_video(out / rel, video, fps=spec.fps)
            truth[rel] = {**slots, "part": part, "digit_image": pick}
            if part == "slots":
                for s in SLOTS:
                    slot_rows[s].append([rel, slots[s], "train"])
            else:
                described += [[rel, text, part] for text in describe(slots, rng, spec.sentences_per_clip)]
            bar.update()
    bar.close()
    atomic_write_text(out / "descriptions.csv", _csv(described, ["path", "sentence", "split"]))
    for s in SLOTS:
        atomic_write_text(out / f"slot_{s}.csv", _csv(slot_rows[s], ["path", "label", "split"]))
    write_json(out / "truth.json", {"slots": values, "clips": truth})
    record = {
        "settings": settings,
        "complete": True,
        "slots": values,
        "clips": dict(zip(PARTS, spec.clips)),
        "sentences": len(described),
    }
    write_json(record_path, record)
    return record
