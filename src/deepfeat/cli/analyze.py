"""CLI: ``deepfeat analyze ...``: what layers encode (Agrawal's report, DeCAF's t-SNE), as JSON + PNG.

Every command extracts what it needs through the feature store (nothing is recomputed on a rerun) and
writes ``<analysis>.json`` (results and provenance) with its plots into ``--out``.
"""

from __future__ import annotations

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
)
from deepfeat.analysis.ablations import ABLATIONS, ablation_table
from deepfeat.analysis.entropy import ENTROPY_METHODS
from deepfeat.analysis.layers import layer_features, map_shape, train_test_rows
from deepfeat.analysis.similarity import METHODS as SIMILARITY_METHODS
from deepfeat.analysis.similarity import layer_representations, plot_similarity, similarity_matrix
from deepfeat.backbones import DEFAULT_BACKBONE, load_backbone
from deepfeat.cli.common import THREADS, friendly, set_threads, setup_logging
from deepfeat.cli.parsing import PreprocessName, names, protocol
from deepfeat.data.datasets import DATA_SPELLINGS
from deepfeat.errors import ConfigError
from deepfeat.evaluation import ActivationsRecipe, EvaluationJob, write_report
from deepfeat.evaluation.result import format_score
from deepfeat.fileio import check_output_dir
from deepfeat.report.tables import text_table
from deepfeat.report.writer import write_result
from deepfeat.validation import check_choice

