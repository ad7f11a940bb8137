"""R-CNN ablation rows of the thesis (Table 3.2, VOC 2007 test) on the data we have: voc07_5class
(train on trainval, test on test) and, once, coco_mini (train on its 80 train2017 images, test on its
79 val2017 images).

Rows (EfficientNet-Lite0, bundled ImageNet weights; each row scored without and with box regression,
the thesis' "R-CNN" and "R-CNN BB"):

- warped regions (R-CNN), SVM features from three layers without fine-tuning: ``stage6/avg``,
  ``stage7/grid3`` (the pool5-like map, average-pooled to 3 x 3 and unrolled) and ``pool`` (global
  average of the 1280-channel head: the counterpart of fc7);
- warped regions after fine-tuning the top of the network (``--finetune-iterations``; CPU: the last
  stage and the head only);
- shared-map regions (extension: one forward pass per image, RoI-aligned from the map):
  ``head/avg`` and ``stage7/grid3``.

Box regression always reads ``stage7/grid3`` (the pool5-like map of the same region mode). Region
features of every layer come from one pass per region mode and are reused by every row through the
store. Proposals: selective search "fast" at width 500 (thesis), the first ``--budget`` boxes per image.

Writes experiments/results/rcnn_table/{summary.json, map_by_row.png}; the store and models live in
experiments/.cache/rcnn/. Needs ../shared/datasets. Every number is taken on the shared 2-core
machine under whatever load it had (recorded); the image counts and budgets are in the JSON.

Usage: python experiments/rcnn_table.py [--train-images 572] [--test-images 382] [--budget 300]
         [--warp-budget 100] [--finetune-iterations 0] [--rows ...] [--coco]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from deepfeat import tune_allocator
from deepfeat.backbones import load_backbone
from deepfeat.data.detection import open_detection
from deepfeat.report import plots
from deepfeat.report.writer import write_result
from deepfeat.tasks import detection as det
from deepfeat.tasks.detection.extract import RegionSet, extract_regions
from deepfeat.tasks.detection.regions import RegionEncoder, parse_output

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DEEPFEAT_DATASETS", REPO.parent / "shared" / "datasets"))
OUT = REPO / "experiments" / "results" / "rcnn_table"
CACHE = REPO / "experiments" / ".cache" / "rcnn"
BBOX = "stage7/grid3"
ROWS = {
    "warp stage6/avg": ("warp", "stage6/avg", 0),
    "warp stage7/grid3": ("warp", "stage7/grid3", 0),
    "warp pool": ("warp", "pool", 0),
    "warp FT pool": ("warp", "pool", 1),
    "shared head/avg": ("shared", "head/avg", 0),
    "shared stage7/grid3": ("shared", "stage7/grid3", 0),
}


def subset(ds, n):
    """The first ``n`` images in the split's listed order (all when n is None or larger); VOC ids are
    not ordered by content, and a prefix lets every smaller run reuse the cached proposals."""
    if n is None or n >= len(ds):
        return ds
    return ds.subset(range(n))


def warm(ds, mode, outputs, budget, region, store, with_gt, batch_size) -> dict:
    """Every output of one region mode in one pass per region (what the rows then read back)."""
    backbone = load_backbone("efficientnet_lite0")
    props = det.compute_proposals(ds, det.ProposalOptions(max_proposals=budget), store=store, workers=2)
    regions = RegionSet.build(ds, props, with_gt=with_gt)
    enc = RegionEncoder(backbone, [parse_output(o) for o in outputs], region, batch_size=batch_size)
    ex = extract_regions(ds, regions, enc, store=store)
    return {
        "mode": mode,
        "images": len(ds),
        "regions": len(regions),
        "computed_now": ex.n_computed,
        "seconds": ex.seconds,
        "network_seconds": ex.network_seconds,
        "regions_per_second": ex.n_computed / ex.network_seconds if ex.network_seconds else None,
        "failures": ex.failures,
    }


def region_options(mode: str, args) -> det.RegionOptions:
    if mode == "warp":
        return det.RegionOptions(mode="warp", size=args.warp_size)
    return det.RegionOptions(mode="shared", size=args.warp_size, shared_size=args.shared_size)


def run_rows(train, test, rows, args, store, tag) -> dict:
    out = {}
    for name in rows:
        mode, feats, ft = ROWS[name]
        budget = args.warp_budget if mode == "warp" else args.budget
        region = region_options(mode, args)
        finetune = None
        if ft:
            if not args.finetune_iterations:
                continue
            finetune = det.FinetuneOptions(
                iterations=args.finetune_iterations, train_from=args.finetune_from, checkpoint_every=25
            )
        opts = det.DetectionOptions(
            features=feats,
            bbox_features=BBOX,
            region=region,
            proposals=det.ProposalOptions(max_proposals=budget),
            finetune=finetune,
            store=store,
            batch_size=args.batch_size,
        )
        model_dir = CACHE / "models" / f"{tag}-{name.replace(' ', '_').replace('/', '-')}-{budget}"
        t0 = time.perf_counter()
        trained = det.train(train, opts, model_dir, echo=print)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = det.evaluate(model_dir, test, store=store, workers=2, batch_size=args.batch_size, echo=print)
        test_s = time.perf_counter() - t0
        det.write_report(result, OUT / tag / name.replace(" ", "_").replace("/", "-"), n_examples=4)
        out[name] = {
            "mode": mode,
            "svm_features": trained.model.svm_key,
            "bbox_features": trained.model.bbox_key,
            "finetune_iterations": args.finetune_iterations if ft else 0,
            "proposals_per_image": budget,
            "map_voc07": {v: result.map(v, "ap11") for v in result.variants},
            "map_area": {v: result.map(v, "ap_area") for v in result.variants},
            "per_class_voc07": {v: {c: a.ap11 for c, a in result.ap(v).items()} for v in result.variants},
            "coco": {v: result.variants[v]["coco"] for v in result.variants},
            "train_timings": trained.timings,
            "train_seconds": train_s,
            "test_timings": result.timings,
            "test_seconds": test_s,
            "proposal_recall_test": result.recall,
            "finetune_history_tail": trained.finetune_history[-5:],
        }
        print(
            name,
            {k: round(100 * v, 1) for k, v in out[name]["map_voc07"].items() if v is not None},
            flush=True,
        )
    return out


def map_plot(rows: dict, path: Path) -> Path:
    names = list(rows)
    fig, ax = plots.figure((max(6.0, 1.3 * len(names) + 2), 4.2))
    x = np.arange(len(names))
    for k, (variant, label) in enumerate((("plain", "R-CNN"), ("bbox", "R-CNN BB"))):
        vals = [100 * (rows[n]["map_voc07"].get(variant) or 0) for n in names]
        ax.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=label)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("mAP, VOC07 11-point (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return plots.save(fig, path, title="voc07_5class test")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--train-images", type=int, default=None)
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--budget", type=int, default=300, help="proposals per image, shared-map rows")
    p.add_argument("--warp-budget", type=int, default=100, help="proposals per image, warped rows")
    p.add_argument("--warp-size", type=int, default=None, help="warp side (default: 224)")
    p.add_argument("--shared-size", type=int, default=600, help="shorter side of the shared-map pass")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--finetune-iterations", type=int, default=0)
    p.add_argument("--finetune-from", default="stage7")
    p.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--coco", action="store_true", help="also run the shared stage7/grid3 row on coco_mini")
    p.add_argument("--coco-train-images", type=int, default=None)
    p.add_argument("--coco-test-images", type=int, default=None)
    p.add_argument("--skip-voc", action="store_true", help="only the coco_mini run (with --coco)")
    p.add_argument("--out", default=None, help="results folder (default: experiments/results/rcnn_table)")
    p.add_argument("--cache", default=None, help="store and models (default: experiments/.cache/rcnn)")
    args = p.parse_args(argv)
    tuned = tune_allocator()  # as the deepfeat command line does
    global OUT, CACHE
    OUT, CACHE = Path(args.out or OUT), Path(args.cache or CACHE)
    voc = Path(args.data) / "voc07_5class"
    if not voc.is_dir():
        print(f"{voc} is absent; nothing to do")
        return 0
    store = CACHE / "store"
    load_before = os.getloadavg()
    started = time.perf_counter()
    train = subset(open_detection(voc, split="trainval"), args.train_images)
    test = subset(open_detection(voc, split="test"), args.test_images)
    region_w, region_s = region_options("warp", args), region_options("shared", args)
    warmups = {}
    modes = set() if args.skip_voc else {ROWS[r][0] for r in args.rows if not ROWS[r][2]}
    for mode in sorted(modes):
        outs = sorted({ROWS[r][1] for r in args.rows if ROWS[r][0] == mode and not ROWS[r][2]} | {BBOX})
        budget = args.warp_budget if mode == "warp" else args.budget
        region = region_w if mode == "warp" else region_s
        for role, ds, with_gt in (("train", train, True), ("test", test, False)):
            warmups[f"{mode}-{role}"] = warm(ds, mode, outs, budget, region, store, with_gt, args.batch_size)
            print(mode, role, warmups[f"{mode}-{role}"], flush=True)
    recall = {}
    for budget in [] if args.skip_voc else sorted({args.budget, args.warp_budget, 2000}):
        props = det.compute_proposals(test, det.ProposalOptions(max_proposals=budget), store=store, workers=2)
        recall[str(budget)] = {"mean_boxes": props.mean_count(), **det.proposal_recall(test, props)}
    rows = {} if args.skip_voc else run_rows(train, test, args.rows, args, store, "voc07_5class")
    coco = {}
    if args.coco and (Path(args.data) / "coco_mini").is_dir():
        ctrain = subset(open_detection(Path(args.data) / "coco_mini", split="train"), args.coco_train_images)
        ctest = subset(open_detection(Path(args.data) / "coco_mini", split="val"), args.coco_test_images)
        coco = run_rows(ctrain, ctest, ["shared stage7/grid3"], args, store, "coco_mini")
        coco["data"] = {
            "train": ctrain.name,
            "test": ctest.name,
            "train_images": len(ctrain),
            "test_images": len(ctest),
        }
    summary = {
        "data": None
        if args.skip_voc
        else {
            "train": train.name,
            "test": test.name,
            "train_images": len(train),
            "test_images": len(test),
            "classes": train.classes,
        },
        "settings": {**vars(args), "allocator_tuned": tuned},
        "proposal_recall_test_by_budget": recall,
        "feature_passes": warmups,
        "rows": rows,
        "coco_mini": coco,
        "thesis_table_3_2_voc07_full_20_classes": {
            "pool5": 44.2,
            "fc6": 46.2,
            "fc7": 44.7,
            "FT fc7": 54.2,
            "FT fc7 BB": 58.5,
        },
        "machine": {
            "note": "as found: the load averages before and after the run (the experiment's own"
            " processes count in them)",
            "niceness": os.nice(0),
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "cpus": os.cpu_count(),
        },
        "total_seconds": time.perf_counter() - started,
    }
    paths = write_result(
        OUT,
        "summary",
        summary,
        kind="experiment",
        plots={"map_by_row": lambda q: map_plot(rows, q)},
        plot_prefix="",
    )
    print(f"wrote {paths['json']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
