"""BiGAN, thesis chapter 5: Table 5.1 (1-NN accuracy on permutation-invariant MNIST in the features of
BiGAN and the baselines of Section 5.3.1) and a small analogue of Table 5.3 (frozen conv features +
linear classifier) on the data we have, with the epochs a shared 2-core CPU allows.

Table 5.1 (``--part mnist``): the MLPs of appendix 5.5.3.1 trained on the 60,000 MNIST training digits
for ``--mnist-epochs`` epochs each (the thesis: 400) with the thesis' optimiser and schedule: BiGAN,
latent regressor (LR), joint latent regressor (JLR), autoencoders (l2, l1) and the randomly
initialised encoder (batch norm statistics from the data); the D row is the discriminator of the LR
run (a standard GAN's discriminator: the latent regressor never influences G or D). 1-NN on the
10,000 test digits with the training digits as references, Euclidean and cosine, in the last hidden
layer (1024) and the encoder's output (50; its logits, and E(x) in (-1, 1)); raw pixels for reference.

Table 5.3 analogue (``--part conv``): the convolutional BiGAN (AlexNet-like E, DCGAN-style G and joint
D; 32-pixel inputs, CPU-sized widths) trained without labels on the 10,000 CIFAR-10 test images, the
discriminator baseline (a GAN whose D has the encoder's architecture; ``--d-seeds``, by default the
first seed only, to fit the CPU budget) and the random encoder, for ``--seeds``; then each network as
a deepfeat backbone (``bigan:RUN/last.pt``, batch norm folded) with frozen conv1..conv5 features
(average and max pooling) and a logistic-regression probe (C by 3-fold cross-validation on the
training part) on a seeded 70/30 split of CIFAR-10 test and of PACS photo.

Runs (checkpoints, stores) go to ``--runs`` (default experiments/.cache/bigan_tables, not committed)
and resume; results to experiments/results/bigan_tables/{table_5_1,table_5_3}.json + PNG plots.

Usage: python experiments/bigan_tables.py [--part mnist|conv|all] [--mnist-epochs 4] [--bigan-epochs N]
       [--conv-epochs 4] [--seeds 0,1,2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from deepfeat.backbones import load_backbone
from deepfeat.evaluation import ActivationsRecipe, EvaluationJob, RandomSplit, run
from deepfeat.fileio import write_json
from deepfeat.report import plots
from deepfeat.report.writer import write_result
from deepfeat.tasks.bigan import TrainOptions, evaluate_run, open_training_data, train, write_report

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("DEEPFEAT_DATASETS", REPO.parent / "shared" / "datasets"))
OUT = REPO / "experiments" / "results" / "bigan_tables"
RUNS = REPO / "experiments" / ".cache" / "bigan_tables"
THESIS_5_1 = {"bigan": 97.39, "D": 97.30, "lr": 97.44, "jlr": 97.13, "ae-l2": 97.58, "ae-l1": 97.63}
MNIST_METHODS = ("bigan", "lr", "jlr", "ae-l2", "ae-l1", "random")
CONV_METHODS = ("bigan", "gan", "random")
CONV_LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5"]


def machine_note(threads: int) -> str:
    """The machine as this run found it: cores, load average, torch threads."""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs, load average {load} when the tables were written; {threads} torch thread(s)"
    )


def _evaluation(folder: Path, epochs: int, network: str | None, name: str, metrics, pixels: bool) -> dict:
    """The run's 1-NN evaluation, computed once (cached as <name>.json in the run folder)."""
    cache = folder / f"{name}.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("epochs") == epochs and cached.get("metrics") == list(metrics):
            return cached
    t0 = time.perf_counter()
    ev = evaluate_run(folder, metrics=tuple(metrics), pixels=pixels, network=network)
    if network is None:
        write_report(ev, folder)
    out = {
        "epochs": epochs,
        "metrics": list(metrics),
        "rows": ev.nearest_neighbor,
        "reconstruction": ev.reconstruction,
        "seconds": time.perf_counter() - t0,
    }
    write_json(cache, out)
    return out


