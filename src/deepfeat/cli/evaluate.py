"""CLI: ``deepfeat evaluate``: parse the options into an EvaluationJob, run it, write and print."""

from __future__ import annotations

from pathlib import Path

import typer

from deepfeat.backbones import DEFAULT_BACKBONE
from deepfeat.cli.common import (
    AMP,
    CLUSTER,
    DEVICE,
    LOADER,
    THREADS,
    VERBOSE,
    friendly,
    set_threads,
    setup_logging,
)
from deepfeat.cli.parsing import (
    KernelNormalize,
    Loader,
    Method,
    OnBadImage,
    PreprocessName,
    ints,
    names,
    protocol,
)
from deepfeat.data.datasets import DATA_SPELLINGS
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.errors import ConfigError
from deepfeat.evaluation import (
    ActivationsRecipe,
    EvaluationJob,
    EvaluationResult,
    ExtractionOptions,
    FisherRecipe,
    GradientRecipe,
    InteractiveRecipe,
    Recipe,
    run,
    write_report,
)
from deepfeat.fileio import check_output_dir
from deepfeat.report.tables import text_table

#: the recipe options' values when not given (the command line's defaults)
OPTION_DEFAULTS = {
    "--pool": ["avg"],
    "--concat": False,
    "--forms": ["factored", "input", "output"],
    "--config": ["last", "next"],
    "--p": [1, 2],
    "--collect": ["weighted"],
    "--components": 32,
    "--pca-dim": 64,
    "--scales": None,
}
#: the recipe options each --method reads
METHOD_OPTIONS = {
    Method.activations: {"--pool", "--concat"},
    Method.gradient: {"--forms"},
    Method.interactive: {"--config", "--p", "--collect", "--concat"},
    Method.fisher: {"--components", "--pca-dim", "--scales"},
}


def make_recipe(
    method: Method,
    layers: list[str],
    *,
    pool: list[str] | None = None,
    forms: list[str] | None = None,
    configs: list[str] | None = None,
    norms: list[int] | None = None,
    collections: list[str] | None = None,
    concat: bool = False,
    components: int = 32,
    pca_dim: int | None = 64,
    scales: list[int] | None = None,
    kernel_normalize: str = "factors",
    seed: int = 0,
) -> Recipe:
    """The recipe an option set names (the CLI's only switch on the method); options of another
    method are refused, not ignored."""
    values = {
        "--pool": pool,
        "--concat": concat,
        "--forms": forms,
        "--config": configs,
        "--p": norms,
        "--collect": collections,
        "--components": components,
        "--pca-dim": pca_dim,
        "--scales": scales,
    }
    unused = [
        name
        for name, value in values.items()
        if value not in (None, OPTION_DEFAULTS[name]) and name not in METHOD_OPTIONS[method]
    ]
    if unused:
        owners = [m.value for m in Method if set(unused) & METHOD_OPTIONS[m]]
        raise ConfigError(
            f"{', '.join(unused)}: not options of --method {method.value} (they belong to --method "
            f"{' / '.join(owners)}); leave them out or choose that method"
        )
    if method is Method.gradient:
        return GradientRecipe(layers, forms=forms or GradientRecipe.forms, kernel_normalize=kernel_normalize)
    if method is Method.interactive:
        return InteractiveRecipe(
            layers,
            configs=configs or ("last", "next"),
            norms=norms or (1, 2),
            collections=collections or ("weighted",),
            concat=concat,
        )
    if method is Method.fisher:
        return FisherRecipe(layers, components=components, pca_dim=pca_dim, scales=scales, random_state=seed)
    return ActivationsRecipe(layers, pool=pool or ["avg"], concat=concat, random_state=seed)


