"""CLI: ``deepfeat video describe``: LRCN video description from predicted semantic slots (thesis
Section 4.5): make the described moving-digit set, predict slots with trained clip classifiers,
train architecture a / b / c, evaluate (BLEU-1..4, CIDEr-D), describe video files.

Parses the options into the library's typed jobs (:mod:`deepfeat.tasks.video_description`), runs
them and prints; every number comes from the library.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from deepfeat.cli.common import (
    THREADS,
    VERBOSE,
    friendly,
    quiet_opencv,
    set_threads,
    setup_logging,
)
from deepfeat.cli.parsing import ints, names
from deepfeat.errors import ConfigError
from deepfeat.report.tables import text_table

describe_app = typer.Typer(
    help="Video description (LRCN, thesis Section 4.5): sentences from predicted slots; "
    "make-digits, slots, train, evaluate, generate.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

SLOTS_HELP = "Slot prediction file (JSON: {slots: {slot: [values]}, videos: {path: {slot: probs or label}}})."
CLASSIFIER_HELP = (
    "SLOT=MODEL: a clip classifier (deepfeat video train) predicting that slot; repeat per slot."
)


class Arch(str, Enum):
    a = "a"
    b = "b"
    c = "c"


class Unit(str, Enum):
    lstm = "lstm"
    rnn = "rnn"


class Monitor(str, Enum):
    bleu_4 = "bleu_4"
    perplexity = "perplexity"


class Optimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


def slot_models(pairs: list[str] | None) -> dict[str, str]:
    """``SLOT=MODEL`` options as {slot: model}."""
    out: dict[str, str] = {}
    for text in pairs or []:
        for item in names(text, "--classifier"):
            slot, sep, model = item.partition("=")
            if not sep or not slot.strip() or not model.strip():
                raise ConfigError(f"--classifier {item!r}: expected SLOT=MODEL, e.g. digit=models/digit")
            if slot.strip() in out:
                raise ConfigError(f"--classifier: slot {slot.strip()!r} is given twice")
            out[slot.strip()] = model.strip()
    return out


@describe_app.command("make-digits")
@friendly
def make_digits_command(
    out: Path = typer.Argument(..., help="Folder for the clips, descriptions.csv and slot_<slot>.csv."),
    digits: str = typer.Option("0,1,2,3,4", help="Digit slot values."),
    motions: str = typer.Option("left,right,up,down", help="Motion slot values (moving-digit motions)."),
    colours: str = typer.Option("red,green,blue,yellow", help="Colour slot values."),
    clips: str = typer.Option("120,160,40,60", help="Clips of the parts slots,train,val,test."),
    sentences: int = typer.Option(4, min=1, help="Sentences per clip."),
    frames: int = typer.Option(12, min=2, help="Frames per clip."),
    size: int = typer.Option(56, min=56, help="Frame side in pixels."),
    colour_jitter: float = typer.Option(0.0, help="Per-clip colour perturbation (share of 255)."),
    noise: float = typer.Option(0.0, help="Gaussian pixel noise (standard deviation, 0-255 scale)."),
    seed: int = typer.Option(0, help="Seed: the same settings and seed give the same set."),
    mnist: Path = typer.Option(None, help="MNIST as .npz; default: scikit-learn's bundled digits."),
    verbose: bool = VERBOSE,
) -> None:
    """Write described moving digits: coloured digits moving, slots (digit, motion, colour), sentences."""
    from deepfeat.tasks.video_description import DescribedDigits, make_described_digits

    setup_logging(verbose)
    quiet_opencv()
    spec = DescribedDigits(
        digits=tuple(ints(digits, "--digits", minimum=0)),
        motions=tuple(names(motions, "--motions")),
        colours=tuple(names(colours, "--colours")),
        clips=tuple(ints(clips, "--clips", minimum=1)),
        sentences_per_clip=sentences,
        frames=frames,
        size=size,
        colour_jitter=colour_jitter,
        noise=noise,
        seed=seed,
    )
    record = make_described_digits(out, spec, mnist)
    parts = ", ".join(f"{k} {v}" for k, v in record["clips"].items())
    typer.echo(f"clips: {parts}; {record['sentences']} sentences in {out / 'descriptions.csv'}")
    typer.echo(f"slot classifier data: {', '.join(str(out / f'slot_{s}.csv') for s in record['slots'])}")


@describe_app.command("slots")
@friendly
def slots_command(
    data: Path = typer.Argument(..., help="Description manifest (path,sentence[,split]) or its folder."),
    classifier: list[str] = typer.Option(..., "--classifier", "-c", help=CLASSIFIER_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Slot prediction file to write (JSON)."),
    store: Path = typer.Option(None, help="Feature store for the clips' frame features."),
    device: str = typer.Option(None, help="Torch device."),
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Predict every video's slots (probability vectors) with one trained clip classifier per slot."""
    from deepfeat.tasks.video_description import predict_slots, read_descriptions

    setup_logging(verbose)
    set_threads(threads)
    quiet_opencv()
    models = slot_models(classifier)
    items = read_descriptions(data)
    preds = predict_slots(items.ids, items.paths, models, store=store, device=device)
    preds.write(out)
    typer.echo(f"{len(preds.ids)} videos, slots {', '.join(preds.slots)} -> {out}")
    for vid, why in preds.failures:
        typer.echo(f"no prediction for {vid}: {why}")


