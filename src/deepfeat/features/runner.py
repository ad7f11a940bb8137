"""The network step of an extraction, in three parts that run where they are needed.

- :class:`NetworkWork`: what every batch goes through (the layers to capture, the taps, the methods
  and their outputs), planned once from the outputs still missing; plain data that travels to
  cluster workers.
- :class:`BatchEncoder`: one model on one device, hooked for that work; turns a decoded
  :class:`~deepfeat.data.loader.Batch` into a :class:`BatchOutput` (the feature rows of every output
  and the failed rows). It runs in the extracting process, or on a cluster worker.
- :func:`write_output`: the rows of one batch into the store entries, then their journal lines; only
  ever called by the one process that holds the entries' locks (the driver).

:func:`run_local` strings them together in one process; :mod:`deepfeat.features.distributed` does the
same with the encoders on cluster workers. Both write the same batches in the same order, so their
stores are identical (given the same torch thread count: a reduction split over more threads rounds
differently, by about 1e-5 relative in deep layers).

Devices. ``device=None`` runs where the backbone's module is; a device moves the module there (as
``nn.Module.to`` does). On CUDA, batches come from DataLoader worker processes in pinned memory and
are copied asynchronously (``loader="processes"``, the default there; threads stay the default on
the CPU). ``amp=True`` runs the forward pass under ``torch.autocast`` (float16 on CUDA, bfloat16 on
the CPU); the methods encode in float32 from there, and ``"amp"`` joins the features' provenance so
that reduced-precision rows never mix with float32 ones in the store.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from deepfeat.backbones.backbone import Backbone
from deepfeat.backbones.layers import LayerInfo
from deepfeat.data.base import ImageDataset
from deepfeat.data.loader import Batch, iter_batches
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import ConfigError, DataError, ImageError
from deepfeat.features.base import FeatureMethod, OutputSpec
from deepfeat.features.capture import LayerCapture
from deepfeat.features.featureset import FeatureKind
from deepfeat.report.wording import counted, listed
from deepfeat.validation import check_choice, check_device

LOADERS = ("threads", "processes")
AMP_DTYPES = {"cuda": torch.float16, "cpu": torch.bfloat16}


def amp_name(device: torch.device) -> str:
    """The reduced precision ``amp=True`` uses on ``device`` (recorded in the provenance)."""
    return str(AMP_DTYPES.get(device.type, torch.float16)).removeprefix("torch.")


def resolve_device(device, backbone: Backbone) -> torch.device:
    """The torch device of ``device`` (None: where the backbone's module is); checked, not applied."""
    if device is None:
        param = next(backbone.module.parameters(), None)
        return torch.device("cpu") if param is None else param.device
    return check_device(device)


def parse_device(device) -> torch.device | None:
    """``device`` as a torch device without checking that it exists here (a cluster worker's device)."""
    if device is None:
        return None
    try:
        dev = device if isinstance(device, torch.device) else torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r} ({exc})") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r}")
    return dev


def resolve_loader(loader: str | None, device: torch.device) -> str:
    """``loader`` checked; None: worker processes for a GPU, threads for the CPU."""
    if loader is None:
        return "processes" if device.type == "cuda" else "threads"
    return check_choice("loader", loader, LOADERS)


@dataclass
class NetworkWork:
    """What every batch goes through: layers to capture and tap, and each method with its outputs."""

    groups: list[tuple[FeatureMethod, list[OutputSpec]]]
    layers: list[LayerInfo]
    taps: list[LayerInfo]
    grad_layers: set[str]
    needs_backward: bool

    @classmethod
    def plan(cls, backbone: Backbone, outputs: Sequence[tuple[FeatureMethod, OutputSpec]]) -> NetworkWork:
        """The one pass that computes every ``(method, output)`` pair."""
        layers = {spec.layer.name: spec.layer for _, spec in outputs if not spec.tap}
        layers |= {need.name: need for _, spec in outputs for need in spec.needs}
        ordered = [layer for layer in backbone.catalog if layer.name in layers]
        ordered += [layer for name, layer in layers.items() if name not in backbone.catalog]
        taps = {spec.layer.name for _, spec in outputs if spec.tap}
        groups: dict[int, tuple[FeatureMethod, list[OutputSpec]]] = {}
        for method, spec in outputs:
            groups.setdefault(id(method), (method, []))[1].append(spec)
        return cls(
            groups=list(groups.values()),
            layers=ordered,
            taps=[layer for layer in backbone.catalog if layer.name in taps],
            grad_layers={spec.layer.name for method, spec in outputs if method.needs_backward},
            needs_backward=any(method.needs_backward for method, _ in outputs),
        )


