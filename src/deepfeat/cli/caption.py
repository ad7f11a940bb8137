"""CLI: ``deepfeat caption train|evaluate|generate``: LRCN image description (thesis chapter 4.4).

Parses the options into the library's typed jobs (:mod:`deepfeat.tasks.captioning`), runs them and
prints; every number comes from the library.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from deepfeat.backbones import DEFAULT_BACKBONE
from deepfeat.cli.common import THREADS, VERBOSE, friendly, set_threads, setup_logging
from deepfeat.cli.parsing import OnBadImage, PreprocessName, ints, names
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.errors import ConfigError
from deepfeat.evaluation.job import ExtractionOptions
from deepfeat.fileio import check_output_dir
from deepfeat.report.tables import text_table
from deepfeat.tasks.captioning import (
    CaptionEvalJob,
    CaptionModel,
    CaptionTrainJob,
    FeatureSpec,
    SequenceOptions,
    Strategy,
    TrainingOptions,
    caption_images,
    evaluate,
    train,
    write_report,
)
from deepfeat.tasks.captioning.evaluate import empty_note
from deepfeat.tasks.captioning.report import generation_table, retrieval_table
from deepfeat.tasks.captioning.train import SMALL_EMBED, SMALL_HIDDEN
from deepfeat.tasks.text.metrics import FAMILIES

caption_app = typer.Typer(
    help="LRCN image description: train captioners, evaluate them (COCO metrics, retrieval, baselines), "
    "caption images.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


class Architecture(str, Enum):
    lrcn_1u = "lrcn_1u"
    lrcn_2u = "lrcn_2u"
    lrcn_2f = "lrcn_2f"


class Unit(str, Enum):
    lstm = "lstm"
    rnn = "rnn"


class Optimizer(str, Enum):
    adam = "adam"
    sgd = "sgd"


class Part(str, Enum):
    test = "test"
    val = "val"
    train = "train"
    all = "all"


_DATA = typer.Argument(
    ...,
    help="Captioned images: an image,caption CSV (or its folder), or COCO captions JSON files.",
)
_IMAGES = typer.Option(
    None, "--images", help="Folder of the images (default: found next to the caption file)."
)
_STORE = typer.Option(None, help="Feature store (default: the model's, or MODEL/store when training).")
_DEVICE = typer.Option(None, help="Torch device (default: cpu).")


def _extraction(batch_size, workers, on_bad_image, max_pixels, device) -> ExtractionOptions:
    return ExtractionOptions(
        batch_size=batch_size,
        workers=workers,
        on_bad_image=on_bad_image.value,
        max_pixels=max_pixels,
        device=device,
    )


def _strategies(
    beam: str | None, samples: str | None, temperature: str | None, min_length: int = 0
) -> list[Strategy]:
    out = [Strategy(beam=b, min_length=min_length) for b in ints(beam, "--beam", minimum=1)] if beam else []
    if samples:
        temps = [float(t) for t in names(temperature or "1.5", "--temperature")]
        out += [
            Strategy(samples=n, temperature=t, min_length=min_length)
            for n in ints(samples, "--samples", minimum=1)
            for t in temps
        ]
    if not out:
        raise ConfigError("no generation strategy: give --beam and/or --samples")
    for s in out:
        s.validate()
    return out


@caption_app.command("train")
@friendly
def train_command(
    data: list[str] = _DATA,
    out: Path = typer.Option(
        ..., "--out", "-o", help="Model folder (model.pt, checkpoint, split, training record)."
    ),
    images: Path = _IMAGES,
    split: Path = typer.Option(
        None, help="Split file (JSON: train, val, test image ids); default a seeded 80/10/10."
    ),
    split_seed: int = typer.Option(0, help="Seed of the default split."),
    arch: Architecture = typer.Option(Architecture.lrcn_2f, "--arch", help="Figure 4.4's architecture."),
    unit: Unit = typer.Option(Unit.lstm, help="Recurrent unit: lstm, or the vanilla rnn."),
    small: bool = typer.Option(
        False,
        "--small",
        help=f"CPU scale: hidden and embedding sizes {SMALL_HIDDEN} / {SMALL_EMBED} instead of 1000.",
    ),
    hidden: int = typer.Option(
        None, min=1, help="Hidden units per layer (default 1000, the thesis'; 256 with --small)."
    ),
    embed: int = typer.Option(None, min=1, help="Word embedding size (default 1000; 256 with --small)."),
    dropout: float = typer.Option(0.5, min=0.0, max=0.99, help="Dropout on embeddings and layer outputs."),
    min_count: int = typer.Option(5, min=1, help="Vocabulary: words seen at least this often in training."),
    max_length: int = typer.Option(20, min=1, help="Caption length limit in words (longer ones are cut)."),
    backbone: str = typer.Option(DEFAULT_BACKBONE, "--backbone", "-b", help="Backbone name."),
    weights: str = typer.Option(None, help="Weights file (default: the backbone's own)."),
    layer: str = typer.Option("pool", "--layer", "-l", help="Feature layer (average-pooled when spatial)."),
    preprocess: PreprocessName = typer.Option(PreprocessName.backbone, help="Input preprocessing."),
    finetune_from: str = typer.Option(
        None, help="Fine-tune the CNN stages above this layer with the LSTMs (e.g. stage6); default: frozen."
    ),
    epochs: int = typer.Option(30, min=1, help="Most epochs (early stopping on validation CIDEr-D)."),
    patience: int = typer.Option(3, min=1, help="Epochs without a better validation score before stopping."),
    batch: int = typer.Option(100, "--batch", min=1, help="Captions per training batch."),
    optimizer: Optimizer = typer.Option(Optimizer.adam, help="adam, or sgd with momentum 0.9."),
    lr: float = typer.Option(None, help="Learning rate (default 1e-3 for adam, 0.1 for sgd)."),
    clip: float = typer.Option(10.0, help="Clip the gradient's L2 norm to this."),
    val_images: int = typer.Option(None, min=1, help="At most this many validation images per epoch."),
    seed: int = typer.Option(0, min=0, help="Seed of initialisation, batch order and dropout."),
    store: Path = _STORE,
    batch_size: int = typer.Option(32, min=1, help="Images per forward pass (features)."),
    workers: int = typer.Option(2, min=0, help="Image decoding threads."),
    on_bad_image: OnBadImage = typer.Option(OnBadImage.skip, help="Skip undecodable images or stop."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1, help="Refuse images with more pixels."),
    device: str = _DEVICE,
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Train a captioner on DATA; a rerun with the same --out resumes after the last finished epoch."""
    setup_logging(verbose)
    set_threads(threads)
    sizes = {"hidden_size": SMALL_HIDDEN, "embed_size": SMALL_EMBED} if small else {}
    sizes |= {k: v for k, v in (("hidden_size", hidden), ("embed_size", embed)) if v is not None}
    job = CaptionTrainJob(
        data=data,
        images=images,
        out=out,
        split=split,
        split_seed=split_seed,
        features=FeatureSpec(
            backbone=backbone,
            weights=weights,
            layer=layer,
            preprocess=preprocess.value,
            finetune_from=finetune_from,
        ),
        sequence=SequenceOptions(
            architecture=arch.value,
            unit=unit.value,
            dropout=dropout,
            min_count=min_count,
            max_length=max_length,
            **sizes,
        ),
        training=TrainingOptions(
            epochs=epochs,
            batch_size=batch,
            optimizer=optimizer.value,
            learning_rate=lr,
            clip_norm=clip,
            patience=patience,
            seed=seed,
            device=device,
        ),
        extraction=_extraction(batch_size, workers, on_bad_image, max_pixels, device),
        store=store,
        val_images=val_images,
    )
    job.validate()
    check_output_dir(out, "--out")
    result = train(job, progress=True, echo=typer.echo)
    t = result.training
    typer.echo(
        f"best epoch {t.best_epoch} of {len(t.history)} (validation CIDEr-D {t.best_score:.3f}); "
        f"{t.seconds:.0f} s of training"
    )
    typer.echo(f"model: {Path(out) / 'model.pt'}")


