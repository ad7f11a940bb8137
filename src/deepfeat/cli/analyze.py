"""CLI: ``deepfeat analyze ...``: what layers encode (Agrawal's report, DeCAF's t-SNE), as JSON + PNG.

Every command extracts what it needs through the feature store (nothing is recomputed on a rerun) and
writes ``<analysis>.json`` (results and provenance) with its plots into ``--out``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from deepfeat.analysis import (
    embed,
    filters_needed,
    layer_accuracy_over_training,
    layer_entropy,
    percent_decrease_table,
    plot_aue_histograms,
    plot_embedding,
    plot_filter_overlap,
    plot_filters_needed,
    plot_layer_accuracy,
    plot_mcaue_curves,
    plot_precision_curves,
    precision_curves,
    write_analysis,
)
from deepfeat.backbones import DEFAULT_BACKBONE, load_backbone
from deepfeat.cli.common import friendly, set_threads, setup_logging
from deepfeat.cli.evaluate import JobOptions, run_job
from deepfeat.data.datasets import open_dataset
from deepfeat.errors import ConfigError, DataError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.featureset import FeatureSet
from deepfeat.features.pipeline import extract
from deepfeat.features.store import FeatureStore

analyze_app = typer.Typer(
    help="Analyses of what layers encode, each written as JSON + PNG plots.", no_args_is_help=True
)
ABLATIONS = "unroll,sp-shuffle,max,sp-max-bin,bin"

_DATA = typer.Argument(..., help="'digits', a class-per-folder tree, or a .csv/.jsonl manifest.")
_BACKBONE = typer.Option(DEFAULT_BACKBONE, "--backbone", "-b", help="Backbone name.")
_WEIGHTS = typer.Option(None, help="Weights file (default: the backbone's own); fine-tuned checkpoints work.")
_OUT = typer.Option(Path("deepfeat-analysis"), "--out", "-o", help="Output folder.")
_STORE = typer.Option(None, help="Feature store (default: OUT/store).")
_PREPROCESS = typer.Option("backbone", help="'backbone', 'decaf' or 'interactive'.")
_SEED = typer.Option(0, help="Seed of every random choice.")
_THREADS = typer.Option(None, help="Torch CPU threads.")


def layer_maps(
    data: str, backbone: str, weights: str | None, layers: list[str], pool: str, store: Path, preprocess: str
) -> tuple[dict[str, FeatureSet], dict]:
    """Features of ``layers`` (one pooling) through the store, with the provenance of the run."""
    dataset = open_dataset(data)
    bb = load_backbone(backbone, weights=weights)
    method = LayerActivations(layers, pool)
    result = extract(dataset, bb, [method], store=FeatureStore(store), preprocess=preprocess, progress=True)
    by_layer = {key.split("/")[0]: fs for key, fs in result.features.items()}
    for layer, fs in by_layer.items():
        if fs.multilabel:
            raise DataError(f"{dataset.name}: this analysis needs single-label data")
        if len(fs) == 0:
            raise DataError(f"{dataset.name}: no image of layer {layer!r} could be extracted")
    prov = {
        "data": data,
        "dataset_fingerprint": dataset.fingerprint(),
        "backbone": bb.name,
        "weights_id": bb.weights_id,
        "pool": pool,
        "preprocess": preprocess,
        "n_images": len(next(iter(by_layer.values()))),
        "failures": [list(f) for f in result.failures],
    }
    return by_layer, prov


def _shape(fs: FeatureSet):
    return fs.layer_shape if fs.layer_shape is not None and len(fs.layer_shape) == 3 else None


def _train_test(fs: FeatureSet, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The data's own train/test rows, else a seeded stratified half split."""
    if fs.splits is not None:
        split = np.char.lower(fs.splits.astype(str))
        train, test = np.flatnonzero(split == "train"), np.flatnonzero(np.isin(split, ["val", "test"]))
        if len(train) and len(test):
            return train, test
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(fs))
    return tuple(train_test_split(idx, test_size=0.5, stratify=fs.targets, random_state=seed))


def _layers(text: str) -> list[str]:
    out = [x.strip() for x in text.split(",") if x.strip()]
    if not out:
        raise ConfigError("--layers names no layer")
    return out