def run_and_report(job: EvaluationJob, title: str | None = None) -> tuple[EvaluationResult, dict]:
    """Run ``job`` with progress on the terminal, write its report into ``job.out``, print the table."""
    out = check_output_dir(job.out or "deepfeat-out", "--out")
    result = run(job, progress=True, echo=typer.echo)
    prov = result.provenance
    context = {
        "data": f"{prov['data']} ({prov['n_items']} items, {len(result.classes)} classes)",
        "dataset fingerprint": result.provenance["dataset_fingerprint"][:16],
        "backbone": f"{result.provenance['backbone']} (weights {result.provenance['weights_id'][:23]})",
        "preprocessing": job.preprocess or job.recipe.default_preprocess,
        "features": job.recipe.name,
    }
    if result.provenance.get("target"):
        context["target"] = result.provenance["target"]
    title = title or f"deepfeat evaluation: {result.provenance['data']}"
    paths = write_report(result, out, title=title, context=context)
    typer.echo("")
    over = f"mean ± std over {result.splits_text()}" if result.splits_per_cell != 1 else "one split"
    typer.echo(f"{result.primary_metric} (%), {over}:")
    header, rows = result.table()
    typer.echo(text_table(rows, header))
    for note, n in result.c_notes().items():
        typer.echo(f"note: C was not searched in {n} of {len(result.records)} fits ({note}); fallback C used")
    typer.echo(f"results: {paths['results']}\nreport:  {paths['report']} and {paths['report_html']}")
    return result, paths


