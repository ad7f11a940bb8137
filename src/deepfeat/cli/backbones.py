"""CLI: list backbones, list a backbone's layers, predict ImageNet classes for images."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from deepfeat.backbones import list_backbones, load_backbone
from deepfeat.cli.common import friendly
from deepfeat.data.images import load_image
from deepfeat.errors import ConfigError
from deepfeat.report.tables import text_table


@friendly
def backbones_command() -> None:
    """List the backbones deepfeat can load."""
    typer.echo(text_table(list(list_backbones().items()), ["backbone", "weights"]))


@friendly
def layers_command(
    backbone: str = typer.Argument(
        ..., help="Backbone name, e.g. efficientnet_lite0, alexnet, timm:resnet18."
    ),
    weights: str = typer.Option(None, help="Weights file (default: the backbone's own)."),
) -> None:
    """List the layers of a backbone: name, kind, channels, stride."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weights warnings do not matter for a listing
        bb = load_backbone(
            backbone, weights=weights or ("random" if backbone != "efficientnet_lite0" else None)
        )
    rows = [
        (x.name, x.kind, x.channels, x.stride, x.module or f"softmax({x.derived_from})") for x in bb.catalog
    ]
    typer.echo(text_table(rows, ["layer", "kind", "channels", "stride", "module"]))


@friendly
def predict_command(
    images: list[Path] = typer.Argument(..., help="Image files."),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone with an ImageNet classifier."),
    weights: str = typer.Option(None, help="Weights file (default: the backbone's own)."),
    top: int = typer.Option(5, help="Number of classes to show per image."),
) -> None:
    """ImageNet predictions of a backbone for image files (a quick check of its weights)."""
    bb = load_backbone(backbone, weights=weights)
    names = bb.class_names
    if names is None:
        raise ConfigError(f"{backbone}: no ImageNet class names for these weights (random or custom)")
    for path in images:
        x = bb.preprocess.to_batch([bb.preprocess(load_image(path, draft=bb.preprocess.draft_size))])
        prob = bb.predict(x)[0]
        values, indices = prob.topk(min(top, len(prob)))
        typer.echo(f"{path}:")
        for v, i in zip(values.tolist(), indices.tolist()):
            typer.echo(f"  {v:6.3f}  {names[i]}")