@dataclass
class BatchOutput:
    """What the network made of one batch: per output key, the rows that got features and their values
    (float32, one flat row each) with the per-item shape; the rows whose image failed; and, with
    ``on_error="fail"``, the first bad image (the rows before it are computed, the rest are not)."""

    rows: np.ndarray
    values: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    n_forward: int = 0
    stop: str | None = None


class BatchEncoder:
    """One model on one device, hooked for ``work``: ``encoder(batch, ids)`` -> :class:`BatchOutput`.

    Use as a context manager (the hooks live inside it). Not for concurrent use: hooks are per module.
    """

    def __init__(
        self,
        backbone: Backbone,
        work: NetworkWork,
        preprocess: Preprocess,
        *,
        on_error: str = "skip",
        device=None,
        amp: bool = False,
    ):
        self.backbone = backbone
        self.work = work
        self.preprocess = preprocess
        self.on_error = on_error
        self.device = resolve_device(device, backbone)
        self.amp = amp
        self._capture: LayerCapture | None = None

    def __enter__(self) -> BatchEncoder:
        self.backbone.module.to(self.device)
        self._capture = LayerCapture(
            self.backbone,
            self.work.layers,
            stop_early=not self.work.needs_backward,
            taps=self.work.taps,
            grad_layers=self.work.grad_layers,
        ).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._capture is not None:
            self._capture.__exit__(*exc)
            self._capture = None

    def _forward_context(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES.get(self.device.type, torch.float16))

    def __call__(self, batch: Batch, ids: Sequence[str]) -> BatchOutput:
        """Features of every decoded image of ``batch``; ``ids``: the item ids of the whole dataset."""
        if self._capture is None:
            raise RuntimeError("BatchEncoder is used inside a 'with' block")
        errors, ok, stop = batch.errors, batch.ok, None
        if errors and self.on_error == "fail":  # keep the images of this batch before the bad one
            first_bad = next(i for i, im in enumerate(batch.images) if isinstance(im, ImageError))
            errors, ok, stop = {}, [i for i in ok if i < first_bad], str(batch.images[first_bad])
        out = BatchOutput(rows=batch.rows, failed={row: err.reason for row, err in errors.items()}, stop=stop)
        chunks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        grad_context = torch.enable_grad if self.work.needs_backward else torch.inference_mode
        channels_last = self.backbone.channels_last
        for positions, x in batch.network_inputs(ok, self.preprocess, channels_last):
            rows = batch.rows[positions]
            x = x.to(self.device, non_blocking=True)
            with grad_context():
                with self._forward_context():
                    captured = self._capture.run(x)
                item_ids = [ids[r] for r in rows]
                for method, specs in self.work.groups:
                    encoded = method.encode(captured, specs, item_ids)
                    for spec in specs:
                        values = encoded[spec.key].detach().float().cpu()
                        if values.dim() > 2:
                            out.shapes[spec.key] = tuple(values.shape[1:])
                            values = values.flatten(1)
                        elif not spec.tap:
                            out.shapes[spec.key] = tuple(captured[spec.layer.name].shape[1:])
                        else:
                            out.shapes[spec.key] = (values.shape[1],)
                        chunks.setdefault(spec.key, []).append((rows, values.numpy()))
            out.n_forward += len(positions)
        for key, parts in chunks.items():
            out.values[key] = (
                np.concatenate([r for r, _ in parts]),
                np.concatenate([v for _, v in parts]).astype(np.float32, copy=False),
            )
        return out


def pending_rows(plans, dataset: ImageDataset, prep: Preprocess) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Per plan (by id) the rows it still needs, and the union of them in network order."""
    todo_by_plan = {id(p): ~p.entry.status().done for p in plans}
    todo = np.flatnonzero(np.any(np.stack(list(todo_by_plan.values())), axis=0))
    if prep.resize == "area":
        todo = _order_by_shape(dataset, todo, prep)
    return todo_by_plan, todo


def write_output(plans, todo_by_plan: dict[int, np.ndarray], out: BatchOutput, *, durable: bool) -> None:
    """Rows of one batch into every plan's entry that still needs them, then their journal line."""
    for p in plans:
        need = todo_by_plan[id(p)]
        rows_done: list[int] = []
        if p.spec.key in out.values:
            rows, values = out.values[p.spec.key]
            keep = need[rows]
            rows_done = rows[keep].tolist()
            if rows_done:
                p.entry.write(rows[keep], values[keep], out.shapes[p.spec.key])
        p.entry.commit(rows_done, failed={r: m for r, m in out.failed.items() if need[r]}, durable=durable)


