"""CLI: the main job on the embedded default data (scikit-learn digits, bundled EfficientNet-Lite0)."""

from __future__ import annotations

from pathlib import Path

import typer

from deepfeat.cli.common import friendly, set_threads, setup_logging
from deepfeat.cli.evaluate import JobOptions, run_job

DEMO_LAYERS = "stage4,stage6,stage7,pool"  # head averaged over space is pool


@friendly
def demo_command(
    out: Path = typer.Option(Path("deepfeat-out/demo"), "--out", "-o", help="Output folder."),
    layers: str = typer.Option(DEMO_LAYERS, help="Layers to compare."),
    splits: int = typer.Option(5, help="Number of seeded 30-per-class splits."),
    threads: int = typer.Option(None, help="Torch CPU threads."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Evaluate layer features of scikit-learn's digits (offline): 30 training images per class,
    linear SVM and logistic regression, layer by layer (DeCAF's Caltech-101 protocol)."""
    setup_logging(verbose)
    set_threads(threads)
    run_job(
        JobOptions(
            data="digits",
            layers=layers,
            pool="avg",
            probes="svm,logreg",
            protocol="kshot:30",
            splits=splits,
            out=out,
        )
    )