@analyze_app.command("entropy")
@friendly
def entropy_command(
    data: str = _DATA,
    layers: str = typer.Option("stage4,stage6,head", "--layers", "-l", help="Comma-separated layers."),
    methods: str = typer.Option("label,weighted,spmax", help="Entropy methods: label, weighted, spmax."),
    thresholds: int = typer.Option(100, help="Threshold levels per filter."),
    after: str = typer.Option(None, help="Weights of a second network (e.g. fine-tuned) to compare with."),
    backbone: str = _BACKBONE,
    weights: str = _WEIGHTS,
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: str = _PREPROCESS,
    threads: int = _THREADS,
) -> None:
    """Filter entropy curves, AuE histograms and MCAuE curves per layer (and the percent decrease of
    MCAuE at 0.1/0.25/0.5/1.0 of the filters between two networks with --after, Table 2.1)."""
    set_threads(threads)
    names = _layers(layers)
    wanted = tuple(m.strip() for m in methods.split(",") if m.strip())
    networks = {"before": weights} if after is not None else {"network": weights}
    if after is not None:
        networks["after"] = after
    aue: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    result, provs, skipped = {}, {}, []
    for net, w in networks.items():
        maps, provs[net] = layer_maps(data, backbone, w, names, "unroll", store or out / "store", preprocess)
        for layer, fs in maps.items():
            usable = wanted
            if "weighted" in wanted and np.asarray(fs.features).min() < 0:
                # residual and linear outputs go negative: score weights are defined for responses >= 0
                usable = tuple(m for m in wanted if m != "weighted")
                skipped.append(f"{net}/{layer}: weighted entropy needs non-negative responses; skipped")
                typer.echo(skipped[-1])
            curves = layer_entropy(
                fs.features,
                fs.targets,
                methods=usable,
                layer_shape=_shape(fs),
                thresholds=thresholds,
                progress=True,
            )
            result.setdefault(net, {})[layer] = {m: c.to_dict(curves=False) for m, c in curves.items()}
            for m, c in curves.items():
                aue.setdefault(m, {}).setdefault(layer, {})[net] = c.aue
    result["skipped"] = skipped
    if after is not None:
        both = {m: {layer: v for layer, v in per.items() if len(v) == 2} for m, per in aue.items()}
        before = {layer: {m: both[m][layer]["before"] for m in both if layer in both[m]} for layer in names}
        later = {layer: {m: both[m][layer]["after"] for m in both if layer in both[m]} for layer in names}
        result["percent_decrease"] = percent_decrease_table(before, later)
    plots = {}
    for m, per_layer in aue.items():
        plots[f"aue_hist_{m}"] = lambda p, d=per_layer, m=m: plot_aue_histograms(d, p, title=f"AuE ({m})")
        plots[f"mcaue_{m}"] = lambda p, d=per_layer, m=m: plot_mcaue_curves(d, p, title=f"MCAuE ({m})")
    paths = write_analysis(out, "entropy", result, provenance=provs, plots=plots)
    typer.echo(f"wrote {paths['json']} and {len(plots)} plots")


@analyze_app.command("selectivity")
@friendly
def selectivity_command(
    data: str = _DATA,
    layer: str = typer.Option("head", "--layer", "-l", help="One layer."),
    top: int = typer.Option(5, help="Top filters per class to plot."),
    backbone: str = _BACKBONE,
    weights: str = _WEIGHTS,
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: str = _PREPROCESS,
    threads: int = _THREADS,
) -> None:
    """Grandmother cells: precision P(class | activity >= t) per filter and class, its area, the top
    filters per class with their precision curves."""
    set_threads(threads)
    maps, prov = layer_maps(data, backbone, weights, [layer], "unroll", store or out / "store", preprocess)
    fs = maps[layer]
    curves = precision_curves(fs.features, fs.targets, layer_shape=_shape(fs), spatial="max", progress=True)
    result = {
        "top_filters": curves.top_filters(top).tolist(),
        "area": curves.area.tolist(),
        "classes": fs.classes,
    }
    plot = {"precision": lambda p: plot_precision_curves(curves, p, top=top, class_names=fs.classes)}
    paths = write_analysis(
        out, f"selectivity_{layer}", result, provenance={**prov, "layer": layer}, plots=plot
    )
    typer.echo(f"wrote {paths['json']}")


@analyze_app.command("filters")
@friendly
def filters_command(
    data: str = _DATA,
    layer: str = typer.Option("head", "--layer", "-l", help="One layer."),
    C: float = typer.Option(1.0, "--C", help="SVM regularisation constant."),
    backbone: str = _BACKBONE,
    weights: str = _WEIGHTS,
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: str = _PREPROCESS,
    seed: int = _SEED,
    threads: int = _THREADS,
) -> None:
    """Filters needed per class: SVM on spatial-max features, filters ranked by |weight|, retrained on
    the top k; the k reaching 50% and 90% of the full AP (Table 3.1) and the top-50 overlap (Fig 3-5)."""
    set_threads(threads)
    maps, prov = layer_maps(data, backbone, weights, [layer], "max", store or out / "store", preprocess)
    fs = maps[layer]
    train, test = _train_test(fs, seed)
    X = np.asarray(fs.features)
    res = filters_needed(
        X[train], fs.targets[train], X[test], fs.targets[test], C=C, random_state=seed, progress=True
    )
    plots = {
        "ap_by_k": lambda p: plot_filters_needed(res, p, class_names=fs.classes),
        "overlap": lambda p: plot_filter_overlap(res, p, class_names=fs.classes),
    }
    prov = {**prov, "layer": layer, "C": C, "n_train": len(train), "n_test": len(test), "seed": seed}
    paths = write_analysis(out, f"filters_{layer}", res.to_dict(), provenance=prov, plots=plots)
    for row in res.table():
        typer.echo("  ".join(f"{k}={v}" for k, v in row.items()))
    typer.echo(f"wrote {paths['json']}")


