"""Table 4.1 of the thesis (LRCN activity recognition) on data we have: moving MNIST digits.

The thesis' rows (single frame / LRCN) x columns (RGB, flow, fused 1/2-1/2 and 1/3-2/3), measured as
accuracy per video on a moving-digit set made from real MNIST digits (class = digit x motion; every
motion has a time-reversed twin, so that no single frame can tell the class) and written as real
MP4 files, read back through deepfeat's video reader. Frame features: EfficientNet-Lite0 (bundled
ImageNet weights, frozen), frames warped whole to ``--input-size`` (64: the frames' own size), and by
default the whole map of ``stage5`` (112 x 4 x 4 at stride 16), so that the LSTM's input weights play
fc6's part (a linear map of where and what) and a digit's position is visible in 16-pixel cells; a
2 x 2 grid of ``head`` (32-pixel cells) left RGB LRCN no better than a single frame in a first run
(see the README). Hyperparameters are fixed a priori (the thesis' clip length, stride, batch and
dropout; Adam), never tuned on the test videos.

Beyond Table 4.1, every row is also scored on the "pair" of the class (digit and motion up to its
direction): a single-frame model should know the pair and not the direction, which is what the
temporal model adds.

Writes experiments/results/lrcn_activity_table/{summary.json, results.json, report.md, confusion.png,
per_class.png}; the videos, feature store and models go to
experiments/.cache/lrcn_activity_table_c<clips per class> (reused by a rerun, which resumes). The
first runs used 12 clips per class (8 training videos): too few for any model (README). Needs
../shared/datasets/mnist/mnist.npz (or --mnist).

Usage: python experiments/lrcn_activity_table.py [--epochs 25] [--clips-per-class 40]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deepfeat.report.writer import write_result
from deepfeat.tasks.video import (
    EvaluateJob,
    FrameFeatures,
    MovingDigits,
    TrainJob,
    TrainOptions,
    evaluate,
    make_moving_digits,
    train,
    write_report,
)
from deepfeat.tasks.video.moving_digits import MOTIONS

REPO = Path(__file__).resolve().parents[1]
#: ../shared/datasets beside the checkout (or beside the folder holding it, for git worktrees)
MNIST = next(
    (
        p / "shared" / "datasets" / "mnist" / "mnist.npz"
        for p in REPO.parents
        if (p / "shared" / "datasets").is_dir()
    ),
    REPO.parent / "shared" / "datasets" / "mnist" / "mnist.npz",
)
OUT = REPO / "experiments" / "results" / "lrcn_activity_table"
#: videos, store and models of one set size: .cache/lrcn_activity_table_c<clips per class>
WORK = REPO / "experiments" / ".cache"

#: Table 4.1 (UCF-101, average over the three splits), for comparison
THESIS = {
    "Single frame": {"RGB": 67.37, "Flow": 74.37, "1/2, 1/2": 75.46, "1/3, 2/3": 78.94},
    "LRCN": {"RGB": 68.20, "Flow": 77.28, "1/2, 1/2": 80.90, "1/3, 2/3": 82.34},
}
PAIR = {"left": "lr", "right": "lr", "up": "ud", "down": "ud", "zoom-in": "zoom", "zoom-out": "zoom"}
PAIR |= {"rotate-cw": "rot", "rotate-ccw": "rot"}


def pair_accuracy(probs: np.ndarray, targets: np.ndarray, classes: list[str]) -> float:
    """Share of videos whose predicted class has the right digit and motion pair (any direction)."""
    key = [(c.split("-", 1)[0], PAIR[c.split("-", 1)[1]]) for c in classes]
    pred = probs.argmax(1)
    return float(np.mean([key[p] == key[t] for p, t in zip(pred, targets)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=str(MNIST))
    parser.add_argument("--digits", default="0,1,2")
    parser.add_argument("--motions", default=",".join(MOTIONS))
    parser.add_argument("--clips-per-class", type=int, default=40)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--hidden", type=int, default=256, help="LSTM units for both streams")
    parser.add_argument("--layer", default="stage5")
    parser.add_argument("--grid", type=int, default=0, help="0: the whole map")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=None, help="default: experiments/.cache/lrcn_activity_table_c<N>")
    args = parser.parse_args(argv)
    if not Path(args.mnist).exists():
        print(f"{args.mnist} is absent; nothing to do")
        return 0
    torch.set_num_threads(args.threads)
    work = Path(args.work or WORK / f"lrcn_activity_table_c{args.clips_per_class}")
    load_start = [round(v, 2) for v in os.getloadavg()]
    t0 = time.perf_counter()
    spec = MovingDigits(
        digits=tuple(int(d) for d in args.digits.split(",")),
        motions=tuple(args.motions.split(",")),
        clips_per_class=args.clips_per_class,
        frames=args.frames,
        seed=0,
    )
    record = make_moving_digits(work / "videos", spec, args.mnist)
    features = FrameFeatures(layer=args.layer, grid=args.grid, input_size=args.input_size, batch_size=64)
    runs = {}
    for model in ("single", "lrcn"):
        for stream in ("rgb", "flow"):
            opts = TrainOptions(model=model, stream=stream, hidden=args.hidden, epochs=args.epochs, seed=0)
            start = time.perf_counter()
            res = train(
                TrainJob(
                    work / "videos", opts, features, store=work / "store", out=work / f"{model}-{stream}"
                ),
                echo=print,
            )
            runs[f"{model}/{stream}"] = {
                "seconds": time.perf_counter() - start,
                "final_loss": res.history[-1]["loss"],
                "final_train_clip_accuracy": res.history[-1]["clip_accuracy"],
                "history": res.history,
                "n_train_videos": res.n_videos,
                "failed_videos": res.failed_videos,
            }
    result = evaluate(
        EvaluateJob(
            work / "videos",
            [work / f"{m}-{s}" for m in ("single", "lrcn") for s in ("rgb", "flow")],
            store=work / "store",
        ),
        echo=print,
    )
    paths = write_report(result, OUT, title="LRCN activity recognition on moving MNIST digits (Table 4.1)")
    header, rows = result.table()
    table = {r[0]: dict(zip(header[1:], (float(v) for v in r[1:]))) for r in rows}
    pairs = {k: pair_accuracy(v, result.targets, result.classes) for k, v in result.probs.items()}
    fused = {k: max(table[k][c] for c in header[3:]) for k in table}
    checks = {
        "lrcn_beats_single_rgb_by_points": table["LRCN"]["RGB"] - table["Single frame"]["RGB"],
        "lrcn_beats_single_flow_by_points": table["LRCN"]["Flow"] - table["Single frame"]["Flow"],
        "lrcn_best_fusion_minus_better_stream": fused["LRCN"]
        - max(table["LRCN"]["RGB"], table["LRCN"]["Flow"]),
        "single_best_fusion_minus_better_stream": fused["Single frame"]
        - max(table["Single frame"]["RGB"], table["Single frame"]["Flow"]),
    }
    verdicts = {
        "LRCN beats the single-frame baseline by >= 10 points on RGB": checks[
            "lrcn_beats_single_rgb_by_points"
        ]
        >= 10,
        "LRCN beats the single-frame baseline by >= 10 points on flow": checks[
            "lrcn_beats_single_flow_by_points"
        ]
        >= 10,
        "LRCN: the best fusion is at least as good as the better stream": checks[
            "lrcn_best_fusion_minus_better_stream"
        ]
        >= 0,
        "single frame: the best fusion is at least as good as the better stream": checks[
            "single_best_fusion_minus_better_stream"
        ]
        >= 0,
    }
    summary = {
        "what": "Table 4.1 rows on moving MNIST digits: accuracy per video (%) on the test videos",
        "data": {
            "videos": str(work / "videos"),
            "settings": record["settings"],
            "n_classes": len(record["classes"]),
            "n_train_videos": record["n_train"],
            "n_test_videos": record["n_test"],
            "n_scored": len(result.video_ids),
        },
        "features": {**features.to_dict(), "backbone_weights": "bundled ImageNet EfficientNet-Lite0, frozen"},
        "training": {"epochs": args.epochs, "hidden": args.hidden, "optimizer": "adam 1e-3", "batch": 24},
        "table_header": header,
        "table": table,
        "thesis_table_ucf101": THESIS,
        "pair_accuracy_percent": {k: 100 * v for k, v in pairs.items()},
        "checks": checks,
        "verdicts": verdicts,
        "runs": runs,
        "seconds": time.perf_counter() - t0,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_start": load_start,
            "load_average_end": [round(v, 2) for v in os.getloadavg()],
            "note": "load averages as found (this run's own processes count); times are not benchmarks",
        },
        "files": {k: str(v.relative_to(REPO)) for k, v in paths.items()},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    write_result(OUT, "summary", summary, kind="experiment")
    print(
        json.dumps(
            {"table": table, "pair_accuracy": summary["pair_accuracy_percent"], "verdicts": verdicts},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
