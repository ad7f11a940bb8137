"""Per-frame CNN features of videos, RGB or flow, through deepfeat's extraction pipeline and store.

The frames (:class:`~deepfeat.data.frames.FrameDataset`) or flow images
(:class:`~deepfeat.data.flow.FlowDataset`) of the videos are an image dataset; :func:`stream_features`
extracts one layer for all of them in one pass per batch into the store (computed once, reused by
every later run, resumable after an interruption) and groups the rows back into one sequence per
video. Flow images are cached in ``<store>/flow``.

Frame features (:class:`FrameFeatures`): a layer of any backbone, average-pooled over a ``grid`` x
``grid`` of cells and unrolled (``grid=1``: the global average). A fully connected layer such as
AlexNet's fc6 keeps where things are in the frame; the global average of a convolutional layer
mostly does not, and a motion such as left versus right is then hard to see in RGB frame features:
a 2 x 2 grid of EfficientNet-Lite0's head is the fc6-like choice that keeps coarse position.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deepfeat.backbones.backbone import Backbone
from deepfeat.data.flow import FlowOptions, flow_dataset
from deepfeat.data.frames import FrameDataset, frame_dataset
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.data.transforms import Preprocess, preset
from deepfeat.data.video import FrameSampling
from deepfeat.data.videosets import VideoDataset
from deepfeat.errors import ConfigError, DataError
from deepfeat.features.base import FeatureMethod, OutputSpec
from deepfeat.features.featureset import FeatureKind
from deepfeat.features.pipeline import ON_ERROR, extract
from deepfeat.features.store import FeatureStore
from deepfeat.validation import check_choice, check_device, check_int

STREAMS = ("rgb", "flow")


class GridPooled(FeatureMethod):
    """Activations of one layer average-pooled over a ``grid`` x ``grid`` of cells, unrolled
    channel-major (C * grid^2 values); ``grid=0`` keeps the whole map (C * H * W)."""

    name = "grid"
    needs_backward = False

    def __init__(self, layer: str, grid: int = 1):
        self.layer = layer
        self.grid = grid

    def outputs(self, backbone: Backbone) -> list[OutputSpec]:
        check_int("grid", self.grid, 0)
        layer = backbone.catalog.get(self.layer)
        if not layer.spatial and self.grid not in (0, 1):
            raise ConfigError(f"layer {layer.name!r} is a vector layer; use grid 1 (it has no cells)")
        grid = self.grid if layer.spatial else 1
        params = {"method": self.name, "layer": layer.name, "grid": grid}
        kind = FeatureKind.MAPS if layer.spatial and grid == 0 else FeatureKind.VECTOR
        return [OutputSpec(key=f"{layer.name}/grid{grid}", layer=layer, params=params, kind=kind)]

    def encode(self, captured, specs: Sequence[OutputSpec], item_ids) -> dict[str, torch.Tensor]:
        return {s.key: grid_pool(captured[s.layer.name], s.params["grid"]) for s in specs}


def grid_pool(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, C, H, W) maps -> (N, C * grid^2) cell averages (grid 0: the maps unrolled); (N, D) as is."""
    x = x.float()
    if x.dim() == 2:
        return x
    if grid == 0:
        return x.flatten(1)
    return F.adaptive_avg_pool2d(x, grid).flatten(1)


def on_device(backbone: Backbone, device: str | torch.device | None) -> Backbone:
    """``backbone`` itself on the CPU; elsewhere a copy whose network lives on ``device`` and moves
    its input there (the extraction pipeline prepares batches on the CPU; captured layers come back
    through it to the CPU)."""
    dev = check_device(device)
    if dev.type == "cpu":
        return backbone
    module = copy.deepcopy(backbone.module).to(dev)
    module.register_forward_pre_hook(lambda _m, args: (args[0].to(dev, non_blocking=True), *args[1:]))
    return replace(backbone, module=module)