@analyze_app.command("embed")
@friendly
def embed_command(
    data: str = _DATA,
    layer: str = typer.Option("pool", "--layer", "-l", help="One layer."),
    pool: str = typer.Option("avg", help="Pooling of spatial layers (avg, max, unroll)."),
    method: str = typer.Option("tsne", help="'tsne' or 'umap' (needs umap-learn)."),
    perplexity: float = typer.Option(30.0, help="t-SNE perplexity (below the number of images)."),
    backbone: str = _BACKBONE,
    weights: str = _WEIGHTS,
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: str = _PREPROCESS,
    seed: int = _SEED,
    threads: int = _THREADS,
) -> None:
    """A 2-D map of a layer's features coloured by label (random projection to 512 dims first when
    larger, as DeCAF does)."""
    set_threads(threads)
    maps, prov = layer_maps(data, backbone, weights, [layer], pool, store or out / "store", preprocess)
    fs = maps[layer]
    emb = embed(np.asarray(fs.features), fs.targets, method=method, perplexity=perplexity, random_state=seed)
    plot = {"map": lambda p: plot_embedding(emb, p, class_names=fs.classes, title=f"{layer} ({method})")}
    paths = write_analysis(
        out, f"embed_{layer}_{method}", emb.to_dict(), provenance={**prov, "layer": layer}, plots=plot
    )
    typer.echo(f"wrote {paths['json']} and {paths['map']}")


@analyze_app.command("ablations")
@friendly
def ablations_command(
    data: str = _DATA,
    layers: str = typer.Option("stage4,stage6,head", "--layers", "-l", help="Comma-separated layers."),
    pools: str = typer.Option(ABLATIONS, help="Ablations side by side."),
    probe: str = typer.Option("svm", help="Probe(s) (see deepfeat evaluate)."),
    protocol: str = typer.Option("kshot:30", help="kshot:K, fixed, random:F."),
    splits: int = typer.Option(3, help="Seeded splits."),
    backbone: str = _BACKBONE,
    weights: str = _WEIGHTS,
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: str = _PREPROCESS,
    seed: int = _SEED,
    threads: int = _THREADS,
) -> None:
    """Table 5.1: probe accuracy of unroll / sp-shuffle / sp-max / sp-max-bin / bin per layer, on the
    same splits; the ablations of unrolled maps already in the store are derived without the network."""
    setup_logging(False)
    set_threads(threads)
    opts = JobOptions(
        data=data,
        backbone=backbone,
        weights=weights,
        layers=layers,
        pool=pools,
        probes=probe,
        protocol=protocol,
        splits=splits,
        seed=seed,
        out=out / "ablations",
        store=store or out / "store",
        preprocess=preprocess,
    )
    paths = run_job(opts)
    results = json.loads(Path(paths["results"]).read_text())
    metric = results["primary_metric"]
    table: dict[str, dict[str, dict]] = {}
    for row in results["summary"]:
        layer, _, pool = row["features"].partition("/")
        table.setdefault(layer, {})[f"{pool or 'unroll'} ({row['probe']})"] = row[metric]
    prov = {"results": str(paths["results"]), "metric": metric, "protocol": protocol, "splits": splits}
    out_paths = write_analysis(out, "ablations", {"metric": metric, "table": table}, provenance=prov)
    typer.echo(f"wrote {out_paths['json']}")


@analyze_app.command("checkpoints")
@friendly
def checkpoints_command(
    data: str = _DATA,
    checkpoints: str = typer.Option(..., help="Comma-separated weights files in training order."),
    layers: str = typer.Option("stage4,stage6,head,pool", "--layers", "-l", help="Comma-separated layers."),
    probe: str = typer.Option("svm", help="Probe (see deepfeat evaluate)."),
    backbone: str = _BACKBONE,
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: str = _PREPROCESS,
    seed: int = _SEED,
    threads: int = _THREADS,
) -> None:
    """Probe accuracy of each layer at each checkpoint of a training run (Table 4.1), table and plot."""
    set_threads(threads)
    names = _layers(layers)
    files = [c.strip() for c in checkpoints.split(",") if c.strip()]
    if not files:
        raise ConfigError("--checkpoints names no file")
    provs = {}

    def features(ckpt: str):
        maps, provs[ckpt] = layer_maps(data, backbone, ckpt, names, "avg", store or out / "store", preprocess)
        splits = {}
        for layer, fs in maps.items():
            train, test = _train_test(fs, seed)
            X = np.asarray(fs.features)
            splits[layer] = (X[train], fs.targets[train], X[test], fs.targets[test])
        return splits

    table = layer_accuracy_over_training(
        features, checkpoints=files, layers=names, probe=probe, random_state=seed
    )
    plot = {"curves": lambda p: plot_layer_accuracy(table, p, title="probe accuracy by layer over training")}
    paths = write_analysis(out, "checkpoints", table.to_dict(), provenance=provs, plots=plot)
    typer.echo(f"wrote {paths['json']}")
