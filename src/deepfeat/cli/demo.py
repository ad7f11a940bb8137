"""CLI: the main job on the embedded default data (scikit-learn digits, bundled EfficientNet-Lite0)."""

from __future__ import annotations

from pathlib import Path

import typer

from deepfeat.backbones import DEFAULT_BACKBONE, load_backbone
from deepfeat.cli.common import friendly, set_threads, setup_logging
from deepfeat.cli.extract import summary
from deepfeat.data.datasets import digits_dataset
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import extract

DEMO_LAYERS = "stage4,stage6,head,pool"


@friendly
def demo_command(
    out: Path = typer.Option(Path("deepfeat-out"), "--out", "-o", help="Output folder (store and results)."),
    layers: str = typer.Option(DEMO_LAYERS, help="Layers to extract."),
    threads: int = typer.Option(None, help="Torch CPU threads."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Extract features of scikit-learn's digits with the bundled EfficientNet-Lite0 (offline)."""
    setup_logging(verbose)
    set_threads(threads)
    dataset = digits_dataset()
    typer.echo(dataset.summary())
    bb = load_backbone(DEFAULT_BACKBONE)
    result = extract(dataset, bb, [LayerActivations(layers, "avg")], store=out / "store", progress=True)
    typer.echo(summary(result))