@dataclass
class FrameFeatures:
    """What the per-frame features are and how they are computed.

    ``backbone`` / ``weights``: the CNN (see ``load_backbone``); ``layer`` and ``grid``: see the
    module docstring; ``preprocess``: a preset name (``backbone``, ``warp``, ``decaf``) or a
    :class:`Preprocess`, applied to every frame and flow image; ``input_size``: when set, frames are
    warped whole to ``input_size`` x ``input_size`` instead (small frames need no upscaling to 224);
    ``sampling``: which frames of each
    video; ``flow``: how flow images are made. Extraction: ``batch_size`` frames per forward pass,
    ``workers`` decoding threads, ``on_bad_frame`` (``skip`` reports undecodable frames, ``fail``
    stops at the first), ``max_pixels`` per frame, ``device``.
    """

    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    layer: str = "head"
    grid: int = 2
    preprocess: str | Preprocess = "backbone"
    input_size: int | None = None
    sampling: FrameSampling = field(default_factory=FrameSampling)
    flow: FlowOptions = field(default_factory=FlowOptions)
    batch_size: int = 32
    workers: int = 2
    on_bad_frame: str = "skip"
    max_pixels: int = DEFAULT_MAX_PIXELS
    device: str | None = None

    def validate(self) -> None:
        check_int("grid", self.grid, 0)
        if self.input_size is not None:
            check_int("input_size", self.input_size, 16)
        check_int("batch_size (frames per forward pass)", self.batch_size, 1)
        check_int("workers (decoding threads)", self.workers, 0)
        check_choice("on_bad_frame", self.on_bad_frame, ON_ERROR)
        check_int("max_pixels", self.max_pixels, 1)
        check_device(self.device)
        if not isinstance(self.sampling, FrameSampling) or not isinstance(self.flow, FlowOptions):
            raise ConfigError("sampling must be a FrameSampling and flow a FlowOptions")

    def resolve_preprocess(self, backbone: Backbone) -> Preprocess:
        prep = self.preprocess
        if not isinstance(prep, Preprocess):
            prep = preset(prep, backbone.preprocess)
        if self.input_size is not None:
            prep = replace(prep, resize="warp", size=int(self.input_size), crop=None)
        return prep

    def to_dict(self, backbone: Backbone | None = None) -> dict:
        """Plain JSON: everything that defines the features (with the resolved preprocessing)."""
        prep = self.preprocess
        if backbone is not None:
            prep = self.resolve_preprocess(backbone).to_dict()
        elif isinstance(prep, Preprocess):
            prep = prep.to_dict()
        return {
            "backbone": self.backbone,
            "weights": None if self.weights is None else str(self.weights),
            "layer": self.layer,
            "grid": self.grid,
            "preprocess": prep,
            "input_size": self.input_size,
            "sampling": self.sampling.to_dict(),
            "flow": self.flow.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> FrameFeatures:
        prep = d["preprocess"]
        return cls(
            backbone=d["backbone"],
            weights=d.get("weights"),
            layer=d["layer"],
            grid=int(d["grid"]),
            preprocess=Preprocess(**{**prep, "mean": tuple(prep["mean"]), "std": tuple(prep["std"])})
            if isinstance(prep, dict)
            else prep,
            input_size=d.get("input_size"),
            sampling=FrameSampling(**d["sampling"]),
            flow=FlowOptions(**d["flow"]),
        )


@dataclass
class StreamFeatures:
    """One stream's per-frame features, one sequence (T_v, *frame_shape) per usable video, in video
    order (memory-mapped from the store where possible).

    ``rows``: the videos' rows in the video dataset; ``failures``: (frame or video, reason) for
    everything left out; ``failed_videos``: (video, reason) for videos with no usable frame.
    """

    stream: str
    classes: list[str]
    rows: np.ndarray
    video_ids: list[str]
    targets: np.ndarray
    sequences: list[np.ndarray]
    frame_shape: tuple[int, ...]
    failures: list[tuple[str, str]] = field(default_factory=list)
    failed_videos: list[tuple[str, str]] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    n_forward: int = 0
    seconds: float = 0.0

    @property
    def dim(self) -> int:
        return int(np.prod(self.frame_shape))


def stream_dataset(
    videos: VideoDataset,
    stream: str,
    spec: FrameFeatures,
    *,
    store: FeatureStore | None = None,
    progress: bool = True,
) -> FrameDataset:
    """The frames (``rgb``) or flow images (``flow``) of ``videos`` as an image dataset."""
    check_choice("input stream", stream, STREAMS)
    frames = frame_dataset(
        videos, spec.sampling, max_pixels=spec.max_pixels, workers=spec.workers, progress=progress
    )
    if stream == "rgb":
        return frames
    cache = None if store is None else Path(store.root) / "flow"
    return flow_dataset(frames, spec.flow, cache_dir=cache)


def stream_features(
    videos: VideoDataset,
    stream: str,
    spec: FrameFeatures,
    backbone: Backbone,
    *,
    method: FeatureMethod | None = None,
    store: FeatureStore | str | os.PathLike | None = None,
    progress: bool = True,
) -> StreamFeatures:
    """Per-frame features of one stream of ``videos`` (see the module docstring); ``method``
    overrides the frame features (e.g. whole maps of a lower layer for fine-tuning top stages)."""
    spec.validate()
    if isinstance(store, str | os.PathLike):
        store = FeatureStore(store)
    method = method or GridPooled(spec.layer, spec.grid)
    dataset = stream_dataset(videos, stream, spec, store=store, progress=progress)
    prep = spec.resolve_preprocess(backbone)
    backbone = on_device(backbone, spec.device)
    result = extract(
        dataset,
        backbone,
        [method],
        store=store,
        preprocess=prep,
        batch_size=spec.batch_size,
        workers=spec.workers,
        on_error=spec.on_bad_frame,
        max_pixels=spec.max_pixels,
        progress=progress,
    )
    (fs,) = result.features.values()
    grouped = dataset.sequences(fs.rows)
    data = fs.features
    shape = tuple(fs.layer_shape or ()) if fs.kind is FeatureKind.MAPS else (fs.dim,)
    rows, sequences = [], []
    for video_row, items in grouped.items():
        positions = np.searchsorted(fs.rows, items)
        rows.append(video_row)
        if positions[-1] - positions[0] + 1 == len(positions):  # a video's frames are consecutive rows:
            block = data[positions[0] : positions[-1] + 1]  # a view of the memory-mapped store
        else:
            block = np.asarray(data[positions])
        sequences.append(block.reshape(len(positions), *shape))
    failed = [(videos.source(r), why) for r, why in dataset.failed_videos]
    have = set(rows)
    failed += [(videos.source(r), "no frame could be used") for r in dataset.slices if r not in have]
    if not rows:
        raise DataError(f"{videos.name}: no video has a usable frame ({len(result.failures)} frames failed)")
    rows = np.asarray(rows, dtype=np.int64)
    return StreamFeatures(
        stream=stream,
        classes=list(videos.classes),
        rows=rows,
        video_ids=[videos.ids[r] for r in rows],
        targets=videos.targets[rows],
        sequences=sequences,
        frame_shape=shape,
        failures=list(result.failures) + [(videos.source(r), why) for r, why in dataset.failed_videos],
        failed_videos=failed,
        provenance={
            **backbone.provenance(),
            "stream": stream,
            "features": spec.to_dict(backbone),
            "method": method.outputs(backbone)[0].params,
            "videos": videos.fingerprint(),
            "frames_dataset": dataset.fingerprint(),
            "store": None if store is None else str(store.root),
        },
        n_forward=result.n_forward,
        seconds=result.seconds,
    )
