"""Moving digits: a small action dataset made from real handwritten digits, written as real video
files (through :func:`deepfeat.data.video.write_video`, the writer a user's files could come from) in
UCF-101's layout, so that it is read back through the same reader as real data.

Each class is a digit and a motion (``3-left``, ``7-zoom-in``): one (or two) instances of the digit
moving over a black frame. Motions come in pairs that are each other's time reversal (left / right,
up / down, zoom-in / zoom-out, rotate-cw / rotate-ccw): a clip of the second kind is a clip of the
first played backwards, drawn from the same distribution, so that the frames of the two classes have
exactly the same distribution and no single frame can tell them apart; only the order of frames can.
Training clips use MNIST training digits and test clips MNIST test digits (unseen writers).

Layout written under ``out``: ``<class>/v_<class>_c<NNN>.<ext>``, ``classInd.txt``,
``trainlist01.txt`` (``<class>/<file> <class number>``), ``testlist01.txt`` and ``moving_digits.json``
(the settings, the digit source and every clip's parameters). Everything is a function of the seed:
clip ``c`` of class ``k`` draws from its own generator seeded by (seed, k, c). A rerun with the same
settings keeps the files already written (each was written atomically) and adds the missing ones.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from deepfeat.data.video import opencv, write_video
from deepfeat.errors import ConfigError, DataError
from deepfeat.fileio import atomic_write_text, write_json
from deepfeat.validation import check_choice, check_float, check_int

MOTIONS = ("left", "right", "up", "down", "zoom-in", "zoom-out", "rotate-cw", "rotate-ccw")
#: motion -> (the forward motion it is drawn from, whether it is played backwards)
_PAIRS = {
    "right": ("right", False),
    "left": ("right", True),
    "down": ("down", False),
    "up": ("down", True),
    "zoom-in": ("zoom-in", False),
    "zoom-out": ("zoom-in", True),
    "rotate-cw": ("rotate-cw", False),
    "rotate-ccw": ("rotate-cw", True),
}
FORMATS = ("mp4", "avi")
DIGIT = 28  # side of an MNIST digit image


@dataclass(frozen=True)
class MovingDigits:
    """Settings of a moving-digit set (see the module docstring).

    ``classes``: class names ``<digit>-<motion>``; default: every digit of ``digits`` with every
    motion of ``motions``. ``clips_per_class`` clips per class, ``test_fraction`` of them (rounded,
    at least one) in the test list. ``frames`` per clip of ``size`` x ``size`` pixels at ``fps``.
    ``digits_per_clip``: 1 or 2 instances of the class's digit, each doing the class's motion.
    ``speed``: translation in pixels per frame (a range; zoom and rotation scale with it).
    """

    digits: tuple[int, ...] = (0, 1, 2)
    motions: tuple[str, ...] = ("left", "right", "up", "down")
    classes: tuple[str, ...] | None = None
    clips_per_class: int = 16
    test_fraction: float = 0.3
    frames: int = 24
    size: int = 64
    fps: float = 25.0
    format: str = "mp4"
    digits_per_clip: int = 1
    speed: tuple[float, float] = (0.9, 1.4)
    seed: int = 0

    def class_names(self) -> list[str]:
        """The classes, validated."""
        if self.classes is not None:
            names = list(self.classes)
        else:
            names = [f"{d}-{m}" for d in self.digits for m in self.motions]
        if not names:
            raise ConfigError("no class: give digits and motions, or classes")
        for name in names:
            digit, _, motion = str(name).partition("-")
            if not (digit.isdigit() and len(digit) == 1):
                raise ConfigError(f"class {name!r}: expected <digit>-<motion>, e.g. '3-left'")
            check_choice(f"motion of class {name!r}", motion, MOTIONS)
        if len(set(names)) != len(names):
            raise ConfigError("a class is named twice")
        return names

    def validate(self) -> None:
        self.class_names()
        check_int("clips_per_class", self.clips_per_class, 2)
        check_float("test_fraction", self.test_fraction, 0, 1, low_open=True, high_open=True)
        check_int("frames", self.frames, 2)
        check_int("size", self.size, 2 * DIGIT)
        check_float("fps", self.fps, 0, low_open=True)
        check_choice("format", self.format, FORMATS)
        check_int("digits_per_clip", self.digits_per_clip, 1, 2)
        lo, hi = (check_float("speed", v, 0, low_open=True) for v in self.speed)
        if lo > hi:
            raise ConfigError(f"speed range must be (low, high), got {self.speed}")

    def n_test(self) -> int:
        return min(self.clips_per_class - 1, max(1, round(self.test_fraction * self.clips_per_class)))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["classes"] = self.class_names()
        return out


def load_digit_images(source: str | os.PathLike | None = None) -> tuple[dict, str]:
    """Digit images by split: ({"train": (images, labels), "test": (...)}, description).

    ``source``: an ``.npz`` with MNIST's arrays (``x_train``, ``y_train``, ``x_test``, ``y_test``,
    28x28 uint8), or None for scikit-learn's bundled 8x8 digits scaled up to 28x28 (every other image
    for training), which need no download.
    """
    if source is None:
        from PIL import Image
        from sklearn.datasets import load_digits

        bunch = load_digits()
        small = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        big = np.stack(
            [np.asarray(Image.fromarray(im).resize((20, 20), Image.Resampling.BICUBIC)) for im in small]
        )
        images = np.zeros((len(big), DIGIT, DIGIT), np.uint8)
        images[:, 4:24, 4:24] = big  # MNIST-like: a 20x20 digit in a 28x28 frame
        labels = bunch.target.astype(np.int64)
        return {
            "train": (images[0::2], labels[0::2]),
            "test": (images[1::2], labels[1::2]),
        }, "scikit-learn digits"
    path = Path(source)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
    except FileNotFoundError:
        raise DataError(f"{path}: digit file not found") from None
    except KeyError as exc:
        raise DataError(f"{path}: needs arrays x_train, y_train, x_test, y_test (missing {exc})") from None
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz of digit arrays ({exc})") from None
    for part in ("train", "test"):
        x = arrays[f"x_{part}"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (DIGIT, DIGIT):
            raise DataError(f"{path}: x_{part} must be uint8 (n, 28, 28), got {x.dtype} {x.shape}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return (
        {p: (arrays[f"x_{p}"], arrays[f"y_{p}"].astype(np.int64)) for p in ("train", "test")},
        f"{path.name} (sha256 {digest})",
    )


def _place(canvas: np.ndarray, digit: np.ndarray, cx: float, cy: float, scale: float, angle: float) -> None:
    """Draw ``digit`` centred at (cx, cy), scaled and rotated (degrees, counter-clockwise on screen)
    onto the float canvas, keeping the brighter pixel where digits overlap."""
    cv2 = opencv()
    m = cv2.getRotationMatrix2D((DIGIT / 2, DIGIT / 2), angle, scale)
    m[:, 2] += (cx - DIGIT / 2, cy - DIGIT / 2)
    size = canvas.shape[0]
    warped = cv2.warpAffine(digit.astype(np.float32), m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)
    np.maximum(canvas, warped, out=canvas)


def _trajectory(motion: str, spec: MovingDigits, rng: np.random.Generator) -> dict:
    """Centre, scale and angle per frame of one digit doing the forward ``motion``."""
    t = np.arange(spec.frames, dtype=np.float64)
    n, size = spec.frames, spec.size
    speed = rng.uniform(*spec.speed)
    margin = DIGIT / 2 - 2
    cx = np.full(n, rng.uniform(margin, size - margin))
    cy = np.full(n, rng.uniform(margin, size - margin))
    scale, angle = np.ones(n), np.zeros(n)
    if motion in ("right", "down"):
        room = size - 2 * margin
        length = min(speed * (n - 1), room)
        start = rng.uniform(margin, size - margin - length)
        track = start + length * t / (n - 1)
        if motion == "right":
            cx = track
        else:
            cy = track
    elif motion == "zoom-in":
        ratio = min(2.2, 1 + speed * (n - 1) / DIGIT)
        s0 = rng.uniform(0.55, 0.7)
        scale = s0 * ratio ** (t / (n - 1))
        half = DIGIT * scale[-1] / 2 - 2
        lo, hi = min(half, size / 2), max(size - half, size / 2)
        cx[:], cy[:] = rng.uniform(lo, hi), rng.uniform(lo, hi)
    else:  # rotate-cw: the angle decreases (clockwise on screen)
        sweep = min(180.0, 4.0 * speed * (n - 1))
        a0 = rng.uniform(-45, 45) + sweep / 2
        angle = a0 - sweep * t / (n - 1)
    return {"cx": cx, "cy": cy, "scale": scale, "angle": angle, "speed": speed}


def render_clip(
    spec: MovingDigits, motion: str, digits: list[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, list]:
    """Frames (T, size, size, 3) uint8 of ``digits`` doing ``motion``, and each digit's parameters."""
    forward, backwards = _PAIRS[motion]
    frames = np.zeros((spec.frames, spec.size, spec.size), np.float32)
    params = []
    for digit in digits:
        traj = _trajectory(forward, spec, rng)
        for i in range(spec.frames):
            _place(frames[i], digit, traj["cx"][i], traj["cy"][i], traj["scale"][i], traj["angle"][i])
        params.append(
            {
                k: (float(v[0]), float(v[-1])) if isinstance(v, np.ndarray) else float(v)
                for k, v in traj.items()
            }
        )
    if backwards:
        frames = frames[::-1]
        params = [{k: (v[1], v[0]) if isinstance(v, tuple) else v for k, v in p.items()} for p in params]
    rgb = np.repeat(np.clip(np.rint(frames), 0, 255).astype(np.uint8)[..., None], 3, axis=3)
    return np.ascontiguousarray(rgb), params


