"""The rows of the thesis' Tables 4.5 (retrieval) and 4.6 (generation) that fit on CPU, on
flickr8k_mini's test split (the committed seeded split, experiments/splits/flickr8k_mini.json) and on
coco_mini (all 159 images, out of domain: the models never see COCO).

Models (Table 4.5 / 4.6's sequence-model axes): LRCN_1u, LRCN_2u, LRCN_2f with LSTMs, and LRCN_2f with
vanilla RNN units; frozen EfficientNet-Lite0 ``pool`` features (1280-d, the bundled ImageNet weights;
the thesis' CaffeNet / VGGNet weights are not available offline), the ``--small`` sizes (hidden and
embedding 256), dropout 0.5, vocabulary of words seen 5+ times, captions cut at 20 words, Adam 1e-3,
batches of 100 captions, gradient norm clipped at 10, at most EPOCHS epochs with early stopping on
validation CIDEr-D (patience 2). Tuning (the epoch) on the val split only; test is scored once.

Strategies on flickr8k_mini: every model with greedy decoding (beam 1) and best-of-100 samples at
T = 1.5 (the top and middle groups of Table 4.6); LRCN_2f LSTM also with beams 3, 5, 10 and sampling
with N in {25, 100} and T in {1, 1.5, 2} (the bottom group). On coco_mini: greedy for every model,
beam 5 for LRCN_2f LSTM. Retrieval (Table 4.5): every model on the flickr8k_mini test images and
their captions (none on coco_mini). ``--images N`` evaluates on the first N images of each data set
only, ``--no-meteor`` leaves out METEOR (one JVM per evaluation): for the CPU time of a loaded, shared
2-core machine (results.json says what was used). Baselines: best constant caption, nearest
neighbour (consensus caption), human agreement.

Stages (each writes its own JSON under experiments/results/lrcn_captioning_tables/, so a stage that
is interrupted or rerun skips what is done; trainings resume from their checkpoints):

    python experiments/lrcn_captioning_tables.py train --model lstm_2f     # one model; run several at once
    python experiments/lrcn_captioning_tables.py evaluate --model lstm_2f  # its rows on both data sets
    python experiments/lrcn_captioning_tables.py baselines                 # constant / NN / human rows
    python experiments/lrcn_captioning_tables.py assemble                  # results.json + tables
    python experiments/lrcn_captioning_tables.py all                       # everything, in order

Wall-clock times are recorded with the CPU time of each process (``cpu_seconds``), which load from
other processes inflates far less.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from deepfeat.fileio import write_json
from deepfeat.report.writer import write_result
from deepfeat.tasks.captioning import (
    CaptionEvalJob,
    CaptionModel,
    CaptionTrainJob,
    FeatureSpec,
    SequenceOptions,
    Strategy,
    TrainingOptions,
    evaluate,
    train,
)
from deepfeat.tasks.captioning.report import generation_table, retrieval_table
from deepfeat.tasks.text.metrics import FAMILIES

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("DEEPFEAT_DATASETS") or REPO.parent / "shared" / "datasets")
FLICKR = DATASETS / "flickr8k_mini"
COCO = [DATASETS / "coco_mini" / "annotations" / f"captions_{p}2017.json" for p in ("train", "val")]
SPLIT = REPO / "experiments" / "splits" / "flickr8k_mini.json"
OUT = REPO / "experiments" / "results" / "lrcn_captioning_tables"
STORE = REPO / "experiments" / ".cache" / "store"
EPOCHS = 30
MODELS = {
    "lstm_1u": ("lrcn_1u", "lstm"),
    "lstm_2u": ("lrcn_2u", "lstm"),
    "lstm_2f": ("lrcn_2f", "lstm"),
    "rnn_2f": ("lrcn_2f", "rnn"),
}
ABLATION_MODEL = "lstm_2f"
GREEDY = Strategy(beam=1)
COMMON = [GREEDY, Strategy(samples=100, temperature=1.5)]
ABLATION = [
    Strategy(beam=3),
    Strategy(beam=5),
    Strategy(beam=10),
    Strategy(samples=25, temperature=1.0),
    Strategy(samples=25, temperature=1.5),
    Strategy(samples=25, temperature=2.0),
    Strategy(samples=100, temperature=1.0),
    Strategy(samples=100, temperature=2.0),
]
#: what the run in results.json could afford (CPU time of the loaded machine): ``--short-ablation``
SHORT_ABLATION = [
    Strategy(beam=3),
    Strategy(beam=5),
    Strategy(samples=25, temperature=1.0),
    Strategy(samples=25, temperature=1.5),
    Strategy(samples=25, temperature=2.0),
]
#: coco_mini (out of domain) gets fewer strategies: the CPU time of this shared machine is short
COCO_ABLATION = [Strategy(beam=5)]
DATA = {"flickr8k_mini_test": (FLICKR, "test"), "coco_mini_all": (COCO, "all")}


def strategies_for(name: str, key: str, short: bool = False) -> list[Strategy]:
    if key == "coco_mini_all":
        return [GREEDY] + (COCO_ABLATION if name == ABLATION_MODEL else [])
    return COMMON + ((SHORT_ABLATION if short else ABLATION) if name == ABLATION_MODEL else [])


def model_dir(name: str) -> Path:
    return OUT / "models" / name


def train_model(name: str, epochs: int = EPOCHS) -> None:
    arch, unit = MODELS[name]
    job = CaptionTrainJob(
        data=FLICKR,
        out=model_dir(name),
        split=SPLIT,
        features=FeatureSpec(layer="pool"),
        sequence=SequenceOptions.small(architecture=arch, unit=unit),
        training=TrainingOptions(epochs=epochs, patience=3, seed=0),
        store=STORE,
    )
    result = train(job, progress=False, echo=print)
    print(
        f"{name}: best epoch {result.training.best_epoch}, {result.training.seconds:.0f} s wall, "
        f"{result.training.cpu_seconds:.0f} s CPU",
        flush=True,
    )


def evaluate_model(name: str, images: int | None = None, meteor: bool = True, short: bool = False) -> None:
    model = CaptionModel.load(model_dir(name))
    for key, (data, part) in DATA.items():
        target = OUT / "parts" / f"{name}_{key}.json"
        if target.is_file():
            print(f"{target} exists; skipped", flush=True)
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        ev = evaluate(
            CaptionEvalJob(
                data,
                models=[model],
                on=part,
                split=SPLIT if part != "all" else None,
                strategies=strategies_for(name, key, short),
                metrics=metric_families(meteor),
                retrieval=key == "flickr8k_mini_test",
                baselines=False,
                store=STORE,
                max_images=images,
                examples=8,
            ),
            progress=False,
            echo=print,
        )
        payload = ev.to_dict()
        payload["seconds"], payload["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json(target, payload)


def metric_families(meteor: bool) -> list[str]:
    return [m for m in FAMILIES if meteor or m != "meteor"]


def baselines(images: int | None = None, meteor: bool = True) -> None:
    model = CaptionModel.load(model_dir(ABLATION_MODEL))
    for key, (data, part) in DATA.items():
        target = OUT / "parts" / f"baselines_{key}.json"
        if target.is_file():
            continue
        ev = evaluate(
            CaptionEvalJob(
                data,
                models=[model],
                on=part,
                split=SPLIT if part != "all" else None,
                strategies=[GREEDY],
                metrics=metric_families(meteor),
                max_images=images,
                retrieval=False,
                baselines=True,
                store=STORE,
                examples=0,
                train_data=FLICKR,
                train_split=SPLIT,
            ),
            progress=False,
            echo=print,
        )
        payload = ev.to_dict()
        payload["generation"] = [r for r in payload["generation"] if r["kind"] == "baseline"]
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json(target, payload)


def assemble() -> None:
    from deepfeat.tasks.captioning.evaluate import CaptionEvaluation

    results: dict = {"datasets": {}, "training": {}, "missing": []}
    for name in MODELS:
        path = model_dir(name) / "training.json"
        if not path.is_file():  # not trained (yet): said in results.json
            results["missing"].append(str(path.relative_to(OUT)))
            continue
        record = json.loads(path.read_text())["result"]
        results["training"][name] = {
            "best_epoch": record["training"]["best_epoch"],
            "epochs_max": record["training"]["options"].get("epochs"),
            "epochs_run": len(record["training"]["history"]),
            # summed over the epochs' records: a resumed run's own total counts only its last session
            "seconds": sum(h["seconds"] for h in record["training"]["history"]),
            "cpu_seconds": sum(h["cpu_seconds"] for h in record["training"]["history"]),
            "history": record["training"]["history"],
            "vocabulary": record["vocabulary"],
        }
    for key in DATA:
        rows, retrievals, about, images = [], {}, None, []
        for name in sorted(MODELS, key=lambda n: n == ABLATION_MODEL):  # its full-size chance row last
            path = OUT / "parts" / f"{name}_{key}.json"
            if not path.is_file():  # a stage that did not finish: said in results.json
                results["missing"].append(str(path.relative_to(OUT)))
                continue
            part = json.loads(path.read_text())
            about = about or part["about"]
            images = part["images"]
            for r in part["generation"]:
                r["model_key"] = name
            rows += part["generation"]
            retrievals.update(part["retrieval"])
        path = OUT / "parts" / f"baselines_{key}.json"
        if path.is_file():
            base = json.loads(path.read_text())
        else:
            results["missing"].append(str(path.relative_to(OUT)))
            base = {"generation": [], "images": images}
        rows += base["generation"]
        ev = CaptionEvaluation(
            rows=rows, retrieval=retrievals, examples=[], images=base["images"], about=about, provenance={}
        )
        slim = [{k: v for k, v in r.items() if k not in ("per_image", "captions")} for r in rows]
        results["datasets"][key] = {
            "n_images": len(base["images"]),
            "generation": slim,
            "retrieval": {
                k: {
                    d: v[d]
                    for d in (
                        "image_to_caption",
                        "caption_to_image",
                        "chance",
                        "seconds",
                        "n_images",
                        "n_captions",
                    )
                }
                for k, v in retrievals.items()
            },
            "generation_table": generation_table(ev),
            "retrieval_table": retrieval_table(ev),
        }
    results["targets"] = targets(results)
    flickr_rows = results["datasets"]["flickr8k_mini_test"]["generation"]
    results["run"] = {
        "epochs_trained": {k: v["epochs_run"] for k, v in results["training"].items()},
        "images_evaluated": {k: v["n_images"] for k, v in results["datasets"].items()},
        "meteor_included": any("meteor" in r["corpus"] for r in flickr_rows),
        "machine": f"{os.cpu_count()} CPUs, load average "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg())
        + " at assembly; each stage records wall and CPU seconds (CPU seconds do not grow with load)",
    }
    write_result(
        OUT,
        "results",
        results,
        kind="experiment",
        provenance={
            "data": {"flickr8k_mini": str(FLICKR), "coco_mini": [str(c) for c in COCO], "split": str(SPLIT)},
            "features": FeatureSpec(layer="pool").to_dict(),
            "sequence": SequenceOptions.small().to_dict(),
            "epochs_max": {k: v["epochs_max"] for k, v in results["training"].items()},
            "machine_note": "see result.run.machine; CPU seconds beside wall times",
        },
    )
    print(json.dumps(results["targets"], indent=1))


def targets(results: dict) -> dict:
    """The issue's targets, checked on the flickr8k_mini test split."""
    rows = results["datasets"]["flickr8k_mini_test"]["generation"]
    model_rows = [r for r in rows if r["kind"] == "model"]
    best = max(model_rows, key=lambda r: r["corpus"]["cider_d"])
    baseline = {r["name"]: r["corpus"]["cider_d"] for r in rows if r["kind"] == "baseline"}
    constant = baseline.get("constant caption")
    nearest = baseline.get("nearest neighbour")
    ablation = [
        r for r in model_rows if r["model_key"] == ABLATION_MODEL and r["strategy"]["strategy"] == "beam"
    ]
    by_beam = {r["strategy"]["beam"]: r["corpus"]["cider_d"] for r in ablation}
    training = results["training"]
    return {
        "best_configuration": f"{best['name']} / {best['strategy_name']}",
        "best_cider_d": best["corpus"]["cider_d"],
        "constant_cider_d": constant,
        "nearest_neighbour_cider_d": nearest,
        "best_over_constant": None if constant is None else best["corpus"]["cider_d"] / max(constant, 1e-12),
        "target_1.5x_constant": None if constant is None else best["corpus"]["cider_d"] >= 1.5 * constant,
        "target_above_nearest_neighbour": None if nearest is None else best["corpus"]["cider_d"] > nearest,
        # the best row is picked on test; how many rows pass shows whether that choice matters
        "rows_meeting_both_targets": None
        if constant is None or nearest is None
        else [
            f"{r['name']} / {r['strategy_name']}"
            for r in model_rows
            if r["corpus"]["cider_d"] >= 1.5 * constant and r["corpus"]["cider_d"] > nearest
        ],
        "model_rows": len(model_rows),
        "cider_d_by_beam_width": by_beam,
        "target_beam_3_to_5_at_least_greedy": (
            max(by_beam.get(3, 0), by_beam.get(5, 0)) >= by_beam[1] if {1, 3} <= set(by_beam) else None
        ),
        "training_cpu_seconds": {k: v["cpu_seconds"] for k, v in training.items()},
        "training_wall_seconds": {k: v["seconds"] for k, v in training.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["train", "evaluate", "baselines", "assemble", "all"])
    parser.add_argument("--model", choices=list(MODELS), help="for train / evaluate: one model (default all)")
    parser.add_argument(
        "--epochs", type=int, default=EPOCHS, help=f"most epochs per model (default {EPOCHS})"
    )
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="evaluate on the first N images of each data set (default all)",
    )
    parser.add_argument(
        "--short-ablation", action="store_true", help="LRCN_2f: beams 3, 5 and N = 25 at T = 1, 1.5, 2 only"
    )
    parser.add_argument("--no-meteor", action="store_true", help="leave METEOR out (a JVM per evaluation)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [args.model] if args.model else list(MODELS)
    if args.stage in ("train", "all"):
        for name in names:
            train_model(name, args.epochs)
    if args.stage in ("evaluate", "all"):
        for name in names:
            evaluate_model(name, args.images, not args.no_meteor, args.short_ablation)
    if args.stage in ("baselines", "all"):
        baselines(args.images, not args.no_meteor)
    if args.stage in ("assemble", "all"):
        assemble()
    return 0


if __name__ == "__main__":
    sys.exit(main())
