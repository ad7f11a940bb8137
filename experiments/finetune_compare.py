"""Agrawal's main fine-tuning comparison on data we have: fine-tuning all layers (FT) vs the
classifier-side layers only (FC-FT) of EfficientNet-Lite0 — validation accuracy and training time — and
how the filter entropy of each layer changes after fine-tuning (percent decrease of MCAuE at 0.1, 0.25,
0.5 and 1.0 of the filters, the report's Table 2.1), measured on the validation images.

Default data: hymenoptera (train/val folders). Writes experiments/results/finetune_compare/
{summary.json, mcaue_<layer>.png, history_*.json}. Needs ../shared/datasets.

Usage: python experiments/finetune_compare.py [--epochs 6] [--data PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from deepfeat.analysis import layer_entropy, percent_decrease_table, plot_mcaue_curves
from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import open_dataset
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import extract
from deepfeat.report.writer import write_result
from deepfeat.training.finetune import FineTuner

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "hymenoptera"
OUT = REPO / "experiments" / "results" / "finetune_compare"
LAYERS = ["stage5", "stage6", "head", "pool"]


def entropy_of(backbone, dataset, rows) -> dict[str, dict[str, np.ndarray]]:
    """AuE per layer and method on the given rows (validation images)."""
    result = extract(dataset, backbone, [LayerActivations(LAYERS, "unroll")], progress=False)
    out = {}
    for key, fs in result.features.items():
        layer = key.split("/")[0]
        keep = np.isin(fs.rows, rows)
        X = np.asarray(fs.features)[keep]
        methods = ("label", "spmax") + (("weighted",) if X.min() >= 0 else ())
        shape = fs.layer_shape if fs.layer_shape is not None and len(fs.layer_shape) == 3 else None
        curves = layer_entropy(X, fs.targets[keep], methods=methods, layer_shape=shape)
        out[layer] = {m: c.aue for m, c in curves.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=None)
    args = parser.parse_args(argv)
    if not Path(args.data).exists():
        print(f"{args.data} is absent; nothing to do")
        return 0
    dataset = open_dataset(args.data)
    split = np.char.lower(dataset.splits.astype(str))
    val_rows = np.flatnonzero(np.isin(split, ["val", "test"]))
    base = load_backbone("efficientnet_lite0")
    aue = {"pretrained": entropy_of(base, dataset, val_rows)}
    runs = {}
    for scope in ("fc", "ft"):
        start = time.perf_counter()
        tuner = FineTuner(scope=scope, epochs=args.epochs, lr=args.lr, out=OUT / f"checkpoints-{scope}").fit(
            dataset
        )
        runs[scope] = {
            "val_accuracy": tuner.val_accuracy_,
            "trainable_parameters": tuner.n_trainable_,
            "train_seconds": sum(h["seconds"] for h in tuner.history_),
            "wall_seconds": time.perf_counter() - start,
            "history": tuner.history_,
        }
        aue[scope] = entropy_of(tuner.backbone_, dataset, val_rows)
        print(
            f"{scope}: val {100 * tuner.val_accuracy_:.2f}%, {runs[scope]['train_seconds']:.0f} s of training"
        )
    decrease = {net: percent_decrease_table(aue["pretrained"], aue[net]) for net in ("fc", "ft")}
    OUT.mkdir(parents=True, exist_ok=True)
    for layer in LAYERS:
        curves = {net: aue[net][layer]["label"] for net in aue}
        plot_mcaue_curves({layer: curves}, OUT / f"mcaue_{layer}.png", title=f"MCAuE (label), {layer}")
    summary = {
        "data": args.data,
        "epochs": args.epochs,
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in runs.items()},
        "histories": {k: v["history"] for k, v in runs.items()},
        "mcaue_percent_decrease_after_finetuning": decrease,
        "note": "positive = entropy decreased (filters became more class-specific), on the validation images",
    }
    write_result(OUT, "summary", summary, kind="experiment")
    print(json.dumps(summary["runs"], indent=1))
    print(json.dumps(decrease, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
