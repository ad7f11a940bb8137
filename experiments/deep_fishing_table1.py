"""Deep Fishing Table 1, structure reproduced on data we have: forward features x_{k-1}, y_k and their
concatenation vs the gradient dE/dW_k (factored, trace kernel), on the same splits and with the same
kernel SVM, for EfficientNet-Lite0's classifier (``logits``: a fully connected layer, like the paper's
fc8) and head (``head``: a 1x1 convolution over 7x7 positions).

Datasets: hymenoptera (its fixed train/val split) and PACS photo (30 images per class, 5 seeded
splits). Writes experiments/results/deep_fishing_table1/<dataset>/{results.json,report.md,*.png}
and a summary JSON. Needs ../shared/datasets.

Usage: python experiments/deep_fishing_table1.py [--datasets hymenoptera,pacs]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deepfeat.evaluation import EvaluationJob, FixedSplit, GradientRecipe, KShot, run, write_report
from deepfeat.report.writer import write_result

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets"
OUT = REPO / "experiments" / "results" / "deep_fishing_table1"

SETTINGS = {
    "hymenoptera": {"data": DATA / "hymenoptera", "layers": ["head", "logits"], "protocol": FixedSplit()},
    "pacs": {"data": DATA / "pacs" / "photo", "layers": ["logits"], "protocol": KShot(k=30, n_splits=5)},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="hymenoptera,pacs")
    args = parser.parse_args(argv)
    summary = {}
    for name in args.datasets.split(","):
        s = SETTINGS[name]
        if not s["data"].exists():
            print(f"skipping {name}: {s['data']} is absent")
            continue
        out = OUT / name
        job = EvaluationJob(
            s["data"],
            recipe=GradientRecipe(s["layers"]),
            protocol=s["protocol"],
            probes=["ksvm"],
            out=out,
            store=REPO / "experiments" / ".cache" / "store",
        )
        result = run(job)
        write_report(result, out, title=f"Deep Fishing Table 1 rows: {name}")
        metric = result.primary_metric
        summary[name] = {
            row["features"]: {"mean": 100 * row[metric]["mean"], "std": 100 * row[metric]["std"]}
            for row in result.summary()
        }
        summary[name]["metric"] = metric
    OUT.mkdir(parents=True, exist_ok=True)
    write_result(OUT, "summary", summary, kind="experiment")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