def mnist_part(args) -> dict:
    data = open_training_data("mnist", "mlp")
    runs, results = Path(args.runs), {}
    for method in MNIST_METHODS:
        epochs = 0 if method == "random" else args.mnist_epochs
        if method == "bigan" and args.bigan_epochs is not None:
            epochs = args.bigan_epochs
        opts = TrainOptions(method=method, arch="mlp", epochs=epochs, seed=0, sample_every=max(1, epochs))
        # one folder per epoch budget: a longer run is a new run (its decay schedule spans its epochs)
        folder = runs / f"mnist-{method}-e{epochs}"
        t0 = time.perf_counter()
        result = train(opts, data, folder, progress=args.progress, echo=print)
        seconds = sum(h["seconds"] for h in result.history)
        print(
            f"{method}: {len(result.history)} epochs, {seconds:.0f} s of steps, "
            f"{time.perf_counter() - t0:.0f} s in all"
        )
        ev = _evaluation(folder, epochs, None, "nn", args.metrics, pixels=method == "bigan")
        results[method] = {"history": result.history, **ev}
        if method == "lr":
            results["D"] = {
                "history": result.history,
                **_evaluation(folder, epochs, "discriminator", "nn_d", args.metrics, False),
            }
    return summarise_mnist(results, args)


def _acc(rows, key, metric):
    hit = [r["accuracy"] for r in rows if r["key"] == key and r["metric"] == metric]
    return 100 * hit[0] if hit else None


def summarise_mnist(results: dict, args) -> dict:
    table = []
    for method in ("bigan", "D", "lr", "jlr", "ae-l2", "ae-l1", "random"):
        rows = results[method]["rows"]
        entry = {"method": method, "thesis": THESIS_5_1.get(method)}
        for key in ("last_hidden", "output", "latent"):
            for metric in args.metrics:
                entry[f"{key}/{metric}"] = _acc(rows, key, metric)
        rec = results[method].get("reconstruction")
        entry["reconstruction"] = rec
        epochs = results[method]["history"]
        entry["epochs"] = len(epochs)
        entry["train_seconds"] = sum(h["seconds"] for h in epochs)
        table.append(entry)
    pixel_rows = results["bigan"]["rows"]
    pixels = {m: _acc(pixel_rows, "pixels", m) for m in args.metrics}
    by = {e["method"]: e for e in table}
    bigan, rnd = by["bigan"], by["random"]
    checks = {}
    for key in ("last_hidden", "output"):
        for metric in args.metrics:
            b, r = bigan[f"{key}/{metric}"], rnd[f"{key}/{metric}"]
            checks[f"{key}/{metric}"] = {
                "bigan": b,
                "random_init": r,
                "within_1.5_of_97.39": bool(b is not None and abs(b - 97.39) <= 1.5),
                "above_random_init": bool(b is not None and r is not None and b > r),
            }
    epochs = {e["method"]: e["epochs"] for e in table}
    return {"table": table, "pixels": pixels, "targets": checks, "epochs": epochs}


def probe(backbone: str, data: Path, store: Path, seed: int, pools: list[str]) -> dict[str, float]:
    """Mean per-class accuracy of a logistic-regression probe per (layer, pooling)."""
    job = EvaluationJob(
        data,
        recipe=ActivationsRecipe(CONV_LAYERS, pool=list(pools)),
        protocol=RandomSplit(test_size=0.3, n_splits=1, random_state=seed),
        probes=["logreg"],
        probe_params={"cv": 3},
        backbone=load_backbone(backbone),
        out=store,
    )
    result = run(job, progress=False, echo=lambda _m: None)
    return {r["features"]: r["mean_class_accuracy"]["mean"] for r in result.summary()}


