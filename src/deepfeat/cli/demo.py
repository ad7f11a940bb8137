"""CLI: the main job on the embedded default data (scikit-learn digits, bundled EfficientNet-Lite0)."""

from __future__ import annotations

from pathlib import Path

import typer

from deepfeat.cli.common import THREADS, VERBOSE, friendly, set_threads, setup_logging
from deepfeat.cli.evaluate import run_and_report
from deepfeat.cli.parsing import names
from deepfeat.evaluation import ActivationsRecipe, EvaluationJob, KShot

DEMO_LAYERS = "stage4,stage6,stage7,pool"  # head averaged over space is pool


@friendly
def demo_command(
    out: Path = typer.Option(Path("deepfeat-out/demo"), "--out", "-o", help="Output folder."),
    layers: str = typer.Option(DEMO_LAYERS, help="Layers to compare."),
    splits: int = typer.Option(5, min=1, help="Number of seeded 30-per-class splits."),
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Evaluate layer features of scikit-learn's digits (offline): 30 training images per class,
    linear SVM and logistic regression, layer by layer (DeCAF's Caltech-101 protocol)."""
    setup_logging(verbose)
    set_threads(threads)
    job = EvaluationJob(
        "digits",
        recipe=ActivationsRecipe(names(layers, "--layers")),
        protocol=KShot(k=30, n_splits=splits),
        probes=["svm", "logreg"],
        out=out,
    )
    run_and_report(job)
