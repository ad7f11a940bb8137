"""CLI: InterActive heatmaps (sum over channels of the neuron weights gamma) overlaid on an image."""

from __future__ import annotations

from pathlib import Path

import typer

from deepfeat.analysis.heatmaps import write_heatmaps
from deepfeat.backbones import DEFAULT_BACKBONE
from deepfeat.cli.common import THREADS, friendly, set_threads
from deepfeat.cli.parsing import PreprocessName, names
from deepfeat.features.activeness import COLLECTIONS, CONFIGS
from deepfeat.validation import check_choice


@friendly
def heatmap_command(
    image: Path = typer.Argument(..., help="An image file."),
    layer: str = typer.Option("stage4,stage6,head", "--layer", "-l", help="Comma-separated spatial layers."),
    config: str = typer.Option("last", help="'last' or 'next'."),
    p: int = typer.Option(2, "--p", min=1, max=2, help="Norm of the score function: 1 or 2."),
    top: str = typer.Option(
        None,
        help="Top layer of the 'last' configuration (default: the one before the logits; needed for "
        "backbones without logits, such as a BiGAN encoder).",
    ),
    collect: str = typer.Option(
        "weighted", help="How a neuron collects its connections' activeness: weighted or unweighted."
    ),
    backbone: str = typer.Option(
        DEFAULT_BACKBONE, "--backbone", "-b", help="Backbone name (deepfeat backbones)."
    ),
    weights: str = typer.Option(None, help="Weights file (default: the backbone's own)."),
    preprocess: PreprocessName = typer.Option(PreprocessName.interactive, help="Input preprocessing."),
    out: Path = typer.Option(Path("heatmaps"), "--out", "-o", help="Output folder."),
    threads: int = THREADS,
) -> None:
    """InterActive heatmaps: sum over channels of the neuron weights, over the image, one PNG per layer."""
    set_threads(threads)
    check_choice("activeness configuration", config, CONFIGS)
    check_choice("--collect", collect, COLLECTIONS)
    paths = write_heatmaps(
        image,
        names(layer, "--layer"),
        out,
        config=config,
        p=p,
        backbone=backbone,
        weights=weights,
        preprocess=preprocess.value,
        top=top,
        collect=collect,
    )
    for path in paths:
        typer.echo(str(path))
