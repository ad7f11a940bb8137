"""InterActive layer table, structure reproduced on data we have (the poster's low/mid/high-level
tables): for several layers of EfficientNet-Lite0, the original extraction (ORIG: the whole image
warped to 224x224, no crop, as the poster's baseline; average and max pooling), the improved
extraction (IMPR: whole image, area about 512^2, aspect kept), and the activeness-weighted features at
the improved resolution for the ``next`` and ``last`` configurations with p = 1 and 2, in both
readings of how a neuron collects its connections' activeness (``weighted``, the default, and
``unweighted``: per-position weights; rows marked "u"); plus the concatenation of all the layers (the
poster's pool-1 .. fc-6 row). Every row is L2-normalised before the linear SVM.

Default data: hymenoptera with its fixed train/val split (linear SVM, C by cross-validation).
Writes experiments/results/interactive_layers/{summary.json,table.png} and the two evaluation
reports. Needs ../shared/datasets.

Usage: python experiments/interactive_layers.py [--data PATH] [--protocol fixed] [--layers ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from deepfeat.evaluation import (
    ActivationsRecipe,
    EvaluationJob,
    EvaluationResult,
    FixedSplit,
    InteractiveRecipe,
    KShot,
    run,
    write_report,
)
from deepfeat.report.writer import write_result

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "hymenoptera"
OUT = REPO / "experiments" / "results" / "interactive_layers"
ROWS = ["ORIG avg", "ORIG max", "IMPR avg", "IMPR max", "next p=1", "next p=2", "last p=1", "last p=2"]
KIND = {"avg": "avg", "max": "max", "next-p1": "next p=1", "next-p2": "next p=2", "last-p1": "last p=1"}
KIND["last-p2"] = "last p=2"


def table(result: EvaluationResult, prefix: str) -> dict:
    metric = result.primary_metric
    out = {}
    for row in result.summary():
        layer, _, kind = row["features"].partition("/")
        name = KIND.get(kind, kind)
        if name in ("avg", "max"):
            name = f"{prefix} {name}"
        out.setdefault(layer, {})[name] = {"mean": 100 * row[metric]["mean"], "std": 100 * row[metric]["std"]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--protocol", default="fixed")
    parser.add_argument("--splits", type=int, default=1)
    parser.add_argument("--layers", default="stage3,stage4,stage5,stage6,head")
    args = parser.parse_args(argv)
    if not Path(args.data).exists():
        print(f"{args.data} is absent; nothing to do")
        return 0
    layers = [x for x in args.layers.split(",") if x]
    protocol = (
        FixedSplit()
        if args.protocol == "fixed"
        else KShot(k=int(args.protocol.split(":")[1]), n_splits=args.splits)
    )
    common = {
        "protocol": protocol,
        "probes": ["svm"],
        "probe_params": {"normalize": True},
        "store": REPO / "experiments" / ".cache" / "store",
    }
    orig_job = EvaluationJob(
        args.data,
        recipe=ActivationsRecipe(layers, ["avg", "max"], concat=True),
        preprocess="warp",
        out=OUT / "orig",
        **common,
    )
    impr_job = EvaluationJob(
        args.data, recipe=InteractiveRecipe(layers, concat=True), out=OUT / "improved", **common
    )
    # the unweighted reading needs weight layers reading the layer: not the head (read by the pooling)
    readable = [layer for layer in layers if layer.startswith("stage")]
    unweighted_job = EvaluationJob(
        args.data,
        recipe=InteractiveRecipe(readable, collections=["unweighted"]),
        out=OUT / "unweighted",
        **common,
    )
    orig, impr, unweighted = run(orig_job), run(impr_job), run(unweighted_job)
    write_report(orig, OUT / "orig", title="InterActive ORIG rows (whole image warped to 224x224)")
    write_report(impr, OUT / "improved", title="InterActive IMPR rows (weighted collection)")
    write_report(unweighted, OUT / "unweighted", title="InterActive IMPR rows (unweighted collection)")
    rows = table(orig, "ORIG")
    for result in (impr, unweighted):
        for layer, values in table(result, "IMPR").items():
            rows.setdefault(layer, {}).update(values)
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {
        "data": args.data,
        "protocol": args.protocol,
        "metric": "mean per-class accuracy (%)",
        "orig": "whole image warped to 224x224 (no crop)",
        "normalisation": "every row L2-normalised per image before the linear SVM",
        "rows marked u": "unweighted collection (per-position weights); not defined for head",
        "table": rows,
    }
    write_result(OUT, "summary", summary, kind="experiment")
    layers = list(rows)
    fig, ax = plt.subplots(figsize=(1.6 * len(layers) + 3, 4.5))
    width = 0.8 / len(ROWS)
    for i, name in enumerate(ROWS):
        means = [rows[layer].get(name, {}).get("mean", float("nan")) for layer in layers]
        ax.bar([j + i * width for j in range(len(layers))], means, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))], layers)
    ax.set_ylabel("mean per-class accuracy (%)")
    finite = [v["mean"] for r in rows.values() for v in r.values()]
    ax.set_ylim(max(0.0, min(finite) - 5), 100)
    ax.legend(fontsize=7, ncol=4)
    ax.set_title(f"InterActive rows per layer, EfficientNet-Lite0, {Path(args.data).name}")
    fig.tight_layout()
    fig.savefig(OUT / "table.png", dpi=100)
    print(f"{'layer':8s} " + " ".join(f"{r:>9s}" for r in ROWS))
    for layer in layers:
        print(
            f"{layer:8s} "
            + " ".join(f"{rows[layer].get(r, {}).get('mean', float('nan')):9.2f}" for r in ROWS)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
