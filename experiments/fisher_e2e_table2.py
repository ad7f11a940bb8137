"""The structure of Wieschollek et al.'s Table 2 on data we have: per-class AP of a one-vs-rest linear
SVM on Fisher vectors of conv descriptors, before and after end-to-end training of the GMM parameters
with the SVM's signal sent back (-y*theta, the paper's choice, and the true hinge sub-gradient).

Data: PACS photo (7 classes, scored one-vs-rest as multi-label AP as on VOC): 8 training and 60 test
images per class by default (--train-per-class), seeded. Descriptors: EfficientNet-Lite0 stage6 maps
(192 dims at 7x7 positions),
PCA to 64 dims fitted on the training descriptors, K = 32. Writes
experiments/results/fisher_e2e_table2/summary.json. Needs ../shared/datasets.

Usage: python experiments/fisher_e2e_table2.py [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import open_dataset
from deepfeat.features.activations import LayerActivations
from deepfeat.features.fisher import DescriptorPCA, conv_descriptors
from deepfeat.features.pipeline import extract
from deepfeat.report.writer import write_result
from deepfeat.training.fisher_e2e import train_fisher_e2e

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "pacs" / "photo"
OUT = REPO / "experiments" / "results" / "fisher_e2e_table2"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=8)
    parser.add_argument("--test-per-class", type=int, default=60)
    parser.add_argument(
        "--lr", type=float, default=1.0, help="SGD rate (the paper: 1e-4; too small to move here)"
    )
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"{DATA} is absent; nothing to do")
        return 0
    dataset = open_dataset(str(DATA))
    result = extract(
        dataset,
        load_backbone("efficientnet_lite0"),
        [LayerActivations("stage6", "unroll")],
        store=REPO / "experiments" / ".cache" / "store",
    )
    fs = result["stage6"]
    rng = np.random.default_rng(0)
    train, test = [], []
    for c in range(len(fs.classes)):
        rows = rng.permutation(np.flatnonzero(fs.targets == c))
        train.extend(rows[: args.train_per_class])
        test.extend(rows[args.train_per_class : args.train_per_class + args.test_per_class])
    train, test = np.sort(train), np.sort(test)
    X = torch.from_numpy(np.asarray(fs.features))
    desc = conv_descriptors(X, layer_shape=fs.layer_shape)  # (n, positions, channels)
    pca = DescriptorPCA(64).fit(desc[train].reshape(-1, desc.shape[-1]).double())
    reduced = (
        pca.transform(desc.reshape(-1, desc.shape[-1]).double()).reshape(len(desc), desc.shape[1], -1).float()
    )
    Y = np.eye(len(fs.classes), dtype=np.int64)[fs.targets]
    summary = {
        "data": str(DATA),
        "classes": fs.classes,
        "n_train": len(train),
        "n_test": len(test),
        "runs": {},
    }
    for gradient in ("paper", "hinge"):
        res = train_fisher_e2e(
            reduced[train].numpy(),
            Y[train],
            eval_set=(reduced[test].numpy(), Y[test]),
            gradient=gradient,
            epochs=args.epochs,
            lr=args.lr,
            n_components=32,
            random_state=0,
        )
        summary["runs"][gradient] = res
        print(json.dumps({k: v for k, v in res.items() if k != "history"}, indent=1, default=str)[:1500])
    OUT.mkdir(parents=True, exist_ok=True)
    write_result(OUT, "summary", summary, kind="experiment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
