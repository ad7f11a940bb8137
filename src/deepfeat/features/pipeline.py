"""Extraction: every requested feature of every image from one pass of the network per batch.

:func:`extract` plans the work for a list of feature methods: outputs already in the store are read,
outputs computable from stored ones (ablations of unrolled maps) are derived without the network, and
the remaining rows go through the network once per batch, every layer captured in that one pass.
Results are written to the store batch by batch, so an interrupted run loses at most one batch.
:class:`~deepfeat.features.transformer.FeatureExtractor` wraps it as a scikit-learn transformer.
Store entries are verified when opened: a damaged one is repaired (its untrusted rows computed
again, listed in ``Extraction.repaired``) by :func:`extract` and refused by :func:`load_features`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepfeat._version import __version__
from deepfeat.backbones.backbone import Backbone
from deepfeat.backbones.registry import load_backbone
from deepfeat.data.datasets import ImageDataset
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.data.source import DataSource, as_dataset
from deepfeat.data.transforms import Preprocess, preset
from deepfeat.errors import ConfigError, DataError, StoreError
from deepfeat.features.base import FeatureMethod, OutputSpec
from deepfeat.features.featureset import FeatureSet, find_set
from deepfeat.features.runner import (
    amp_name,
    check_amp,
    check_one_input_size,
    parse_device,
    resolve_device,
    resolve_loader,
    run_local,
)
from deepfeat.features.store import FeatureStore, MemoryEntry, StoreEntry, as_store
from deepfeat.validation import check_choice, check_int

log = logging.getLogger(__name__)

ON_ERROR = ("skip", "fail")
_DERIVE_CHUNK = 512


@dataclass
class _Plan:
    method: FeatureMethod
    spec: OutputSpec
    entry: StoreEntry | MemoryEntry
    origin: str = "store"  # "store", "derived" or "network"


@dataclass
class Extraction:
    """What an extraction produced: the feature sets and an account of the run."""

    features: dict[str, FeatureSet]
    failures: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    n_items: int = 0
    n_forward: int = 0
    seconds: float = 0.0
    origins: dict[str, str] = field(default_factory=dict)
    store: str | None = None
    repaired: list[tuple[str, str]] = field(default_factory=list)  # (entry folder, damage found)
    device: str | None = None  # where the network ran ("cpu", "cuda:0", or the cluster's address)

    def __getitem__(self, key: str) -> FeatureSet:
        return find_set(self.features, key)

    @property
    def images_per_second(self) -> float:
        """Network throughput of this run (images through the network per second)."""
        return self.n_forward / self.seconds if self.seconds > 0 and self.n_forward else 0.0

    def describe(self) -> str:
        """Counts, outputs with their origin and location, skipped and ignored files, as text."""
        from deepfeat.report.tables import text_table

        n_ok = max((len(fs) for fs in self.features.values()), default=0)
        speed = f" at {self.images_per_second:.1f} img/s" if self.n_forward else ""
        speed += f" on {self.device}" if self.n_forward and self.device else ""
        lines = [
            f"{self.n_items} items: {n_ok} with features, {len(self.failures)} skipped; "
            f"{self.n_forward} through the network{speed} in {self.seconds:.1f} s"
        ]
        rows = [
            (k, fs.dim, len(fs), self.origins.get(k), fs.source or "memory")
            for k, fs in self.features.items()
        ]
        lines.append(text_table(rows, ["features", "dim", "rows", "from", "where"]))
        if self.failures:
            lines.append(f"skipped {len(self.failures)} files:")
            lines += [f"  {path}: {reason}" for path, reason in self.failures]
        if self.repaired:
            lines.append(
                f"repaired {len(self.repaired)} damaged store entries (untrusted rows computed again, "
                "bookkeeping rebuilt):"
            )
            lines += [f"  {path}: {damage}" for path, damage in self.repaired]
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} entries while listing the data:")
            lines += [f"  {path}: {reason}" for path, reason in self.ignored]
        if self.store:
            lines.append(f"store: {self.store}")
        return "\n".join(lines)


def base_provenance(
    dataset: ImageDataset,
    backbone: Backbone,
    preprocess: Preprocess,
    max_pixels: int,
    amp: str | None = None,
) -> dict:
    """Provenance shared by every output of one extraction (the method adds its parameters); ``amp``
    names the reduced precision of a mixed-precision forward pass (absent for float32)."""
    out = {
        "deepfeat": __version__,
        "dataset": dataset.fingerprint(),
        "n_items": len(dataset),
        **backbone.provenance(),
        "preprocess": preprocess.to_dict(),
        "max_pixels": int(max_pixels),
    }
    if amp is not None:
        out["amp"] = amp
    return out


def extract(
    dataset: DataSource,
    backbone: Backbone | str,
    methods: Sequence[FeatureMethod],
    *,
    store: FeatureStore | str | Path | None = None,
    preprocess: str | Preprocess = "backbone",
    batch_size: int = 32,
    on_error: str = "skip",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 2,
    progress: bool = True,
    durable: bool = True,
    device: str | torch.device | None = None,
    amp: bool = False,
    loader: str | None = None,
    cluster: str | object | None = None,
) -> Extraction:
    """Extract the outputs of ``methods`` for every item of ``dataset`` (a dataset or its spelling)
    through ``backbone`` (a backbone or its name).

    ``on_error``: ``"skip"`` leaves images that cannot be decoded out (reported in ``failures``),
    ``"fail"`` stops at the first one with an error naming it; either way everything computed so
    far stays in the store. ``durable`` syncs each batch to disk before journaling it.

    ``device``: where the network runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``; None: where the
    backbone's module is; the module is moved there). ``amp``: mixed-precision forward pass (float16
    on CUDA, bfloat16 on the CPU; recorded in the provenance, so stored apart from float32 features).
    ``loader``: ``"threads"`` or ``"processes"`` decode the images (``workers`` of them; None:
    processes with pinned memory on CUDA, threads on the CPU).

    ``cluster``: run the network on a Dask cluster instead of this process (``"local:N"`` starts N
    local worker processes, ``"tcp://host:port"`` connects to a scheduler, or a
    ``distributed.Client``); this process stays the only writer of the store. See
    :mod:`deepfeat.features.distributed`.
    """
    if on_error not in ON_ERROR:
        check_choice("on_error", on_error, ON_ERROR)
    dataset, backbone, methods = _inputs(dataset, backbone, methods)
    check_int("batch_size", batch_size, minimum=1)  # before any work: no store entry is created
    check_int("workers", workers, minimum=0)
    check_int("max_pixels", max_pixels, minimum=1)
    check_amp(amp)
    if cluster is None:
        dev = resolve_device(device, backbone)
    else:  # the workers' device: checked there (and here first for local workers, on this machine)
        from deepfeat.features.distributed import check_cluster

        check_cluster(cluster)
        dev = parse_device(device) or resolve_device(None, backbone)
        if isinstance(cluster, str) and cluster.strip().startswith("local:"):
            resolve_device(device, backbone)
    resolve_loader(loader, dev)
    prep = preset(preprocess, backbone.preprocess) if isinstance(preprocess, str) else preprocess
    store = as_store(store)
    start = time.perf_counter()
    n = len(dataset)
    base = base_provenance(dataset, backbone, prep, max_pixels, amp_name(dev) if amp else None)
    if store is not None:
        store.save_dataset_index(base["dataset"], dataset.index_record())
    outputs = [(method, spec) for method in methods for spec in method.outputs(backbone)]
    check_one_input_size([spec for _, spec in outputs], dataset, prep)  # before any entry is made
    plans: list[_Plan] = []
    for method, spec in outputs:
        prov = {**base, **spec.params}
        entry = store.entry(prov, n, dataset.ids) if store is not None else MemoryEntry(prov, n)
        plans.append(_Plan(method, spec, entry))
    if len({p.spec.key for p in plans}) != len(plans):
        raise ConfigError("two requested outputs have the same name; request each layer/pooling once")

    locked: list[_Plan] = []
    repaired: list[tuple[str, str]] = []
    n_forward, ran_on = 0, None
    try:
        for plan in plans:
            if store is not None and plan.entry.check().finished:
                continue
            plan.entry.lock()
            locked.append(plan)
            if store is None:
                continue
            problems = plan.entry.repair()  # damaged rows are dropped here and computed again below
            if problems:
                repaired.append((str(plan.entry.path), "; ".join(problems)))
            if not plan.entry.finish_if_complete() and _derive_from_store(plan, store, base, dataset):
                plan.origin = "derived"
        pending = [p for p in locked if not p.entry.complete]
        if pending:
            options = dict(
                batch_size=batch_size,
                on_error=on_error,
                max_pixels=max_pixels,
                workers=workers,
                progress=progress,
                durable=durable,
                device=dev,
                amp=amp,
                loader=loader,
            )
            computed_on = None  # this process (its environment is what the entries record)
            if cluster is None:
                n_forward = run_local(pending, dataset, backbone, prep, **options)
                ran_on = str(dev)
            else:
                from deepfeat.features.distributed import run_on_cluster

                n_forward, computed_on = run_on_cluster(
                    pending, dataset, backbone, prep, cluster=cluster, **options
                )
                ran_on = computed_on["cluster"]
            for plan in pending:
                plan.origin = "network"
                plan.entry.finish_if_complete(computed_on)
    finally:
        for plan in locked:
            plan.entry.unlock()

    features: dict[str, FeatureSet] = {}
    failures: dict[int, str] = {}
    for plan in plans:
        status = plan.entry.status()
        failures.update(status.failed)
        features[plan.spec.key] = _feature_set(plan, dataset, status.valid)
    if failures and on_error == "fail":
        row, reason = next(iter(sorted(failures.items())))
        raise DataError(
            f"{dataset.source(row)}: {reason} ({len(failures)} bad images in total; "
            "use on_error='skip' / --on-bad-image skip to leave them out)"
        )
    return Extraction(
        features=features,
        failures=[(dataset.source(r), failures[r]) for r in sorted(failures)],
        ignored=list(dataset.ignored),
        n_items=n,
        n_forward=n_forward,
        seconds=time.perf_counter() - start,
        origins={p.spec.key: p.origin for p in plans},
        store=None if store is None else str(store.root),
        repaired=repaired,
        device=ran_on,
    )


def _inputs(dataset, backbone, methods) -> tuple[ImageDataset, Backbone, list[FeatureMethod]]:
    """The dataset (a spelling opened), the backbone (a name loaded) and the methods, checked."""
    dataset = as_dataset(dataset)
    if isinstance(backbone, str):
        backbone = load_backbone(backbone)
    elif not isinstance(backbone, Backbone):
        raise ConfigError(f"backbone must be a Backbone or a backbone name, got {type(backbone).__name__}")
    if isinstance(methods, FeatureMethod):
        methods = [methods]
    methods = [methods] if isinstance(methods, str) else list(methods or [])
    if not methods:
        raise ConfigError("no feature method given")
    bad = [m for m in methods if not isinstance(m, FeatureMethod)]
    if bad:
        raise ConfigError(
            f"methods must be feature methods (e.g. LayerActivations(['pool'])), got {bad[0]!r}"
        )
    return dataset, backbone, methods


def load_features(
    dataset: ImageDataset,
    backbone: Backbone,
    methods: Sequence[FeatureMethod],
    store: FeatureStore | str | Path,
    *,
    preprocess: str | Preprocess = "backbone",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    amp: bool = False,
    device: str | torch.device | None = None,
) -> dict[str, FeatureSet]:
    """Feature sets already complete in ``store``, without running anything; a missing, incomplete or
    damaged one is an error naming it and the remedy. ``amp`` / ``device``: read the features of a
    mixed-precision extraction on that kind of device. :func:`read_stored` gives the same with the
    files the extraction skipped."""
    options = dict(preprocess=preprocess, max_pixels=max_pixels, amp=amp, device=device)
    return read_stored(dataset, backbone, methods, store, **options).features


def read_stored(
    dataset: ImageDataset,
    backbone: Backbone,
    methods: Sequence[FeatureMethod],
    store: FeatureStore | str | Path,
    *,
    preprocess: str | Preprocess = "backbone",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    amp: bool = False,
    device: str | torch.device | None = None,
) -> Extraction:
    """:func:`load_features` as an :class:`Extraction` (nothing through the network): the feature sets
    and the files their extraction skipped, with their reasons, as :func:`extract` reports them."""
    start = time.perf_counter()
    dataset, backbone, methods = _inputs(dataset, backbone, methods)
    store = as_store(store)
    prep = preset(preprocess, backbone.preprocess) if isinstance(preprocess, str) else preprocess
    # the device names the kind of extraction to read; it need not exist here
    where = parse_device(device) or resolve_device(None, backbone)
    amp_dtype = amp_name(where) if check_amp(amp) else None
    base = base_provenance(dataset, backbone, prep, max_pixels, amp_dtype)
    out: dict[str, FeatureSet] = {}
    failures: dict[int, str] = {}
    for method in methods:
        for spec in method.outputs(backbone):
            entry = store.find({**base, **spec.params}, len(dataset), dataset.ids)
            state = None if entry is None else entry.check()
            if state is not None and state.problems:
                raise StoreError(
                    f"{entry.path}: damaged store entry ({'; '.join(state.problems)}); run the extraction "
                    "again (deepfeat extract, or evaluate without --no-extract) to recompute those rows"
                )
            if entry is None or not state.complete:
                what = "incomplete" if entry is not None else "missing"
                raise StoreError(
                    f"features {spec.key!r} of {dataset.name} with {backbone.name} are {what} in the store "
                    f"{store.root}; extract them first (deepfeat extract, or evaluate without --no-extract)"
                )
            status = entry.status()
            failures.update(status.failed)
            out[spec.key] = _feature_set(_Plan(method, spec, entry), dataset, status.valid)
    return Extraction(
        features=out,
        failures=[(dataset.source(r), failures[r]) for r in sorted(failures)],
        ignored=list(dataset.ignored),
        n_items=len(dataset),
        seconds=time.perf_counter() - start,
        origins=dict.fromkeys(out, "store"),
        store=str(store.root),
    )


def _derive_from_store(plan: _Plan, store: FeatureStore, base: dict, dataset: ImageDataset) -> bool:
    """Compute ``plan`` from a complete stored source output when its method allows; True if done."""
    if plan.entry.status().done.any():
        return False
    for source_params, fn in plan.method.derivations(plan.spec):
        source = store.find({**base, **source_params}, len(dataset), dataset.ids)
        state = None if source is None else source.check()
        if state is None or not state.complete:
            continue
        status, shape = state.status, state.layer_shape
        stored = source.read() if status.valid.any() else None
        valid_rows = np.flatnonzero(status.valid)
        for i in range(0, len(valid_rows), _DERIVE_CHUNK):
            rows = valid_rows[i : i + _DERIVE_CHUNK]
            ids = [dataset.ids[r] for r in rows]
            values = fn(torch.from_numpy(np.asarray(stored[rows])), shape, ids)
            plan.entry.write(rows, values.numpy(), shape)
            plan.entry.commit(rows)
        if status.failed:
            plan.entry.commit([], failed=status.failed)
        plan.entry.finish_if_complete()
        log.info("derived %s from stored %s", plan.spec.key, source_params)
        return True
    return False


def _feature_set(plan: _Plan, dataset: ImageDataset, valid: np.ndarray) -> FeatureSet:
    rows = np.flatnonzero(valid)
    if rows.size == 0:
        features = np.zeros((0, 0), dtype=np.float32)
    else:
        data = plan.entry.read()
        features = data if rows.size == len(dataset) else np.asarray(data[rows])
    return FeatureSet(
        key=plan.spec.key,
        features=features,
        ids=[dataset.ids[r] for r in rows],
        targets=dataset.targets[rows],
        classes=list(dataset.classes),
        rows=rows,
        provenance=plan.entry.provenance,
        splits=None if dataset.splits is None else dataset.splits[rows],
        difficult=None if dataset.difficult is None else dataset.difficult[rows],
        layer_shape=plan.entry.row_shape,
        source=None if plan.entry.path is None else str(plan.entry.path),
        kind=plan.spec.kind,
    )