@caption_app.command("evaluate")
@friendly
def evaluate_command(
    data: list[str] = _DATA,
    model: list[Path] = typer.Option(..., "--model", "-m", help="Model folder or file; repeat for several."),
    out: Path = typer.Option(
        Path("deepfeat-captions"), "--out", "-o", help="Output folder (results, report)."
    ),
    images: Path = _IMAGES,
    on: Part = typer.Option(Part.test, help="Which images: a part of the split, or all (other data)."),
    split: Path = typer.Option(None, help="Split file (default: the one saved with the first model)."),
    beam: str = typer.Option("1,3,5", help="Beam widths, comma-separated (1 = greedy); empty for none."),
    samples: str = typer.Option(
        "100", help="Sampling: numbers of samples N, comma-separated; empty for none."
    ),
    temperature: str = typer.Option("1.5", help="Sampling: inverse temperatures T, comma-separated."),
    min_length: int = typer.Option(
        0,
        min=0,
        help="Fewest words of a generated caption (0: the exact search; 1 rules out the empty caption).",
    ),
    metrics: str = typer.Option(",".join(FAMILIES), help="Metric families: bleu, cider_d, meteor, rouge_l."),
    retrieval: bool = typer.Option(True, "--retrieval/--no-retrieval", help="Rank images and captions."),
    baselines: bool = typer.Option(
        True, "--baselines/--no-baselines", help="Constant, nearest-neighbour, human."
    ),
    max_images: int = typer.Option(None, min=1, help="Evaluate on the first N images only."),
    examples: int = typer.Option(8, min=0, help="Example images in the report."),
    seed: int = typer.Option(0, min=0, help="Sampling seed."),
    store: Path = _STORE,
    batch_size: int = typer.Option(32, min=1, help="Images per forward pass (features)."),
    workers: int = typer.Option(2, min=0, help="Image decoding threads."),
    on_bad_image: OnBadImage = typer.Option(OnBadImage.skip, help="Skip undecodable images or stop."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1, help="Refuse images with more pixels."),
    device: str = _DEVICE,
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Evaluate captioners on DATA (metrics per model and strategy, retrieval, baselines): results.json,
    report.md."""
    setup_logging(verbose)
    set_threads(threads)
    job = CaptionEvalJob(
        data=data,
        images=images,
        models=list(model),
        on=on.value,
        split=split,
        strategies=_strategies(beam or None, samples or None, temperature, min_length),
        metrics=names(metrics, "--metrics"),
        retrieval=retrieval,
        baselines=baselines,
        store=store,
        extraction=_extraction(batch_size, workers, on_bad_image, max_pixels, device),
        max_images=max_images,
        examples=examples,
        seed=seed,
        device=device,
    )
    job.validate()
    check_output_dir(out, "--out")
    evaluation = evaluate(job, progress=True, echo=typer.echo)
    paths = write_report(evaluation, out, title=f"deepfeat captioning: {evaluation.about['data']}")
    header, rows = generation_table(evaluation)
    typer.echo("")
    typer.echo(text_table(rows, header))
    if evaluation.retrieval:
        header, rows = retrieval_table(evaluation)
        typer.echo(text_table(rows, header))
    typer.echo(f"results: {paths['results']}\nreport:  {paths['report']}")


@caption_app.command("generate")
@friendly
def generate_command(
    image: list[Path] = typer.Argument(..., help="Image files."),
    model: Path = typer.Option(..., "--model", "-m", help="Model folder or file."),
    beam: int = typer.Option(None, min=1, help="Beam width (default 5 unless --samples is given)."),
    samples: int = typer.Option(None, min=1, help="Best of N samples (the thesis: 100)."),
    temperature: float = typer.Option(1.5, help="Inverse temperature of the samples (the thesis: 1.5)."),
    min_length: int = typer.Option(
        0,
        min=0,
        help="Fewest words of a generated caption (0: the exact search; 1 rules out the empty caption).",
    ),
    seed: int = typer.Option(0, min=0, help="Sampling seed."),
    device: str = _DEVICE,
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Caption image files with a trained model."""
    setup_logging(verbose)
    set_threads(threads)
    if beam is not None and samples is not None:
        raise ConfigError("give --beam or --samples, not both")
    strategy = (
        Strategy(samples=samples, temperature=temperature, min_length=min_length)
        if samples
        else Strategy(beam=beam or 5, min_length=min_length)
    )
    strategy.validate()
    loaded = CaptionModel.load(model)
    ids, captions, log_probs, failures = caption_images(
        loaded, image, strategy, seed=seed, extraction=ExtractionOptions(device=device), echo=lambda _: None
    )
    for i, words, lp in zip(ids, captions, log_probs):
        typer.echo(f"{i}\t{' '.join(words) or '(empty)'}\t(log p {lp:.2f}, {strategy.name})")
    empty = sum(1 for words in captions if not words)
    if empty:
        typer.secho(empty_note(empty, len(captions)), err=True, fg=typer.colors.YELLOW)
    for path, reason in failures:
        typer.secho(f"skipped {path}: {reason}", err=True, fg=typer.colors.YELLOW)
