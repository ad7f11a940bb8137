"""The evaluation job: data and a backbone in, features through the store, probes under a protocol,
an :class:`~deepfeat.evaluation.result.EvaluationResult` out (in memory; write its report with
:func:`~deepfeat.evaluation.report.write_report`).

    import deepfeat as df

    job = df.EvaluationJob("path/to/images", recipe=df.ActivationsRecipe(["stage6", "pool"]),
                           protocol=df.KShot(k=30, n_splits=5), out="out/")
    result = df.run(job)
    df.write_report(result, "out/")
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from deepfeat.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.data.source import DataSource, as_dataset
from deepfeat.data.transforms import Preprocess, preset
from deepfeat.errors import ConfigError, DataError
from deepfeat.evaluation.evaluate import draw_splits, evaluate
from deepfeat.evaluation.protocols import KShot, Protocol
from deepfeat.evaluation.recipes import ActivationsRecipe, Recipe
from deepfeat.evaluation.result import EvaluationResult
from deepfeat.features.distributed import check_cluster
from deepfeat.features.featureset import FeatureSet
from deepfeat.features.pipeline import ON_ERROR, extract, read_stored
from deepfeat.features.runner import LOADERS, check_amp, parse_device
from deepfeat.features.store import FeatureStore
from deepfeat.fileio import check_output_dir
from deepfeat.probes import probe_for
from deepfeat.report.provenance import environment
from deepfeat.report.wording import counted, listed
from deepfeat.validation import as_names, check_choice, check_device, check_int

log = logging.getLogger(__name__)

#: weights given as a path with one of these endings are checked to exist before any work
WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


@dataclass
class ExtractionOptions:
    """How features are computed: images per forward pass, decoding threads (or processes), what to do
    with images that cannot be decoded (``"skip"`` them, reported, or ``"fail"`` at the first), the
    largest image accepted, whether to decode JPEGs exactly (``exact_decode``: no DCT-domain
    downscaling, for parity with timm's transforms; slower on large photos), and whether to compute
    missing features at all (``extract=False``: use only what the store holds).

    Where: ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``; None: where the backbone is) runs the
    network and the per-split encoders (Fisher vectors) there; ``amp`` runs the forward pass in mixed
    precision (stored apart from float32 features); ``loader`` decodes in ``"threads"`` or
    ``"processes"`` (None: processes with pinned memory on CUDA, threads on the CPU); ``cluster``
    (``"local:N"``, a Dask scheduler address, or a ``distributed.Client``) runs the network on a
    cluster's workers, this process writing the store (see :mod:`deepfeat.features.distributed`)."""

    batch_size: int = 32
    workers: int = 2
    on_bad_image: str = "skip"
    max_pixels: int = DEFAULT_MAX_PIXELS
    extract: bool = True
    device: str | None = None
    exact_decode: bool = False
    amp: bool = False
    loader: str | None = None
    cluster: object | None = None

    def validate(self) -> None:
        check_int("batch_size (images per forward pass)", self.batch_size, 1)
        check_int("workers (decoding threads)", self.workers, 0)
        check_choice("on_bad_image", self.on_bad_image, ON_ERROR)
        check_int("max_pixels", self.max_pixels, 1)
        check_amp(self.amp)
        if self.loader is not None:
            check_choice("loader", self.loader, LOADERS)
        if self.cluster is None:
            if self.device is not None:
                check_device(self.device)
        else:  # the workers' device is checked on the workers
            parse_device(self.device)
            check_cluster(self.cluster)