@friendly
def evaluate_command(
    data: str = typer.Argument(..., help=DATA_SPELLINGS),
    target: str = typer.Option(None, help="Target-domain data for --protocol da."),
    backbone: str = typer.Option(DEFAULT_BACKBONE, "--backbone", "-b", help="Backbone name."),
    weights: str = typer.Option(None, help="Weights file (default: the backbone's own)."),
    layers: str = typer.Option("pool", "--layers", "-l", help="Comma-separated layer names."),
    pool: str = typer.Option(
        "avg", "--pool", "-p", help="Comma-separated: avg, max, unroll, sp-shuffle, sp-max, bin, sp-max-bin."
    ),
    method: Method = typer.Option(
        Method.activations,
        "--method",
        "-m",
        help="activations (DeCAF layers), gradient (Deep Fishing dE/dW of each layer's weight layer, "
        "kept factored, with the x_in, x_out and x_in;x_out baselines of Table 1), interactive (avg and "
        "max pooling plus "
        "activeness-weighted averages per --config and --p; about 512^2 inputs) or fisher (Fisher "
        "vectors of each conv layer's descriptors, GMM fitted per split).",
    ),
    forms: str = typer.Option(
        "factored,input,output",
        help="Gradient forms: factored (kernel probe), explicit (materialised, small layers; linear "
        "probes), input (x_in), output (x_out: the layer's output after its non-linearity; y at the "
        "output layer), preact (y: the weight layer's output).",
    ),
    config: str = typer.Option("last,next", help="InterActive configurations: last and/or next."),
    p: str = typer.Option("1,2", "--p", help="InterActive score norms: 1 and/or 2."),
    collect: str = typer.Option(
        "weighted",
        help="InterActive collection of connection activeness: weighted (gamma = d ln f / dX) and/or "
        "unweighted (summed d ln f / dZ of the units a neuron feeds: per-position weights).",
    ),
    concat: bool = typer.Option(False, "--concat", help="Also evaluate the concatenation of all layers."),
    components: int = typer.Option(32, min=1, help="Fisher vectors (--method fisher): GMM components."),
    pca_dim: int = typer.Option(
        64, min=0, help="Fisher vectors: PCA dimension of the descriptors (0: none)."
    ),
    scales: str = typer.Option(
        None, help="Fisher vectors: input sides, e.g. 224,320: descriptors of every scale pooled per image."
    ),
    probe: str = typer.Option(
        None,
        help="Comma-separated: svm, svm-hinge, logreg, logreg-ovr, ksvm (default: svm,logreg; ksvm "
        "with --method gradient).",
    ),
    kernel_normalize: KernelNormalize = typer.Option(
        None,
        help="The ksvm probe's normalisation: gradient (rows L2-normalised: for gradient features the "
        "L2-normalised dE/dW; the default), factors (gradient features: each factor L2-normalised, equal "
        "to gradient for fully connected layers; other features: as gradient) or none.",
        show_default=False,
    ),
    protocol_name: str = typer.Option(
        "kshot:30", "--protocol", help="kshot:K, fixed, random:FRACTION, da[:KS:KT] or da:office31."
    ),
    splits: int = typer.Option(
        None, help="Number of seeded splits (k-shot, random, da; default 5).", show_default=False
    ),
    seed: int = typer.Option(0, help="Seed of the first split (the others follow)."),
    dropout: float = typer.Option(
        0.0, min=0.0, max=0.99, help="DeCAF dropout on features (0.5 in the thesis)."
    ),
    normalize: bool = typer.Option(
        None,
        "--normalize/--no-normalize",
        help="L2-normalise feature vectors before the probe (default: on for --method interactive, "
        "whose activeness rows are rescaled image by image; off otherwise).",
        show_default=False,
    ),
    out: Path = typer.Option(Path("deepfeat-out"), "--out", "-o", help="Output folder (results, report)."),
    store: Path = typer.Option(None, help="Feature store (default: OUT/store)."),
    preprocess: PreprocessName = typer.Option(
        None,
        help="Input preprocessing: backbone, decaf, interactive or warp (see deepfeat extract --help; "
        "default: interactive for --method interactive, else backbone).",
    ),
    batch_size: int = typer.Option(32, min=1, help="Images per forward pass."),
    workers: int = typer.Option(2, min=0, help="Image decoding threads."),
    on_bad_image: OnBadImage = typer.Option(OnBadImage.skip, help="Skip undecodable images or stop."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1, help="Refuse images with more pixels."),
    extract: bool = typer.Option(True, "--extract/--no-extract", help="Compute missing features."),
    exact_decode: bool = typer.Option(
        False, "--exact-decode", help="Decode JPEGs in full before resizing (parity with timm; slower)."
    ),
    allow_missing_classes: bool = typer.Option(
        False, "--allow-missing-classes", help="Evaluate even if a class has no usable image (reported)."
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes for the probe fits."),
    balanced: bool = typer.Option(
        False,
        "--balanced",
        help="Weight each class's training loss by n / (classes x its count) (class_weight='balanced'; "
        "single-label data).",
    ),
    device: str = DEVICE,
    amp: bool = AMP,
    loader: Loader = LOADER,
    cluster: str = CLUSTER,
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Transfer evaluation: features through the store, probes under a protocol, results.json, report.md
    and a self-contained report.html."""
    setup_logging(verbose)
    set_threads(threads)
    layer_names = names(layers, "--layers")
    recipe = make_recipe(
        method,
        layer_names,
        pool=names(pool, "--pool"),
        forms=names(forms, "--forms"),
        configs=names(config, "--config"),
        norms=ints(p, "--p"),
        collections=names(collect, "--collect"),
        concat=concat,
        components=components,
        pca_dim=pca_dim or None,
        scales=None if scales is None else ints(scales, "--scales", minimum=32),
        kernel_normalize="gradient" if kernel_normalize is None else kernel_normalize.value,
        seed=seed,
    )
    asked = (names(probe, "--probe") if probe else list(recipe.default_probes)) if dropout else []
    no_dropout = [p for p in asked if p in ("svm-hinge", "ksvm")]
    if no_dropout:
        given = "" if probe else f" (the default of --method {method.value})"
        raise ConfigError(
            f"--dropout trains on dropout copies of the features, which --probe {', '.join(no_dropout)}"
            f"{given} cannot use; use --probe svm / logreg with --dropout, or leave --dropout out"
        )
    job = EvaluationJob(
        data=data,
        recipe=recipe,
        protocol=protocol(protocol_name, n_splits=splits, seed=seed),
        probes=None if probe is None else names(probe, "--probe"),
        probe_params=({"dropout": dropout} if dropout else {})
        | ({} if normalize is None else {"normalize": normalize})
        | ({} if kernel_normalize is None else {"kernel_normalize": kernel_normalize.value})
        | ({"class_weight": "balanced"} if balanced else {}),
        backbone=backbone,
        weights=weights,
        preprocess=None if preprocess is None else preprocess.value,
        target=target,
        store=store,
        out=out,
        extraction=ExtractionOptions(
            batch_size=batch_size,
            workers=workers,
            on_bad_image=on_bad_image.value,
            max_pixels=max_pixels,
            extract=extract,
            exact_decode=exact_decode,
            device=device,
            amp=amp,
            loader=None if loader is None else loader.value,
            cluster=cluster,
        ),
        n_jobs=jobs,
        allow_missing_classes=allow_missing_classes,
        seed=seed,
    )
    run_and_report(job)