def run_local(
    plans,
    dataset: ImageDataset,
    backbone: Backbone,
    prep: Preprocess,
    *,
    batch_size: int,
    on_error: str,
    max_pixels: int,
    workers: int,
    progress: bool,
    durable: bool,
    device=None,
    amp: bool = False,
    loader: str | None = None,
) -> int:
    """Pass the rows some plan still needs through the network in this process; returns the number
    of images that went through it. Raises DataError at the first bad image with ``on_error="fail"``."""
    todo_by_plan, todo = pending_rows(plans, dataset, prep)
    work = NetworkWork.plan(backbone, [(p.method, p.spec) for p in plans])
    dev = resolve_device(device, backbone)
    processes = resolve_loader(loader, dev) == "processes"
    n_forward = 0
    bar = tqdm(total=len(todo), unit="img", desc="extract", disable=not progress, dynamic_ncols=True)
    try:  # the bar is closed (its line ended) also when a bad image or Ctrl-C stops the run
        with BatchEncoder(backbone, work, prep, on_error=on_error, device=dev, amp=amp) as encode:
            batches = iter_batches(
                dataset,
                todo,
                prep,
                batch_size=batch_size,
                workers=workers,
                max_pixels=max_pixels,
                processes=processes,
                pin_memory=processes and dev.type == "cuda",
                channels_last=backbone.channels_last,
            )
            for batch in batches:
                out = encode(batch, dataset.ids)
                write_output(plans, todo_by_plan, out, durable=durable)
                n_forward += out.n_forward
                stop_if_failed(out)
                bar.update(len(batch.rows))
    finally:
        bar.close()
    return n_forward


def stop_if_failed(out: BatchOutput) -> None:
    """The DataError of ``on_error="fail"`` once the batch holding the first bad image is written."""
    if out.stop is not None:
        raise DataError(
            f"{out.stop}; stopped (on_error='fail' / --on-bad-image fail); the features of the images "
            "before it are kept"
        )


def check_amp(amp) -> bool:
    if not isinstance(amp, bool):
        raise ConfigError(f"amp must be True or False, got {amp!r}")
    return amp


def check_one_input_size(specs: Sequence[OutputSpec], dataset: ImageDataset, prep: Preprocess) -> None:
    """Before any work: outputs whose rows hold one entry per spatial position (unrolled maps,
    gradient factors of a conv layer) have one row width per input size, and the store one width per
    entry, so a preprocessing that keeps the aspect ratio without a crop must give every image the
    same size; a clear error naming the sizes and the ways out otherwise."""
    keys = [s.key for s in specs if s.kind is not FeatureKind.VECTOR and s.layer.spatial]
    if not keys or prep.resize == "warp" or prep.crop is not None:
        return
    sizes: Counter = Counter()
    for r in range(len(dataset)):
        size = dataset.image_size(r)
        if size is not None:
            sizes[prep.resized_size(*size)] += 1
    if len(sizes) > 1:
        common = ", ".join(f"{w} x {h} ({counted(n, 'image')})" for (w, h), n in sizes.most_common(3))
        raise ConfigError(
            f"{listed(keys, form=str)}: one row per image with one entry per spatial position needs one "
            f"input size, and the '{prep.resize}' resize without a crop gives {len(sizes)} sizes here "
            f"(most common: {common}); warp the images to one size (--preprocess warp, or "
            "preprocess='warp'), crop them, or use pooled features"
        )


def _order_by_shape(dataset: ImageDataset, rows: np.ndarray, prep: Preprocess) -> np.ndarray:
    """Rows sorted by their size after preprocessing (stable), so that batches of variable-size
    inputs hold images of one shape and need no padding."""
    keys = []
    for r in rows:
        size = dataset.image_size(int(r))
        keys.append((0, 0) if size is None else prep.resized_size(*size))
    order = sorted(range(len(rows)), key=lambda i: keys[i])
    return rows[order]