@dataclass
class EvaluationJob:
    """Everything an evaluation needs, typed.

    ``data``: a dataset or its spelling (``"digits"``, a class-per-folder tree, a manifest).
    ``recipe``: the kind of features and how they reach the probes (see :mod:`.recipes`).
    ``protocol``: which rows train and which test (see :mod:`.protocols`).
    ``probes``: probe names (see ``deepfeat.probes.PROBES``; default: the recipe's), or estimators by
    name; ``probe_params`` go to probes built by name (e.g. ``{"normalize": True}``).
    ``backbone`` / ``weights``: a loaded :class:`Backbone`, or a name and weights for ``load_backbone``.
    ``preprocess``: a preset name or a :class:`Preprocess` (default: the recipe's).
    ``fully_convolutional``: run AlexNet / VGG16 densely (fc layers as convolutions); None: when the
    preprocessing keeps whole large images (InterActive's ``interactive``, ``resize="area"``).
    ``target``: target-domain data for domain adaptation.
    ``store``: the feature store (default: ``out/store``, or memory without ``out``).
    ``out``: working folder: the default store and the fits' checkpoint, so a rerun resumes.
    ``n_jobs``: worker processes for the probe fits.
    ``allow_missing_classes``: evaluate even when a class has no usable image (it is reported as
    excluded); by default such data is refused.
    ``voc07``: report the VOC07 11-point mAP as the headline (None: when the data is named VOC 2007).
    ``seed``: random state of probes built by name.
    """

    data: DataSource
    recipe: Recipe = field(default_factory=ActivationsRecipe)
    protocol: Protocol = field(default_factory=KShot)
    probes: Sequence[str] | Mapping[str, object] | None = None
    probe_params: dict = field(default_factory=dict)
    backbone: Backbone | str = DEFAULT_BACKBONE
    weights: str | os.PathLike | None = None
    preprocess: str | Preprocess | None = None
    fully_convolutional: bool | None = None
    target: DataSource | None = None
    store: FeatureStore | str | os.PathLike | None = None
    out: str | os.PathLike | None = None
    extraction: ExtractionOptions = field(default_factory=ExtractionOptions)
    n_jobs: int = 1
    allow_missing_classes: bool = False
    voc07: bool | None = None
    seed: int = 0

    def make_probes(self) -> dict[str, object]:
        """The probes by name, built and validated (nothing is fitted)."""
        spec = self.recipe.default_probes if self.probes is None else self.probes
        if isinstance(spec, Mapping):
            probes = dict(spec)
        else:
            if isinstance(spec, str):
                spec = as_names(spec, "probes")
            if "kernel_normalize" in self.probe_params and "ksvm" not in spec:
                raise ConfigError(
                    "probe_params 'kernel_normalize' (--kernel-normalize) is the kernel probe's option and "
                    f"no probe is 'ksvm' (probes: {', '.join(spec)}); add 'ksvm' or leave it out"
                )
            if "normalize" in self.probe_params and all(name == "ksvm" for name in spec):
                raise ConfigError(
                    "probe_params 'normalize' (--normalize) is the linear probes' option and 'ksvm' is the "
                    "only probe; the kernel probe normalises by kernel_normalize (--kernel-normalize)"
                )
            params = {"random_state": self.seed, **self.recipe.probe_params(), **self.probe_params}
            probes = {name: probe_for(name, **params) for name in spec}
        if not probes:
            raise ConfigError("no probe given; name at least one (e.g. 'svm')")
        for probe in probes.values():
            if hasattr(probe, "_validate_params"):
                probe._validate_params()
        return probes

    def dense(self) -> bool:
        """Whether AlexNet / VGG16 run fully convolutionally (see ``fully_convolutional``)."""
        if self.fully_convolutional is not None:
            return self.fully_convolutional
        prep = self.preprocess or self.recipe.default_preprocess
        return prep == "interactive" if isinstance(prep, str) else prep.resize == "area"

    def validate(self) -> None:
        """Cheap checks of every option, before any image is read or model loaded."""
        if not isinstance(self.recipe, Recipe):
            raise ConfigError(
                f"recipe must be a Recipe (e.g. ActivationsRecipe), got {type(self.recipe).__name__}"
            )
        if not isinstance(self.protocol, Protocol):
            raise ConfigError(
                f"protocol must be a Protocol (e.g. KShot(30)), got {type(self.protocol).__name__}"
            )
        for name, value, kinds, what in (
            ("backbone", self.backbone, (str, Backbone), "a backbone name or a Backbone"),
            (
                "weights",
                self.weights,
                (type(None), str, os.PathLike, enum.Enum),
                "None, 'random' or a weights file",
            ),
            (
                "preprocess",
                self.preprocess,
                (type(None), str, Preprocess),
                "None, a preset name or a Preprocess",
            ),
            (
                "store",
                self.store,
                (type(None), str, os.PathLike, FeatureStore),
                "None, a folder or a FeatureStore",
            ),
            ("out", self.out, (type(None), str, os.PathLike), "None or a folder"),
            (
                "probes",
                self.probes,
                (type(None), str, Sequence, Mapping),
                "probe names or estimators by name",
            ),
        ):
            if not isinstance(value, kinds):
                raise ConfigError(f"{name} must be {what}, got {type(value).__name__} {value!r:.60}")
        if self.protocol.two_domains and self.target is None:
            raise ConfigError(
                "the domain-adaptation protocol (--protocol da) needs target-domain data (target= / --target)"
            )
        if self.target is not None and not self.protocol.two_domains:
            raise ConfigError(
                "target data (target= / --target) goes with the domain-adaptation protocol (--protocol da) "
                f"only; this job's protocol is {type(self.protocol).__name__}"
            )
        weights = self.weights if isinstance(self.weights, str | os.PathLike) else None
        if (
            weights is not None
            and str(weights).lower().endswith(WEIGHT_FILE_SUFFIXES)
            and not os.path.isfile(weights)
        ):
            raise ConfigError(f"weights file {os.fspath(weights)!r} not found (weights= / --weights)")
        self.extraction.validate()
        check_int("n_jobs", self.n_jobs, 1)
        check_int("seed (random state of the probes)", self.seed, 0, 2**32 - 1)
        self.make_probes()


