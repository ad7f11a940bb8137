"""CLI: fine-tune a backbone on a labelled image folder, all layers (ft) or classifier-side layers (fc)."""

from __future__ import annotations

from pathlib import Path

import typer

from deepfeat.backbones import DEFAULT_BACKBONE
from deepfeat.cli.common import friendly, set_threads, setup_logging
from deepfeat.data.datasets import open_dataset
from deepfeat.training.finetune import FineTuner


@friendly
def finetune_command(
    data: str = typer.Argument(
        ..., help="A class-per-folder tree (train/val split folders are used), or a manifest."
    ),
    backbone: str = typer.Option(DEFAULT_BACKBONE, "--backbone", "-b", help="Backbone name."),
    weights: str = typer.Option(None, help="Weights file to start from (default: the backbone's own)."),
    scope: str = typer.Option(
        "fc",
        help="'ft' (all layers), 'fc' (classifier-side layers only) or 'frozen:LAYER' (the layers after "
        "LAYER trained from a fresh initialisation, the rest kept).",
    ),
    epochs: int = typer.Option(10, help="Passes over the training images."),
    lr: float = typer.Option(None, help="Learning rate (default 0.001: a tenth of the base rate 0.01)."),
    step_size: int = typer.Option(None, help="Epochs between x0.1 learning-rate decays (default: half)."),
    batch_size: int = typer.Option(32, help="Images per SGD step."),
    train_bn: bool = typer.Option(False, help="Update BatchNorm statistics while training."),
    seed: int = typer.Option(0, help="Seed of the new output layer, shuffling, flips and split."),
    out: Path = typer.Option(Path("deepfeat-finetune"), "--out", "-o", help="Checkpoints and history."),
    threads: int = typer.Option(None, help="Torch CPU threads."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Fine-tune with a new output layer; checkpoints every epoch (rerun the command to resume).

    The checkpoints load as backbones: --backbone NAME --weights OUT/last.pt in every other command.
    """
    setup_logging(verbose)
    set_threads(threads)
    dataset = open_dataset(data)
    typer.echo(dataset.summary())
    tuner = FineTuner(
        backbone=backbone,
        weights=weights,
        scope=scope,
        epochs=epochs,
        lr=lr,
        step_size=step_size,
        batch_size=batch_size,
        train_bn=train_bn,
        out=out,
        random_state=seed,
    ).fit(dataset)
    for path, reason in tuner.skipped_:
        typer.echo(f"skipped {path}: {reason}")
    total = sum(h["seconds"] for h in tuner.history_)
    typer.echo(
        f"{scope}: {tuner.n_trainable_} trainable parameters, val accuracy {100 * tuner.val_accuracy_:.2f}% "
        f"after {len(tuner.history_)} epochs ({total:.0f} s of training)"
    )
    typer.echo(f"checkpoints: {out}/last.pt (use --backbone {backbone} --weights {out}/last.pt)")
