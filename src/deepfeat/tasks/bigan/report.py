"""Files of ``deepfeat bigan evaluate``: ``results.json`` (the shared writer's layout, kind
``"bigan"``), ``report.md`` (1-NN table, reconstruction error, sample grid, reconstructions, loss
curves) and the loss-curve PNG, written into the run's folder."""

from __future__ import annotations

import os
from pathlib import Path

from deepfeat.report import plots
from deepfeat.report.document import Report
from deepfeat.report.writer import write_result
from deepfeat.tasks.bigan.evaluation import BiganEvaluation


def plot_losses(history: list[dict], path: Path, title: str = "") -> Path:
    """Mean loss per epoch, one line per loss (D, G, E or AE)."""
    fig, ax = plots.figure((6.0, 3.8))
    names = list(dict.fromkeys(k for h in history for k in h.get("losses", {})))
    for name, colour in zip(names, plots.colours(len(names))):
        points = [
            (h["epoch"], h["losses"][name]) for h in history if h.get("losses", {}).get(name) is not None
        ]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=name, color=colour)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean loss over the epoch")
    ax.grid(alpha=0.3)
    if names:
        ax.legend(fontsize=8)
    return plots.save(fig, path, title)


def build_report(evaluation: BiganEvaluation, title: str) -> Report:
    run = evaluation.run
    opts = run["options"]
    doc = Report(title)
    doc.facts(
        {
            "run": run["checkpoint"],
            "method / architecture": f"{run['method']} / {run['arch']}",
            "epochs trained": f"{run['epochs']} of {opts['epochs']} (batch {opts['batch_size']}, "
            f"Adam lr {opts['lr']:g}, beta1 {opts['beta1']}, decay {opts['decay']})",
            "latent prior": f"U(-1, 1)^{opts['latent_dim']}",
            "objective": "inverted (labels swapped) for G and E" if opts["inverted"] else "minimax",
            "updates": "simultaneous D, G, E" if opts["simultaneous"] else "alternating D then G/E",
            "features from": run["network"],
            "1-NN data": run["evaluation_data"],
        }
    )
    if evaluation.nearest_neighbor:
        doc.heading("1-nearest-neighbour accuracy")
        doc.table(*evaluation.table())
    rec = evaluation.reconstruction
    if rec:
        doc.heading("Reconstruction G(E(x))")
        doc.table(
            ["mean l2 error", "random pairing", "ratio", "images"],
            [[f"{rec['error']:.4f}", f"{rec['random_pairing']:.4f}", f"{rec['ratio']:.3f}", rec["n_images"]]],
        )
        doc.text(
            "The random pairing measures each reconstruction against another image: an encoder that "
            f"ignored its input would score a ratio near 1. Pixels in {rec['pixel_range']}."
        )
    if "samples" in evaluation.samples:
        doc.heading("Samples G(z)").image(evaluation.samples["samples"], "generator samples")
    if "reconstructions" in evaluation.samples:
        doc.heading("Reconstructions").image(
            evaluation.samples["reconstructions"], "real images (odd rows) and G(E(x)) (even rows)"
        )
    if evaluation.history:
        doc.heading("Losses").image("losses.png", "mean losses per epoch")
        seconds = sum(h.get("seconds", 0.0) for h in evaluation.history)
        doc.text(f"{len(evaluation.history)} epochs, {seconds:.0f} s of training steps.")
    doc.text("Every number above is in `results.json`.")
    return doc


def write_report(
    evaluation: BiganEvaluation, out: str | os.PathLike, *, title: str | None = None
) -> dict[str, Path]:
    """Write results.json, report.md and losses.png into ``out``; returns their paths."""
    out = Path(out)
    drawings = {}
    if evaluation.history:
        drawings["losses"] = lambda p: plot_losses(evaluation.history, p, "BiGAN training losses")
    paths = write_result(
        out,
        "results",
        evaluation.to_dict(),
        kind="bigan",
        provenance=evaluation.provenance,
        plots=drawings,
        plot_prefix="",
        device=evaluation.provenance.get("device"),
    )
    paths["results"] = paths.pop("json")
    title = title or f"deepfeat bigan: {evaluation.run['method']} ({evaluation.run['arch']})"
    paths["report"] = build_report(evaluation, title).write(out / "report.md")
    return paths