def _extract(dataset, backbone, methods, store, prep, opts: ExtractionOptions, progress, echo):
    if not opts.extract:
        if store is None:
            raise ConfigError("extract=False reads features from a store; give store= or out=")
        result = read_stored(
            dataset,
            backbone,
            methods,
            store,
            preprocess=prep,
            max_pixels=opts.max_pixels,
            amp=opts.amp,
            device=parse_device(opts.device),
        )
        echo(result.describe())
        return result.features, result.failures
    result = extract(
        dataset,
        backbone,
        methods,
        store=store,
        preprocess=prep,
        batch_size=opts.batch_size,
        workers=opts.workers,
        on_error=opts.on_bad_image,
        max_pixels=opts.max_pixels,
        progress=progress,
        device=opts.device,
        amp=opts.amp,
        loader=opts.loader,
        cluster=opts.cluster,
    )
    echo(result.describe())
    return result.features, result.failures


def _features(
    job: EvaluationJob, dataset, backbone, store, progress, echo
) -> tuple[dict[str, FeatureSet], list]:
    """The recipe's feature sets of ``dataset``: extracted at every scale, merged, combined, renamed."""
    prep = job.preprocess or job.recipe.default_preprocess
    base = preset(prep, backbone.preprocess) if isinstance(prep, str) else prep
    if job.extraction.exact_decode:
        base = replace(base, jpeg_draft=False)
    methods = job.recipe.methods()
    per_scale, failures = [], []
    for p in job.recipe.preprocesses(base):
        feats, fails = _extract(dataset, backbone, methods, store, p, job.extraction, progress, echo)
        per_scale.append(feats)
        failures += fails
    combined = job.recipe.combine(job.recipe.merge_scales(per_scale))
    return {job.recipe.rename(k): v for k, v in combined.items()}, failures


def _on_device(encoders: dict[str, object], opts: ExtractionOptions) -> dict[str, object]:
    """Encoders with a ``device`` parameter (Fisher vectors) set to the extraction's device; with a
    cluster the encoders run here, where they stay on their own device."""
    if opts.device is None or opts.cluster is not None:
        return encoders
    for encoder in encoders.values():
        if "device" in encoder.get_params(deep=False):
            encoder.set_params(device=str(opts.device))
    return encoders


def _cluster_name(cluster) -> str | None:
    if cluster is None or isinstance(cluster, str):
        return cluster
    return str(getattr(getattr(cluster, "scheduler", None), "address", type(cluster).__name__))


def _missing_classes(dataset, features: Mapping[str, FeatureSet]) -> list[str]:
    """Classes of the dataset with no usable row in the features (every image failed, or none)."""
    fs = next(iter(features.values()))
    if fs.multilabel:
        counts = fs.targets.sum(axis=0) if len(fs) else np.zeros(len(dataset.classes))
    else:
        counts = np.bincount(fs.targets, minlength=len(dataset.classes)) if len(fs) else np.zeros(0)
        counts = np.pad(counts, (0, len(dataset.classes) - len(counts)))
    return [c for c, n in zip(dataset.classes, counts) if n == 0]


