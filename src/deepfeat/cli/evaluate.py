"""CLI: the main job. Extract features through the store, train probes under a protocol, write a report."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import typer

from deepfeat.backbones import DEFAULT_BACKBONE, load_backbone
from deepfeat.cli.common import friendly, set_threads, setup_logging
from deepfeat.cli.extract import summary as extraction_summary
from deepfeat.data.datasets import open_dataset
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.data.transforms import preset
from deepfeat.errors import ConfigError, UnknownNameError
from deepfeat.evaluation.evaluate import evaluate
from deepfeat.evaluation.protocols import DomainAdaptation, parse_protocol
from deepfeat.features.activations import LayerActivations
from deepfeat.features.activeness import Activeness
from deepfeat.features.featureset import concat_features, pool_positions
from deepfeat.features.fisher import FisherEncoder
from deepfeat.features.gradients import GradientFeatures
from deepfeat.features.pipeline import extract, load_features
from deepfeat.features.store import FeatureStore
from deepfeat.probes.encoded import EncodedProbe
from deepfeat.probes.linear import PROBES, probe_for
from deepfeat.report.writer import text_table, write_report


@dataclass
class JobOptions:
    """Everything the evaluate job needs (the CLI options, as one object)."""

    data: str
    target: str | None = None
    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    layers: str = "pool"
    pool: str = "avg"
    method: str = "activations"
    probes: str | None = None  # None: svm,logreg (activations) or ksvm (gradient)
    kernel_normalize: str = "factors"
    forms: str = "factored,input,preact"  # gradient feature forms (--method gradient)
    configs: str = "last,next"  # InterActive configurations (--method interactive)
    norms: str = "1,2"  # InterActive score norms p
    concat: bool = False  # also evaluate the concatenation of all layers
    components: int = 32  # Fisher vectors: GMM components (--method fisher)
    pca_dim: int | None = 64  # Fisher vectors: PCA dimension of the descriptors
    scales: str | None = None  # Fisher vectors: input sides (crop sizes) whose descriptors are pooled
    protocol: str = "kshot:30"
    splits: int = 5
    seed: int = 0
    dropout: float = 0.0
    normalize: bool = False
    out: Path = Path("deepfeat-out")
    store: Path | None = None
    preprocess: str = "backbone"
    batch_size: int = 32
    on_bad_image: str = "skip"
    max_pixels: int = DEFAULT_MAX_PIXELS
    no_extract: bool = False


def _features(dataset, bb, methods, opts: JobOptions, store: FeatureStore, echo):
    if opts.method == "fisher" and opts.scales:
        return _multiscale(dataset, bb, methods, opts, store, echo)
    return _extract(dataset, bb, methods, opts, store, echo, opts.preprocess)


def _multiscale(dataset, bb, methods, opts: JobOptions, store: FeatureStore, echo):
    """Unrolled maps at every scale (each its own store entry), pooled into one descriptor set."""
    base = preset(opts.preprocess, bb.preprocess)
    try:
        sides = [int(x) for x in opts.scales.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"--scales takes comma-separated input sides in pixels, got {opts.scales!r}"
        ) from None
    if not sides or min(sides) < 32:
        raise ConfigError(f"--scales takes input sides of 32 pixels or more, got {opts.scales!r}")
    per_scale = []
    for side in sides:
        if base.crop is not None:
            prep = replace(base, size=max(side, round(base.size * side / base.crop)), crop=side)
        else:
            prep = replace(base, size=side)
        per_scale.append(_extract(dataset, bb, methods, opts, store, echo, prep))
    return {key: pool_positions([f[key] for f in per_scale], key) for key in per_scale[0]}


def _extract(dataset, bb, methods, opts: JobOptions, store: FeatureStore, echo, preprocess):
    if opts.no_extract:
        return load_features(dataset, bb, methods, store, preprocess=preprocess, max_pixels=opts.max_pixels)
    result = extract(
        dataset,
        bb,
        methods,
        store=store,
        preprocess=preprocess,
        batch_size=opts.batch_size,
        on_error=opts.on_bad_image,
        max_pixels=opts.max_pixels,
        progress=True,
    )
    echo(extraction_summary(result))
    return result.features


METHODS = ("activations", "gradient", "interactive", "fisher")


def make_methods(opts: JobOptions) -> list:
    """The feature methods of the job: DeCAF layer activations; Deep Fishing gradients (factored, with
    the forward baselines x_{k-1} and y_k); or InterActive (average and max pooling of the original
    responses, and activeness-weighted averages for each configuration and p: the poster's rows)."""
    if opts.method == "activations":
        return [LayerActivations(opts.layers, opts.pool, random_state=opts.seed)]
    if opts.method == "gradient":
        return [GradientFeatures(opts.layers, forms=opts.forms)]
    if opts.method == "fisher":  # the descriptors: unrolled maps; FVs are fitted per split in the probe
        return [LayerActivations(opts.layers, "unroll")]
    if opts.method == "interactive":
        methods: list = [LayerActivations(opts.layers, "avg,max")]
        for config in [c.strip() for c in opts.configs.split(",") if c.strip()]:
            for p in [x.strip() for x in opts.norms.split(",") if x.strip()]:
                if p not in ("1", "2"):
                    raise ConfigError(f"--p takes 1 and/or 2, got {p!r}")
                methods.append(Activeness(opts.layers, config=config, p=int(p)))
        return methods
    raise UnknownNameError("feature method", opts.method, METHODS)


def with_concatenations(features: dict, methods: list, all_layers: bool = False) -> dict:
    """Add the x_{k-1};y_k concatenation next to each layer's gradient (Deep Fishing Table 1) and,
    with ``all_layers``, the concatenation of every layer for each kind of feature (InterActive's
    pool-1 .. fc-6 concatenation)."""
    out = dict(features)
    if any(isinstance(m, GradientFeatures) for m in methods):
        out = {}
        for key, fs in features.items():
            out[key] = fs
            layer, _, kind = key.partition("/")
            if kind == "y" and f"{layer}/x_in" in features:
                out[f"{layer}/x_in;y"] = concat_features([features[f"{layer}/x_in"], fs], f"{layer}/x_in;y")
    if all_layers:
        groups: dict[str, list] = {}
        for key, fs in features.items():
            layer, _, kind = key.partition("/")
            if fs.provenance.get("form") != "factored":
                groups.setdefault(kind or "unroll", []).append(fs)
        for kind, sets in groups.items():
            if len(sets) > 1:
                out[f"concat/{kind}"] = concat_features(sets, f"concat/{kind}")
    return out


def run_job(opts: JobOptions, echo=typer.echo) -> dict:
    """Extract, evaluate and report; returns the paths written."""
    protocol = parse_protocol(opts.protocol, n_splits=opts.splits, random_state=opts.seed)
    is_da = isinstance(protocol, DomainAdaptation)
    if is_da != (opts.target is not None):
        raise ConfigError("--target TARGET_DATA goes with --protocol da (and only with it)")
    names = opts.probes or ("ksvm" if opts.method == "gradient" else "svm,logreg")
    probes = {
        name: probe_for(
            name,
            dropout=opts.dropout,
            normalize=opts.normalize,
            kernel_normalize=opts.kernel_normalize,
            random_state=opts.seed,
        )
        for name in [p.strip() for p in names.split(",") if p.strip()]
    }
    if not probes:
        raise ConfigError(f"no probe given; valid: {', '.join(PROBES)}")
    if opts.method == "fisher":
        encoder = FisherEncoder(
            n_components=opts.components, pca_dim=opts.pca_dim, random_state=opts.seed, progress=False
        )
        probes = {f"fv{opts.components}+{name}": EncodedProbe(encoder, p) for name, p in probes.items()}
    for probe in probes.values():
        probe._validate_params()
    dataset = open_dataset(opts.data)
    echo(dataset.summary())
    target_ds = open_dataset(opts.target) if opts.target else None
    if target_ds is not None:
        echo(target_ds.summary())
    bb = load_backbone(opts.backbone, weights=opts.weights)
    methods = make_methods(opts)
    for method in methods:
        method.outputs(bb)  # validate layer and pooling names before any work
    out = Path(opts.out)
    store = FeatureStore(opts.store or out / "store")
    features = with_concatenations(_features(dataset, bb, methods, opts, store, echo), methods, opts.concat)
    target = None
    if target_ds is not None:
        target_features = _features(target_ds, bb, methods, opts, store, echo)
        target = with_concatenations(target_features, methods, opts.concat)
    result = evaluate(features, protocol, probes, target=target, checkpoint=out / "checkpoint.jsonl")
    context = {
        "data": f"{dataset.name} ({len(dataset)} items, {len(dataset.classes)} classes)",
        "dataset fingerprint": dataset.fingerprint()[:16],
        "backbone": f"{bb.name} (weights {bb.weights_id[:23]})",
        "preprocessing": opts.preprocess,
        "method": opts.method,
    }
    if target_ds is not None:
        context["target"] = f"{target_ds.name} ({len(target_ds)} items)"
    paths = write_report(result, out, title=f"deepfeat evaluation: {dataset.name}", context=context)
    echo("")
    echo(f"{result.primary_metric} (%), mean ± std over {len(result.splits)} splits:")
    echo(text_table(result))
    echo(f"results: {paths['results']}\nreport:  {paths['report']}")
    return paths


@friendly
def evaluate_command(
    data: str = typer.Argument(..., help="'digits', a class-per-folder tree, or a .csv/.jsonl manifest."),
    target: str = typer.Option(None, help="Target-domain data for --protocol da."),
    backbone: str = typer.Option(DEFAULT_BACKBONE, "--backbone", "-b", help="Backbone name."),
    weights: str = typer.Option(None, help="Weights file (default: the backbone's own)."),
    layers: str = typer.Option("pool", "--layers", "-l", help="Comma-separated layer names."),
    pool: str = typer.Option("avg", "--pool", "-p", help="Comma-separated poolings / ablations."),
    method: str = typer.Option(
        "activations",
        "--method",
        "-m",
        help="'activations' (DeCAF layers), 'gradient' (Deep Fishing dE/dW of each layer's weight "
        "layer, kept factored, with the x_in, y and x_in;y baselines), 'interactive' (avg and max "
        "pooling plus activeness-weighted averages per --config and --p; use --preprocess interactive) "
        "or 'fisher' (Fisher vectors of each conv layer's descriptors, GMM fitted per split).",
    ),
    forms: str = typer.Option(
        "factored,input,preact",
        help="Gradient forms: factored (kernel probe), explicit (materialised, small layers; linear "
        "probes), input (x_in), preact (y).",
    ),
    config: str = typer.Option("last,next", help="InterActive configurations: last and/or next."),
    p: str = typer.Option("1,2", "--p", help="InterActive score norms: 1 and/or 2."),
    concat: bool = typer.Option(False, help="Also evaluate the concatenation of all layers."),
    components: int = typer.Option(32, help="Fisher vectors (--method fisher): GMM components."),
    pca_dim: int = typer.Option(64, help="Fisher vectors: PCA dimension of the descriptors (0: none)."),
    scales: str = typer.Option(
        None, help="Fisher vectors: input sides, e.g. 224,320: descriptors of every scale pooled per image."
    ),
    probe: str = typer.Option(
        None,
        help="Comma-separated: svm, svm-hinge, logreg, logreg-ovr, ksvm (default: svm,logreg; ksvm "
        "with --method gradient).",
    ),
    kernel_normalize: str = typer.Option(
        "factors", help="Kernel probe normalisation: factors, gradient or none."
    ),
    protocol: str = typer.Option("kshot:30", help="kshot:K, fixed, random:FRACTION or da[:KS:KT]."),
    splits: int = typer.Option(5, help="Number of seeded splits (k-shot, random, da)."),
    seed: int = typer.Option(0, help="Seed of the first split (the others follow)."),
    dropout: float = typer.Option(0.0, help="DeCAF dropout on features (0.5 in the thesis)."),
    normalize: bool = typer.Option(False, help="L2-normalise feature vectors before the probe."),
    out: Path = typer.Option(Path("deepfeat-out"), "--out", "-o", help="Output folder."),
    store: Path = typer.Option(None, help="Feature store (default: OUT/store)."),
    preprocess: str = typer.Option(
        "backbone", help="'backbone', 'decaf' or 'interactive' (area about 512^2, aspect kept, sides x32)."
    ),
    batch_size: int = typer.Option(32, help="Images per forward pass."),
    on_bad_image: str = typer.Option("skip", help="'skip' or 'fail'."),
    no_extract: bool = typer.Option(False, help="Use only features already in the store."),
    threads: int = typer.Option(None, help="Torch CPU threads."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Transfer evaluation: features through the store, probes under a protocol, results.json + report.md."""
    setup_logging(verbose)
    set_threads(threads)
    run_job(
        JobOptions(
            data=data,
            target=target,
            backbone=backbone,
            weights=weights,
            layers=layers,
            pool=pool,
            method=method,
            forms=forms,
            configs=config,
            norms=p,
            concat=concat,
            components=components,
            pca_dim=pca_dim or None,
            scales=scales,
            probes=probe,
            kernel_normalize=kernel_normalize,
            protocol=protocol,
            splits=splits,
            seed=seed,
            dropout=dropout,
            normalize=normalize,
            out=out,
            store=store,
            preprocess=preprocess,
            batch_size=batch_size,
            on_bad_image=on_bad_image,
            no_extract=no_extract,
        )
    )