def make_moving_digits(
    out: str | os.PathLike,
    spec: MovingDigits | None = None,
    digit_source: str | os.PathLike | None = None,
    *,
    progress: bool = True,
) -> dict:
    """Write the moving-digit set ``spec`` into folder ``out`` (see the module docstring); returns its
    description (also in ``out/moving_digits.json``)."""
    spec = spec or MovingDigits()
    spec.validate()
    out = Path(out)
    names = spec.class_names()
    pools, source = load_digit_images(digit_source)
    settings = {**spec.to_dict(), "digit_source": source}
    record_path = out / "moving_digits.json"
    if record_path.exists():
        import json

        try:
            old = json.loads(record_path.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            old = None
        if old != json.loads(json.dumps(settings)):
            raise ConfigError(
                f"{out} holds a moving-digit set made with other settings; choose another folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json(record_path, {"settings": settings, "complete": False})
    n_test = spec.n_test()
    train_lines, test_lines, clips = [], [], []
    bar = tqdm(
        total=len(names) * spec.clips_per_class, unit="clip", desc="moving digits", disable=not progress
    )
    for k, name in enumerate(names):
        digit, _, motion = name.partition("-")
        folder = out / name
        folder.mkdir(exist_ok=True)
        for c in range(spec.clips_per_class):
            part = "test" if c >= spec.clips_per_class - n_test else "train"
            images, labels = pools[part]
            candidates = np.flatnonzero(labels == int(digit))
            if candidates.size == 0:
                raise DataError(f"{source}: no image of digit {digit} in its {part} part")
            rng = np.random.default_rng([spec.seed, k, c])
            picks = rng.choice(candidates, size=spec.digits_per_clip, replace=False)
            frames, params = render_clip(spec, motion, [images[i] for i in picks], rng)
            file = f"v_{name}_c{c + 1:03d}.{spec.format}"
            if not (folder / file).exists():
                write_video(folder / file, frames, fps=spec.fps)
            rel = f"{name}/{file}"
            (test_lines if part == "test" else train_lines).append(
                rel if part == "test" else f"{rel} {k + 1}"
            )
            clips.append(
                {"file": rel, "class": name, "split": part, "digit_images": picks.tolist(), "digits": params}
            )
            bar.update()
    bar.close()
    atomic_write_text(out / "classInd.txt", "".join(f"{k + 1} {n}\n" for k, n in enumerate(names)))
    atomic_write_text(out / "trainlist01.txt", "".join(line + "\n" for line in train_lines))
    atomic_write_text(out / "testlist01.txt", "".join(line + "\n" for line in test_lines))
    record = {
        "settings": settings,
        "complete": True,
        "classes": names,
        "n_train": len(train_lines),
        "n_test": len(test_lines),
        "clips": clips,
    }
    write_json(record_path, record)
    return record