def run(
    job: EvaluationJob, *, progress: bool = True, echo: Callable[[str], None] | None = None
) -> EvaluationResult:
    """Run ``job``: extract (or read) features, fit and score the probes; returns the result.

    ``echo`` receives one-line progress messages (dataset and extraction summaries); default: the
    ``deepfeat`` logger at INFO level.
    """
    echo = echo or log.info
    job.validate()
    out = None if job.out is None else check_output_dir(job.out, "out")
    probes = job.make_probes()
    datasets = {"source": as_dataset(job.data)}
    if job.target is not None:
        try:
            datasets["target"] = as_dataset(job.target)
        except DataError as exc:
            raise DataError(f"target data (target= / --target): {exc}") from None
    for ds in datasets.values():
        echo(ds.summary())
    weighted = sorted(name for name, p in probes.items() if getattr(p, "class_weight", None) is not None)
    if weighted and datasets["source"].multilabel:
        raise ConfigError(
            f"{datasets['source'].name}: multi-label data, and class weights apply to single-label "
            f"classes (probes {listed(weighted, form=str)}); leave class_weight out"
        )
    backbone = job.backbone
    if not isinstance(backbone, Backbone):
        backbone = load_backbone(backbone, weights=job.weights, fully_convolutional=job.dense())
    for method in job.recipe.methods():  # layer and method names, and their use, before any work
        job.recipe.check_outputs(method.outputs(backbone))
    # the protocol's checks on the labels (images per class, class lists of both domains, label
    # kind) before any extraction; drawn again on the images that get features (without classes
    # left out for having none)
    if not job.allow_missing_classes:
        draw_splits(job.protocol, datasets["source"], datasets.get("target"), datasets["source"].name)
    store = job.store
    if store is None and out is not None:
        store = out / "store"
    if store is not None and not isinstance(store, FeatureStore):
        store = FeatureStore(store)
    features, extraction = {}, {}
    for role, ds in datasets.items():
        features[role], failures = _features(job, ds, backbone, store, progress, echo)
        if not any(len(fs) for fs in features[role].values()):
            raise DataError(
                f"{ds.name}: no image could be used ({len(failures)} failed); nothing to evaluate"
            )
        missing = _missing_classes(ds, features[role])
        if missing and not job.allow_missing_classes:
            raise DataError(
                f"{ds.name}: {counted(len(missing), 'class', 'classes')} without a usable image "
                f"({listed(missing)}); "
                "fix or remove them, or allow_missing_classes / --allow-missing-classes to evaluate without"
            )
        if missing:
            echo(f"warning: {ds.name}: classes excluded, no usable image: {', '.join(missing)}")
        extraction[role] = {
            "dataset": ds.name,
            "n_items": len(ds),
            "failures": [list(f) for f in failures],
            "ignored": [list(i) for i in ds.ignored],
            "excluded_classes": missing,
        }
    source = datasets["source"]
    result = evaluate(
        features["source"],
        job.protocol,
        probes,
        target=features.get("target"),
        encoders=_on_device(job.recipe.encoders(features["source"]), job.extraction),
        checkpoint=None if out is None else out / "checkpoint.jsonl",
        n_jobs=job.n_jobs,
        progress=progress,
        source_name=source.name,
    )
    voc07 = job.voc07
    if voc07 is None:
        voc07 = any(tag in source.name.lower().replace(" ", "") for tag in ("voc07", "voc2007"))
    result.voc07 = bool(voc07 and result.multilabel)
    result.extraction = extraction
    result.provenance = {
        **environment(job.extraction.device),
        "data": source.name,
        "dataset_fingerprint": source.fingerprint(),
        "n_items": len(source),
        "target": None if "target" not in datasets else datasets["target"].name,
        "backbone": backbone.name,
        "weights_id": backbone.weights_id,
        "recipe": job.recipe.to_dict(),
        "preprocess": job.preprocess if isinstance(job.preprocess, str | None) else job.preprocess.to_dict(),
        "store": None if store is None else str(store.root),
        "seed": job.seed,
        "amp": job.extraction.amp,
        "cluster": _cluster_name(job.extraction.cluster),
    }
    return result