analyze_app = typer.Typer(
    help="Analyses of what layers encode, each written as JSON + PNG plots.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

_DATA = typer.Argument(..., help=DATA_SPELLINGS)
_BACKBONE = typer.Option(DEFAULT_BACKBONE, "--backbone", "-b", help="Backbone name.")
_WEIGHTS = typer.Option(None, help="Weights file (default: the backbone's own); fine-tuned checkpoints work.")
_OUT = typer.Option(Path("deepfeat-analysis"), "--out", "-o", help="Output folder.")
_STORE = typer.Option(None, help="Feature store (default: OUT/store).")
_PREPROCESS = typer.Option(PreprocessName.backbone, help="Input preprocessing.")
_SEED = typer.Option(0, help="Seed of every random choice.")


def _maps(data, layers, pool, backbone, weights, out, store, preprocess, min_classes=2):
    check_output_dir(out, "--out")
    maps, prov = layer_features(
        data,
        layers,
        pool,
        backbone=backbone,
        weights=weights,
        store=store or out / "store",
        preprocess=preprocess.value,
        min_classes=min_classes,
    )
    _echo_skipped(prov["failures"])
    return maps, prov


#: skipped files listed on the terminal (all of them are in the result's provenance)
SKIPPED_LISTED = 20


def _echo_skipped(failures) -> None:
    """The files the extraction could not use, as deepfeat extract lists them."""
    if failures:
        typer.echo(f"skipped {len(failures)} files (left out of the analysis):")
        for path, reason in failures[:SKIPPED_LISTED]:
            typer.echo(f"  {path}: {reason}")
        if len(failures) > SKIPPED_LISTED:
            typer.echo(f"  ... {len(failures) - SKIPPED_LISTED} more in the result's provenance")


@analyze_app.command("entropy")
@friendly
def entropy_command(
    data: str = _DATA,
    layers: str = typer.Option("stage4,stage6,head", "--layers", "-l", help="Comma-separated layers."),
    methods: str = typer.Option("label,weighted,spmax", help="Entropy methods: label, weighted, spmax."),
    thresholds: int = typer.Option(100, min=2, help="Threshold levels per filter."),
    after: str = typer.Option(None, help="Weights of a second network (e.g. fine-tuned) to compare with."),
    backbone: str = _BACKBONE,
    weights: str = _WEIGHTS,
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: PreprocessName = _PREPROCESS,
    threads: int = THREADS,
) -> None:
    """Filter entropy curves, AuE histograms and MCAuE curves per layer (and the percent decrease of
    MCAuE at 0.1/0.25/0.5/1.0 of the filters between two networks with --after, Table 2.1)."""
    set_threads(threads)
    layer_names = names(layers, "--layers")
    wanted = tuple(check_choice("entropy method", m, ENTROPY_METHODS) for m in names(methods, "--methods"))
    if after is not None:  # a bad --after file is refused before the first network's work, not after it
        load_backbone(backbone, weights=after)
    networks = {"before": weights, "after": after} if after is not None else {"network": weights}
    aue: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    result, provs, skipped = {}, {}, []
    for net, w in networks.items():
        maps, provs[net] = _maps(data, layer_names, "unroll", backbone, w, out, store, preprocess)
        for layer, fs in maps.items():
            usable = wanted
            if "weighted" in wanted and np.asarray(fs.features).min() < 0:
                # residual and linear outputs go negative: score weights are defined for responses >= 0
                usable = tuple(m for m in wanted if m != "weighted")
                skipped.append(f"{net}/{layer}: weighted entropy needs non-negative responses; skipped")
                typer.echo(skipped[-1])
            if not usable:
                continue
            curves = layer_entropy(
                fs.features,
                fs.targets,
                methods=usable,
                layer_shape=map_shape(fs),
                thresholds=thresholds,
                progress=True,
            )
            result.setdefault(net, {})[layer] = {
                m: _named(c.to_dict(curves=False), fs.classes) for m, c in curves.items()
            }
            for m, c in curves.items():
                aue.setdefault(m, {}).setdefault(layer, {})[net] = c.aue
    if not aue:
        raise ConfigError(
            f"nothing to compute: weighted entropy needs non-negative responses, and layer(s) "
            f"{', '.join(layer_names)} have negative ones (outputs before an activation); add label or "
            "spmax to --methods, or choose layers after a ReLU"
        )
    result["skipped"] = skipped
    if after is not None:
        both = {m: {layer: v for layer, v in per.items() if len(v) == 2} for m, per in aue.items()}
        before = {
            layer: {m: both[m][layer]["before"] for m in both if layer in both[m]} for layer in layer_names
        }
        later = {
            layer: {m: both[m][layer]["after"] for m in both if layer in both[m]} for layer in layer_names
        }
        result["percent_decrease"] = percent_decrease_table(before, later)
    plots = {}
    for m, per_layer in aue.items():
        plots[f"aue_hist_{m}"] = lambda p, d=per_layer, m=m: plot_aue_histograms(d, p, title=f"AuE ({m})")
        plots[f"mcaue_{m}"] = lambda p, d=per_layer, m=m: plot_mcaue_curves(d, p, title=f"MCAuE ({m})")
    paths = write_result(out, "entropy", result, provenance=provs, plots=plots)
    typer.echo(f"wrote {paths['json']} and {len(plots)} plots")


def _named(result: dict, names) -> dict:
    """``result`` with its class labels (indices into ``names``, the dataset's classes) as names: the
    "classes" list and the "class" of each row of a "table"."""
    out = dict(result)
    if "classes" in out:
        out["classes"] = [names[int(c)] for c in out["classes"]]
    if "table" in out:
        out["table"] = [{**row, "class": names[int(row["class"])]} for row in out["table"]]
    return out


@analyze_app.command("selectivity")
@friendly
def selectivity_command(
    data: str = _DATA,
    layer: str = typer.Option("head", "--layer", "-l", help="One layer."),
    top: int = typer.Option(5, min=1, help="Top filters per class to plot."),
    backbone: str = _BACKBONE,
    weights: str = _WEIGHTS,
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: PreprocessName = _PREPROCESS,
    threads: int = THREADS,
) -> None:
    """Grandmother cells: precision P(class | activity >= t) per filter and class, its area, the top
    filters per class with their precision curves."""
    set_threads(threads)
    maps, prov = _maps(data, [layer], "unroll", backbone, weights, out, store, preprocess)
    fs = maps[layer]
    curves = precision_curves(
        fs.features, fs.targets, layer_shape=map_shape(fs), spatial="max", progress=True
    )
    result = {
        "top_filters": curves.top_filters(top).tolist(),
        "area": curves.area.tolist(),
        "classes": fs.classes,
    }
    plot = {"precision": lambda p: plot_precision_curves(curves, p, top=top, class_names=fs.classes)}
    paths = write_result(out, f"selectivity_{layer}", result, provenance={**prov, "layer": layer}, plots=plot)
    typer.echo(f"wrote {paths['json']} and {paths['precision']}")


@analyze_app.command("filters")
@friendly
def filters_command(
    data: str = _DATA,
    layer: str = typer.Option("head", "--layer", "-l", help="One layer."),
    C: float = typer.Option(1.0, "--C", min=0.0, help="SVM regularisation constant."),
    backbone: str = _BACKBONE,
    weights: str = _WEIGHTS,
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: PreprocessName = _PREPROCESS,
    seed: int = _SEED,
    threads: int = THREADS,
) -> None:
    """Filters needed per class: SVM on spatial-max features, filters ranked by |weight|, retrained on
    the top k; the k reaching 50% and 90% of the full AP (Table 3.1) and the top-50 overlap (Fig 3-5)."""
    set_threads(threads)
    maps, prov = _maps(data, [layer], "max", backbone, weights, out, store, preprocess)
    fs = maps[layer]
    train, test = train_test_rows(fs, seed)
    X = np.asarray(fs.features)
    res = filters_needed(
        X[train], fs.targets[train], X[test], fs.targets[test], C=C, random_state=seed, progress=True
    )
    plots = {
        "ap_by_k": lambda p: plot_filters_needed(res, p, class_names=fs.classes),
        "overlap": lambda p: plot_filter_overlap(res, p, class_names=fs.classes),
    }
    prov = {**prov, "layer": layer, "C": C, "n_train": len(train), "n_test": len(test), "seed": seed}
    paths = write_result(
        out, f"filters_{layer}", _named(res.to_dict(), fs.classes), provenance=prov, plots=plots
    )
    for row in _named({"table": res.table()}, fs.classes)["table"]:
        typer.echo("  ".join(f"{k}={v}" for k, v in row.items()))
    typer.echo(f"wrote {paths['json']} and {', '.join(str(paths[k]) for k in plots)}")


@analyze_app.command("embed")
@friendly
def embed_command(
    data: str = _DATA,
    layer: str = typer.Option("pool", "--layer", "-l", help="One layer."),
    pool: str = typer.Option("avg", help="Pooling of spatial layers (avg, max, unroll)."),
    method: str = typer.Option("tsne", help="'tsne' or 'umap' (needs umap-learn)."),
    perplexity: float = typer.Option(30.0, min=1.0, help="t-SNE perplexity (below the number of images)."),
    backbone: str = _BACKBONE,
    weights: str = _WEIGHTS,
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: PreprocessName = _PREPROCESS,
    seed: int = _SEED,
    threads: int = THREADS,
) -> None:
    """A 2-D map of a layer's features coloured by label (random projection to 512 dims first when
    larger, as DeCAF does)."""
    set_threads(threads)
    maps, prov = _maps(data, [layer], pool, backbone, weights, out, store, preprocess, min_classes=1)
    fs = maps[layer]
    emb = embed(np.asarray(fs.features), fs.targets, method=method, perplexity=perplexity, random_state=seed)
    plot = {"map": lambda p: plot_embedding(emb, p, class_names=fs.classes, title=f"{layer} ({method})")}
    # named by the features (layer and pooling: 'stage6-max'), so other poolings do not overwrite it
    name = f"embed_{fs.key.replace('/', '-')}_{method}"
    paths = write_result(out, name, emb.to_dict(), provenance={**prov, "layer": layer}, plots=plot)
    typer.echo(f"wrote {paths['json']} and {paths['map']}")


@analyze_app.command("ablations")
@friendly
def ablations_command(
    data: str = _DATA,
    layers: str = typer.Option("stage4,stage6,head", "--layers", "-l", help="Comma-separated layers."),
    pools: str = typer.Option(",".join(ABLATIONS), help="Ablations side by side."),
    probe: str = typer.Option("svm", help="Probes: svm, svm-hinge, logreg, logreg-ovr, ksvm."),
    protocol_name: str = typer.Option("kshot:30", "--protocol", help="kshot:K, fixed, random:F."),
    splits: int = typer.Option(None, help="Seeded splits (kshot, random; default 3).", show_default=False),
    backbone: str = _BACKBONE,
    weights: str = _WEIGHTS,
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: PreprocessName = _PREPROCESS,
    seed: int = _SEED,
    threads: int = THREADS,
) -> None:
    """Table 5.1: probe accuracy of unroll / sp-shuffle / sp-max / sp-max-bin / bin per layer, on the
    same splits; the ablations of unrolled maps already in the store are derived without the network."""
    setup_logging(False)
    set_threads(threads)
    job = EvaluationJob(
        data,
        recipe=ActivationsRecipe(names(layers, "--layers"), pool=names(pools, "--pools"), random_state=seed),
        protocol=protocol(protocol_name, n_splits=splits, seed=seed, default_splits=3),
        probes=names(probe, "--probe"),
        backbone=backbone,
        weights=weights,
        preprocess=preprocess.value,
        store=store or out / "store",
        out=out / "ablations",
        seed=seed,
    )
    check_output_dir(out, "--out")
    result, table = ablation_table(job)
    report = write_report(result, out / "ablations", title="Ablations (Agrawal Table 5.1)")
    prov = {"results": str(report["results"]), "protocol": protocol_name, "splits": result.splits_per_cell}
    paths = write_result(out, "ablations", table, provenance=prov)
    columns = list(dict.fromkeys(c for row in table["table"].values() for c in row))
    n = result.splits_per_cell
    rows = [[layer] + [format_score(row.get(c), n) for c in columns] for layer, row in table["table"].items()]
    typer.echo(
        f"{table['metric']} (%), " + (f"mean ± std over {result.splits_text()}:" if n != 1 else "one split:")
    )
    typer.echo(text_table(rows, ["layer", *columns]))
    typer.echo(f"wrote {paths['json']}; report and plots in {out / 'ablations'}")


@analyze_app.command("checkpoints")
@friendly
def checkpoints_command(
    data: str = _DATA,
    checkpoints: str = typer.Option(..., help="Comma-separated weights files in training order."),
    layers: str = typer.Option("stage4,stage6,head,pool", "--layers", "-l", help="Comma-separated layers."),
    probe: str = typer.Option("svm", help="Probe: svm, svm-hinge, logreg, logreg-ovr, ksvm."),
    backbone: str = _BACKBONE,
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: PreprocessName = _PREPROCESS,
    seed: int = _SEED,
    threads: int = THREADS,
) -> None:
    """Probe accuracy of each layer at each checkpoint of a training run (Table 4.1), table and plot."""
    set_threads(threads)
    layer_names = names(layers, "--layers")
    files = names(checkpoints, "--checkpoints")
    provs = {}

    def features(ckpt: str):
        maps, provs[ckpt] = _maps(data, layer_names, "avg", backbone, ckpt, out, store, preprocess)
        splits = {}
        for layer, fs in maps.items():
            train, test = train_test_rows(fs, seed)
            X = np.asarray(fs.features)
            splits[layer] = (X[train], fs.targets[train], X[test], fs.targets[test])
        return splits

    table = layer_accuracy_over_training(
        features, checkpoints=files, layers=layer_names, probe=probe, random_state=seed
    )
    plot = {"curves": lambda p: plot_layer_accuracy(table, p, title="probe accuracy by layer over training")}
    paths = write_result(out, "checkpoints", table.to_dict(), provenance=provs, plots=plot)
    rows = [
        [layer] + ["-" if np.isnan(v) else f"{100 * v:.2f}" for v in row]
        for layer, row in zip(table.layers, table.scores)
    ]
    typer.echo(f"{table.metric} (%) by layer at each checkpoint:")
    typer.echo(text_table(rows, ["layer", *(Path(c).name for c in table.checkpoints)]))
    typer.echo(f"wrote {paths['json']} and its plot")


@analyze_app.command("similarity")
@friendly
def similarity_command(
    data: str = _DATA,
    layers: str = typer.Option("stage4,stage6,head,pool", "--layers", "-l", help="Comma-separated layers."),
    backbones: str = typer.Option(
        DEFAULT_BACKBONE,
        "--backbones",
        "-b",
        help="Comma-separated backbones (layers are compared across them).",
    ),
    weights: str = typer.Option(None, help="Comma-separated weights, one per backbone (default: their own)."),
    methods: str = typer.Option(
        "cka,cka-debiased,rsa-spearman", help=f"Of: {', '.join(SIMILARITY_METHODS)}."
    ),
    pool: str = typer.Option("avg", help="Pooling of spatial layers (avg, max, unroll)."),
    max_items: int = typer.Option(2000, min=3, help="Images used by RSA (a seeded subset beyond that)."),
    out: Path = _OUT,
    store: Path = _STORE,
    preprocess: PreprocessName = _PREPROCESS,
    seed: int = _SEED,
    threads: int = THREADS,
) -> None:
    """Representational similarity (linear CKA, debiased CKA, RSA) between layers and networks on the same
    images: JSON with the matrices and a heatmap per method."""
    set_threads(threads)
    nets = names(backbones, "--backbones")
    wanted = names(methods, "--methods")
    for method in wanted:
        check_choice("similarity method (--methods)", method, SIMILARITY_METHODS)
    check_output_dir(out, "--out")
    reps, prov = layer_representations(
        data,
        names(layers, "--layers"),
        backbones=nets,
        weights=None if weights is None else [None if w in ("", "-") else w for w in weights.split(",")],
        pool=pool,
        store=store or out / "store",
        preprocess=preprocess.value,
    )
    result = similarity_matrix(reps, wanted, max_items=max_items, random_state=seed)
    plot = {"heatmap": lambda p: plot_similarity(result, p)}
    paths = write_result(out, "similarity", result.to_dict(), provenance=prov, plots=plot)
    for method, matrix in result.matrices.items():
        typer.echo(f"{method}:")
        rows = [[name, *[f"{v:.3f}" for v in row]] for name, row in zip(result.names, matrix)]
        typer.echo(text_table(rows, ["", *result.names]))
    typer.echo(f"wrote {paths['json']} and {paths['heatmap']}")