@describe_app.command("train")
@friendly
def train_command(
    data: Path = typer.Argument(
        ..., help="Description manifest (path,sentence,split: train and val) or folder."
    ),
    arch: Arch = typer.Option(Arch.c, help="a: encoder-decoder (max), b: decoder (max), c: decoder (probs)."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder (model.pt, checkpoints, history.json)."),
    slots: Path = typer.Option(None, help=SLOTS_HELP),
    classifier: list[str] = typer.Option(None, "--classifier", "-c", help=CLASSIFIER_HELP),
    hidden: int = typer.Option(128, min=1, help="LSTM units per layer (thesis: 1000)."),
    embed: int = typer.Option(64, min=1, help="Word and slot-token embedding size."),
    dropout: float = typer.Option(0.3, help="Dropout on the non-recurrent connections."),
    unit: Unit = typer.Option(Unit.lstm, help="Recurrent unit."),
    min_count: int = typer.Option(1, min=1, help="Words seen fewer times are <unk>."),
    max_length: int = typer.Option(20, min=1, help="Words per sentence."),
    epochs: int = typer.Option(30, min=1, help="Passes over the training sentences."),
    batch_size: int = typer.Option(32, min=1, help="Sentences per step."),
    optimizer: Optimizer = typer.Option(Optimizer.adam, help="adam or sgd."),
    lr: float = typer.Option(None, help="Learning rate (default: 1e-3 for adam, 0.1 for sgd)."),
    patience: int = typer.Option(4, min=1, help="Epochs without a better validation score before stopping."),
    monitor: Monitor = typer.Option(Monitor.bleu_4, help="Validation score for early stopping."),
    seed: int = typer.Option(0, min=0, help="Seed of the initialisation, batches and dropout."),
    store: Path = typer.Option(None, help="Feature store (with --classifier)."),
    device: str = typer.Option(None, help="Torch device."),
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Train a sentence model on the train videos' slot predictions (resumes from OUT's checkpoint)."""
    from deepfeat.tasks.text.training import TrainingOptions
    from deepfeat.tasks.video_description import DescribeOptions, DescribeTrainJob, train

    setup_logging(verbose)
    set_threads(threads)
    quiet_opencv()
    training = TrainingOptions(
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer.value,
        learning_rate=lr,
        patience=patience,
        monitor=monitor.value,
        seed=seed,
        device=device,
    )
    options = DescribeOptions(
        arch=arch.value,
        hidden=hidden,
        embed=embed,
        dropout=dropout,
        unit=unit.value,
        min_count=min_count,
        max_length=max_length,
        training=training,
    )
    job = DescribeTrainJob(
        data, options, slots=slots, classifiers=slot_models(classifier), store=store, out=out
    )
    result = train(job.validate(), echo=typer.echo)
    t = result.training
    typer.echo(
        f"{result.model.label}: best epoch {t.best_epoch} (validation {options.training.monitor} "
        f"{t.best_score:.4g}), {t.seconds:.0f} s; model: {result.model_path}"
    )


@describe_app.command("evaluate")
@friendly
def evaluate_command(
    data: Path = typer.Argument(..., help="Description manifest (path,sentence,split) or its folder."),
    model: list[Path] = typer.Option(..., "--model", "-m", help="Model folder; repeat to compare (a, b, c)."),
    slots: Path = typer.Option(..., help=SLOTS_HELP),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for results.json and report.md."),
    split: str = typer.Option("test", help="Split scored."),
    beam: int = typer.Option(1, min=1, help="Beam width (1: greedy)."),
    nearest_neighbour: bool = typer.Option(True, help="Add the nearest-neighbour sentence baseline."),
    device: str = typer.Option(None, help="Torch device."),
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Score models on a split: BLEU-1..4 and CIDEr-D, one row per model (as Table 4.9)."""
    from deepfeat.tasks.video_description import DescribeEvalJob, evaluate, write_report

    setup_logging(verbose)
    set_threads(threads)
    job = DescribeEvalJob(
        data, slots, list(model), split=split, beam=beam, nearest_neighbour=nearest_neighbour, device=device
    )
    result = evaluate(job.validate(), echo=lambda _: None)
    header, rows = result.table()
    typer.echo(text_table(rows, header))
    if out is not None:
        paths = write_report(result, out)
        typer.echo(f"results: {paths['results']}\nreport:  {paths['report']}")


@describe_app.command("generate")
@friendly
def generate_command(
    clips: list[str] = typer.Argument(..., help="Video files to describe (keys of --slots when given)."),
    model: Path = typer.Option(..., "--model", "-m", help="Model folder."),
    slots: Path = typer.Option(None, help=SLOTS_HELP + " Default: the model's own slot classifiers."),
    beam: int = typer.Option(1, min=1, help="Beam width (1: greedy)."),
    samples: int = typer.Option(None, min=1, help="Sample this many sentences and keep the most probable."),
    temperature: float = typer.Option(1.5, help="Inverse temperature of sampling."),
    store: Path = typer.Option(None, help="Feature store for the clips' frame features."),
    device: str = typer.Option(None, help="Torch device."),
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Describe video files with a trained model (slots from its own classifiers, or from --slots)."""
    from deepfeat.tasks.text.decoding import Strategy
    from deepfeat.tasks.video_description import DescriptionModel, predict_slots, read_slots

    setup_logging(verbose)
    set_threads(threads)
    quiet_opencv()
    strategy = Strategy(beam=beam, samples=samples, temperature=temperature).validate()
    described = DescriptionModel.load(model, device)
    if slots is not None:
        preds = read_slots(slots).select(clips, "clips")
    else:
        own = described.meta.get("slot_models")
        if not own:
            raise ConfigError(
                f"{model} was trained on a slot file and holds no slot classifiers; "
                "give --slots FILE for the clips"
            )
        folder = model if model.is_dir() else model.parent
        classifiers = {s: folder / p for s, p in own.items()}
        preds = predict_slots(clips, clips, classifiers, store=store, device=device, progress=False)
        for vid, why in preds.failures:
            typer.echo(f"{vid}: cannot describe ({why})")
        if not preds.ids:
            raise typer.Exit(2)
    sentences = described.describe(preds, strategy)
    for i, (vid, words) in enumerate(zip(preds.ids, sentences)):
        seen = ", ".join(f"{s} {v}" for s, v in preds.label_names(i).items())
        typer.echo(f"{vid}: {' '.join(words)}   [{seen}]")