def frozen_transfer(backbone: str, data: Path, out: Path, seed: int, epochs: int) -> dict[str, float]:
    """Table 5.2's protocol per layer: the encoder through the layer frozen, the layers after it
    initialised afresh and trained with labels (conv5: only a new linear output on the flattened
    conv5 maps); accuracy on a seeded, class-stratified 30% of the images held out of training."""
    from deepfeat.data.datasets import open_dataset
    from deepfeat.training.finetune import FineTuner

    dataset = open_dataset(data)
    scores = {}
    for layer in CONV_LAYERS:
        scope = "fc" if layer == CONV_LAYERS[-1] else f"frozen:{layer}"
        tuner = FineTuner(
            backbone, scope=scope, epochs=epochs, lr=0.01, step_size=max(1, (2 * epochs) // 3),
            batch_size=64, val_fraction=0.3, random_state=seed, out=out / layer, progress=False,
        ).fit(dataset)  # fmt: skip
        scores[layer] = tuner.val_accuracy_
    return scores


def conv_part(args) -> dict:
    cifar, pacs = DATASETS / "cifar10_test", DATASETS / "pacs" / "photo"
    data = open_training_data(args.conv_train or cifar, "conv", args.input_size)
    tag = "cifar" if args.conv_train is None else Path(args.conv_train).name
    px = "" if args.input_size == 32 else f"-px{args.input_size}"
    runs = Path(args.runs)
    scores: dict = {"cifar10_test": {}, "pacs_photo": {}}
    frozen: dict = {"cifar10_test": {}, "pacs_photo": {}}
    histories = {}
    for seed in args.seeds:
        for method in CONV_METHODS:
            if method == "gan" and seed not in args.d_seeds:
                continue
            epochs = 0 if method == "random" else args.conv_epochs
            opts = TrainOptions(
                method=method, arch="conv", epochs=epochs, seed=seed, encoder_widths=args.widths,
                gan_width=args.gan_width, latent_dim=args.latent, sample_every=max(1, epochs),
                latent_init_scale=args.latent_init_scale, input_size=args.input_size,
                batch_size=args.batch_size,
            )  # fmt: skip
            zs = "" if method != "bigan" or args.latent_init_scale == 25 else f"-z{args.latent_init_scale:g}"
            if method != "random" and args.batch_size != TrainOptions.batch_size:
                zs += f"-b{args.batch_size}"
            folder = runs / f"{tag if method != 'random' else 'cifar'}-{method}-s{seed}-e{epochs}{zs}{px}"
            result = train(opts, data, folder, progress=args.progress, echo=print)
            histories[f"{method}/s{seed}"] = result.history
            backbone = f"bigan:{folder / 'last.pt'}"
            for name, where in (("cifar10_test", cifar), ("pacs_photo", pacs)):
                t0 = time.perf_counter()
                if "probe" in args.conv_protocol:
                    acc = probe(backbone, where, folder / f"probe-{name}", seed, args.pools)
                    scores[name].setdefault(method, {})[seed] = acc
                if "frozen" in args.conv_protocol and method in args.frozen_methods:
                    acc = frozen_transfer(
                        backbone, where, folder / f"frozen-{name}-e{args.frozen_epochs}",
                        seed, args.frozen_epochs,
                    )  # fmt: skip
                    frozen[name].setdefault(method, {})[seed] = acc
                print(f"{method} s{seed} {name}: evaluated in {time.perf_counter() - t0:.0f} s", flush=True)
    summary = summarise_conv(scores, histories, args) if "probe" in args.conv_protocol else {}
    if "frozen" in args.conv_protocol:
        summary["frozen"] = summarise_frozen(frozen, args)
    return summary


def summarise_frozen(frozen: dict, args) -> dict:
    tables, checks = {}, {}
    for data_name, by_method in frozen.items():
        rows = []
        for layer in CONV_LAYERS:
            row = {"frozen_through": layer}
            for method, per_seed in by_method.items():
                vals = np.array([100 * per_seed[s][layer] for s in sorted(per_seed)])
                row[method] = {"mean": float(vals.mean()), "std": float(vals.std()), "seeds": vals.tolist()}
            rows.append(row)
        tables[data_name] = rows
        checks[data_name] = {
            r["frozen_through"]: r["bigan"]["mean"] > r["random"]["mean"]
            for r in rows
            if "bigan" in r and "random" in r and r["frozen_through"] in ("conv3", "conv4", "conv5")
        }
    return {
        "protocol": "thesis Table 5.2 (Noroozi & Favaro): conv1..convN frozen, the layers after convN "
        "re-initialised and trained with labels (SGD, momentum 0.9, lr 0.01, x0.1 after two thirds of "
        f"the {args.frozen_epochs} epochs, batch 64, flips); accuracy on a seeded stratified 30% held out",
        "tables": tables,
        "bigan_above_random_conv3_and_deeper": checks,
    }


def summarise_conv(scores: dict, histories: dict, args) -> dict:
    tables, checks = {}, {}
    for data_name, by_method in scores.items():
        rows = []
        for feat in [f"{layer}/{pool}" for layer in CONV_LAYERS for pool in args.pools]:
            row = {"features": feat}
            for method, per_seed in by_method.items():
                vals = np.array([100 * per_seed[s][feat] for s in sorted(per_seed)])
                row[method] = {"mean": float(vals.mean()), "std": float(vals.std()), "seeds": vals.tolist()}
            rows.append(row)
        tables[data_name] = rows
        checks[data_name] = {
            r["features"]: {
                "bigan_above_random": r["bigan"]["mean"] > r["random"]["mean"],
                # None when no discriminator baseline ran (--d-seeds outside --seeds)
                "bigan_above_discriminator": r["bigan"]["mean"] > r["gan"]["mean"] if "gan" in r else None,
            }
            for r in rows
            if r["features"].split("/")[0] in ("conv3", "conv4", "conv5")
        }
    return {"tables": tables, "pools": args.pools, "targets_conv3_and_deeper": checks, "histories": histories}


def plot_mnist(summary: dict, path: Path) -> Path:
    table = summary["table"]
    fig, ax = plots.figure((7.5, 4.0))
    names = [e["method"] for e in table]
    x = np.arange(len(names))
    for i, (key, label) in enumerate([("last_hidden/l2", "last hidden, l2"), ("output/l2", "output, l2")]):
        vals = [np.nan if e.get(key) is None else e[key] for e in table]
        ax.bar(x + (i - 0.5) * 0.35, vals, 0.35, label=label)
    ax.plot(
        x, [np.nan if e["thesis"] is None else e["thesis"] for e in table], "k*", label="thesis Table 5.1"
    )
    ax.set_xticks(x, names)
    ax.set_ylim(80, 100)
    ax.set_ylabel("1-NN accuracy on MNIST test (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    budgets = sorted({n for m, n in summary["epochs"].items() if m != "random"})
    return plots.save(fig, path, f"Table 5.1 after {' / '.join(map(str, budgets))} epochs (see JSON)")


def plot_conv(summary: dict, path: Path) -> Path:
    fig, axes = plots.grid(2, ncols=2, size=(5.5, 3.8))
    for ax, (name, rows) in zip(axes, summary["tables"].items()):
        pool = summary["pools"][-1]
        feats = [r["features"] for r in rows if r["features"].endswith(f"/{pool}")]
        for method in [m for m in CONV_METHODS if m in rows[0]]:  # D only when it ran
            means = [next(r for r in rows if r["features"] == f)[method]["mean"] for f in feats]
            stds = [next(r for r in rows if r["features"] == f)[method]["std"] for f in feats]
            ax.errorbar(range(len(feats)), means, yerr=stds, marker="o", capsize=3, label=method)
        ax.set_xticks(range(len(feats)), [f.split("/")[0] for f in feats])
        ax.set_title(f"{name} ({pool} features)")
        ax.set_ylabel("mean per-class accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return plots.save(fig, path, "frozen conv features + logistic regression")


def plot_frozen(summary: dict, path: Path) -> Path:
    fig, axes = plots.grid(2, ncols=2, size=(5.5, 3.8))
    for ax, (name, rows) in zip(axes, summary["tables"].items()):
        methods = [m for m in CONV_METHODS if m in rows[0]]
        for method in methods:
            means = [r[method]["mean"] for r in rows]
            stds = [r[method]["std"] for r in rows]
            ax.errorbar(range(len(rows)), means, yerr=stds, marker="o", capsize=3, label=method)
        ax.set_xticks(range(len(rows)), [r["frozen_through"] for r in rows])
        ax.set_xlabel("frozen through")
        ax.set_title(name)
        ax.set_ylabel("held-out accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return plots.save(fig, path, "first layers frozen, the rest trained from scratch (Table 5.2 protocol)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["mnist", "conv", "all"], default="all")
    parser.add_argument("--mnist-epochs", type=int, default=4)
    parser.add_argument(
        "--bigan-epochs", type=int, default=None, help="BiGAN's own budget (default: --mnist-epochs)"
    )
    parser.add_argument("--conv-epochs", type=int, default=4)
    parser.add_argument(
        "--conv-train", default=None,
        help="image folder or manifest the conv networks train on without labels (default: CIFAR-10 test)",
    )  # fmt: skip
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--d-seeds", default="0", help="seeds of the discriminator baseline (a subset)")
    parser.add_argument("--widths", default="16,32,48,48,32", help="conv encoder channels")
    parser.add_argument("--gan-width", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=32, choices=[32, 64], help="conv input pixels")
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128, help="conv networks' mini-batch (thesis: 128)")
    parser.add_argument(
        "--latent-init-scale", type=float, default=25.0,
        help="D's weights on z start N(0, 0.02 x this): the thesis' 25, or 1 (standard)",
    )  # fmt: skip
    parser.add_argument("--pools", default="avg,max", help="poolings of the probed maps (avg, max, unroll)")
    parser.add_argument("--metrics", default="l2,cosine")
    parser.add_argument(
        "--conv-protocol", default="probe",
        help="probe (frozen features + logistic regression), frozen (Table 5.2: layers after convN "
        "trained afresh with labels), or both: probe,frozen",
    )  # fmt: skip
    parser.add_argument("--frozen-epochs", type=int, default=10)
    parser.add_argument("--frozen-methods", default="bigan,random", help="methods the frozen protocol runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", default=str(RUNS))
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.d_seeds = [int(s) for s in args.d_seeds.split(",")]
    args.widths = tuple(int(w) for w in args.widths.split(","))
    args.pools = [p.strip() for p in args.pools.split(",") if p.strip()]
    args.metrics = args.metrics.split(",")
    args.conv_protocol = [p.strip() for p in args.conv_protocol.split(",") if p.strip()]
    args.frozen_methods = [m.strip() for m in args.frozen_methods.split(",") if m.strip()]
    torch.set_num_threads(args.threads)
    if not DATASETS.is_dir():
        print(f"{DATASETS} is absent; nothing to do")
        return 0
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    common = {"machine": machine_note(args.threads), "settings": settings}
    if args.part in ("mnist", "all"):
        summary = mnist_part(args)
        write_result(
            args.out, "table_5_1", {**common, **summary, "what": mnist_what(summary)}, kind="experiment",
            plots={"plot": lambda p: plot_mnist(summary, p)},
            provenance={"data": "MNIST train (60,000) / test (10,000)", "thesis_table": "5.1"},
        )  # fmt: skip
    if args.part in ("conv", "all"):
        summary = conv_part(args)
        if "frozen" in summary:
            frozen = summary.pop("frozen")
            write_result(
                args.out, "table_5_2", {**common, **frozen}, kind="experiment",
                plots={"plot": lambda p: plot_frozen(frozen, p)},
                provenance={
                    "data": f"{args.conv_train or 'CIFAR-10 test (10,000)'} (BiGAN training), CIFAR-10 test "
                    "and PACS photo (supervised training and held-out accuracy)",
                    "thesis_table": "5.2",
                },
            )  # fmt: skip
        if not summary:
            return 0
        write_result(
            args.out, "table_5_3", {**common, **summary}, kind="experiment",
            plots={"plot": lambda p: plot_conv(summary, p)},
            provenance={
                "data": f"{args.conv_train or 'CIFAR-10 test (10,000)'} (training), CIFAR-10 test and PACS "
                "photo (probes)"
            },
        )  # fmt: skip
    return 0


def mnist_what(summary: dict) -> list[str]:
    """Plain sentences: what reproduced and what did not."""
    out = []
    for key, check in summary["targets"].items():
        out.append(
            f"BiGAN 1-NN on {key}: {check['bigan']:.2f}% vs 97.39% in the thesis "
            f"({'within' if check['within_1.5_of_97.39'] else 'NOT within'} 1.5 points), random-init "
            f"encoder {check['random_init']:.2f}% ({'above' if check['above_random_init'] else 'NOT above'})"
        )
    per = ", ".join(f"{m} {n}" for m, n in summary["epochs"].items())
    out.append(f"epochs per method here: {per} (the random encoder is untrained); the thesis trains 400")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
