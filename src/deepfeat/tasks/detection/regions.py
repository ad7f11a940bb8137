"""Features of image regions, two ways.

``mode="warp"`` (R-CNN, thesis section 3.1.1): every region is dilated so that ``padding`` pixels of
context surround it in the warped frame (p = 16), and the dilated box is warped anisotropically to
``size`` x ``size`` pixels (the network's input size). The warp samples the normalised image
bilinearly at the centre of every output pixel, without antialiasing, as the reference
implementation's crop does; where the dilated box leaves the image the input is zero, which is the
image mean once normalised (the thesis' mean padding). All regions of an image are warped in one
``torchvision.ops.roi_align`` call and go through the network in batches, every requested layer
captured in one pass.

``mode="shared"`` (an extension, not the thesis' method: SPP-net / Fast R-CNN style): the whole image
goes through the network once, its shorter side scaled to ``shared_size`` (longer side at most
``shared_max``), and every region's features are pooled from each requested spatial layer's map
with ``roi_align`` to the grid that layer has at the warp size (7 x 7 for a stride-32 layer at
224), then pooled as asked. The same dilated boxes are used, so both modes see the same image area.
Far cheaper: one forward pass per image instead of one per region. Only spatial (conv / pool-map)
layers can be pooled this way.

Region poolings: every pooling of :mod:`deepfeat.features.pooling` except ``sp-shuffle``, plus
``grid<k>`` (average pooling to a k x k grid, then unrolled: e.g. ``grid3`` keeps coarse spatial
layout in 9 C values; a compact stand-in for AlexNet's unrolled 6 x 6 pool5).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from deepfeat.backbones.backbone import Backbone
from deepfeat.backbones.layers import LayerInfo
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import ConfigError
from deepfeat.features.capture import LayerCapture
from deepfeat.features.pooling import canonical_pool, pool_maps
from deepfeat.tasks.detection.boxes import as_boxes, context_boxes
from deepfeat.validation import check_choice, check_device, check_int

REGION_MODES = ("warp", "shared")
_GRID = re.compile(r"^grid([1-9][0-9]?)$")


@dataclass(frozen=True)
class RegionOptions:
    """How region features are computed: ``mode`` (warp or shared), ``size`` (warp side; None: the
    backbone's input crop), ``padding`` (context pixels in the warped frame), ``shared_size`` and
    ``shared_max`` (image scale of the shared map: shorter side, cap on the longer side),
    ``sampling`` (shared map: bilinear samples per grid cell and axis in ``roi_align``; 0, the
    default, adapts them to the region, ceil(region extent / grid), as torchvision does: one
    sample per cell for the many small proposals, several for large ones)."""

    mode: str = "warp"
    size: int | None = None
    padding: int = 16
    shared_size: int = 600
    shared_max: int = 1000
    sampling: int = 0

    def validate(self) -> None:
        check_choice("region mode", self.mode, REGION_MODES)
        if self.size is not None:
            check_int("region size (warp side, pixels)", self.size, 16)
        check_int("padding (context pixels)", self.padding, 0)
        if self.size is not None and 2 * self.padding >= self.size:
            raise ConfigError(f"padding {self.padding} leaves nothing of a {self.size}-pixel warp")
        check_int("shared_size (pixels)", self.shared_size, 16)
        check_int("shared_max (pixels)", self.shared_max, self.shared_size)
        check_int("sampling (roi_align samples per cell; 0: adaptive)", self.sampling, 0)

    def resolved(self, backbone: Backbone) -> RegionOptions:
        """With ``size`` filled in from the backbone's preprocessing."""
        if self.size is not None:
            return self
        prep = backbone.preprocess
        return replace(self, size=int(prep.crop or prep.size))

    def to_dict(self) -> dict:
        return asdict(self)


def parse_output(spec: str) -> tuple[str, str]:
    """``"layer/pool"`` (or just ``"layer"``: average pooling) as (layer, pool)."""
    layer, _, pool = str(spec).strip().partition("/")
    if not layer:
        raise ConfigError(f"region feature {spec!r}: name a layer, e.g. 'head/avg' or 'stage7/grid3'")
    return layer, pool or "avg"


def check_pool(pool: str, spatial: bool) -> str:
    """Canonical region pooling name (see the module docstring)."""
    if _GRID.match(pool):
        if not spatial:
            raise ConfigError(f"pooling {pool!r} needs a spatial layer")
        return pool
    if pool in ("sp-shuffle",):
        raise ConfigError(
            "sp-shuffle is not a region pooling; use avg, max, unroll, bin, sp-max-bin or gridK"
        )
    return canonical_pool(pool, spatial)


def output_key(layer: LayerInfo, pool: str) -> str:
    """Canonical name of a region output: 'layer/pool', or the layer alone for a vector layer."""
    name = check_pool(pool, layer.spatial)
    return f"{layer.name}/{name}" if layer.spatial or name != "unroll" else layer.name


def region_pool(x: torch.Tensor, pool: str) -> torch.Tensor:
    """(N, D) float32 vectors of layer outputs ``x`` (N, C, H, W) or (N, D)."""
    grid = _GRID.match(pool)
    if grid:
        return F.adaptive_avg_pool2d(x.float(), int(grid.group(1))).flatten(1)
    return pool_maps(x, pool)


def warp_regions(image: torch.Tensor, boxes, size: int, padding: int = 16) -> torch.Tensor:
    """Warped regions (N, 3, size, size) of a normalised image (3, H, W) or (1, 3, H, W): each box
    dilated by ``padding`` context pixels, sampled bilinearly (one sample per output pixel), zero
    (the mean) outside the image."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    rois = torch.from_numpy(context_boxes(boxes, size, padding)).to(image.device, image.dtype)
    return roi_align(
        image, [rois], output_size=(size, size), spatial_scale=1.0, sampling_ratio=1, aligned=True
    )


def normalised(image: np.ndarray, prep: Preprocess, device=None) -> torch.Tensor:
    """A uint8 RGB image (H, W, 3) as a normalised (1, 3, H, W) float tensor on ``device``."""
    x = prep.to_batch([np.ascontiguousarray(image)], channels_last=False)
    return x.to(device) if device is not None else x


class RegionEncoder:
    """Computes region features of one image at a time for a fixed list of outputs (layer, pool).

    >>> enc = RegionEncoder(backbone, [("head", "avg"), ("stage7", "grid3")], RegionOptions())
    >>> feats = enc.encode(image, boxes)            # {"head/avg": (N, 1280), "stage7/grid3": ...}
    """

    def __init__(
        self,
        backbone: Backbone,
        outputs: list[tuple[str, str]],
        options: RegionOptions,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 64,
    ):
        options.validate()
        check_int("batch_size (regions per forward pass)", batch_size, 1)
        self.backbone = backbone
        self.options = options.resolved(backbone)
        self.device = check_device(device) if device is not None else None
        self.batch_size = batch_size
        self.outputs: dict[str, tuple[LayerInfo, str]] = {}
        for layer_name, pool in outputs:
            layer = backbone.catalog.get(layer_name)
            if self.options.mode == "shared" and not layer.spatial:
                raise ConfigError(
                    f"layer {layer.name!r} has no spatial map: shared-map region features pool conv "
                    "layers only (use mode 'warp', or a spatial layer, e.g. the head map with 'avg')"
                )
            self.outputs[output_key(layer, pool)] = (layer, check_pool(pool, layer.spatial))
        if not self.outputs:
            raise ConfigError("no region feature requested")
        self.layers = [
            lay for lay in backbone.catalog if lay.name in {v[0].name for v in self.outputs.values()}
        ]
        if self.device is not None:
            backbone.module.to(self.device)
        self.grids = self._grids() if self.options.mode == "shared" else {}

    @property
    def keys(self) -> list[str]:
        return list(self.outputs)

    def _capture(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode(), LayerCapture(self.backbone, self.layers) as cap:
            return cap.run(x)

    def _grids(self) -> dict[str, tuple[int, int]]:
        """Map size of every requested layer at the warp size (the shared-map pooling grid)."""
        size = self.options.size
        x = torch.zeros(1, 3, size, size, device=self.device)
        return {name: tuple(t.shape[-2:]) for name, t in self._capture(x).items()}

    def encode(self, image: np.ndarray, boxes) -> dict[str, np.ndarray]:
        """Features (N, D) float32 of every output for ``boxes`` (N, 4) of a uint8 RGB image."""
        boxes = as_boxes(boxes)
        out: dict[str, list[np.ndarray]] = {k: [] for k in self.outputs}
        if len(boxes):
            step = self._shared if self.options.mode == "shared" else self._warped
            for key, values in step(image, boxes).items():
                out[key].append(values)
        return {k: np.concatenate(v) if v else np.zeros((0, 0), np.float32) for k, v in out.items()}

    def _pool_all(self, captured: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {
            key: region_pool(captured[layer.name], pool).cpu().numpy()
            for key, (layer, pool) in self.outputs.items()
        }

    def _warped(self, image: np.ndarray, boxes: np.ndarray) -> dict[str, np.ndarray]:
        x = normalised(image, self.backbone.preprocess, self.device)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.outputs}
        for i in range(0, len(boxes), self.batch_size):
            crops = warp_regions(x, boxes[i : i + self.batch_size], self.options.size, self.options.padding)
            for key, values in self._pool_all(self._capture(crops)).items():
                parts[key].append(values)
        return {k: np.concatenate(v) for k, v in parts.items()}

    def shared_scale(self, width: int, height: int) -> float:
        """Factor applied to the image before the shared forward pass."""
        o = self.options
        return min(o.shared_size / min(width, height), o.shared_max / max(width, height))

    def _shared(self, image: np.ndarray, boxes: np.ndarray) -> dict[str, np.ndarray]:
        h, w = image.shape[:2]
        scale = self.shared_scale(w, h)
        x = normalised(image, self.backbone.preprocess, self.device)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        maps = self._capture(x)
        rois = context_boxes(boxes, self.options.size, self.options.padding) * np.float32(scale)
        parts: dict[str, list[np.ndarray]] = {k: [] for k in self.outputs}
        for i in range(0, len(rois), max(self.batch_size, 256)):
            chunk = torch.from_numpy(rois[i : i + max(self.batch_size, 256)]).to(x.device)
            for key, (layer, pool) in self.outputs.items():
                fmap = maps[layer.name].float()
                pooled = roi_align(
                    fmap,
                    [chunk],
                    output_size=self.grids[layer.name],
                    spatial_scale=1.0 / layer.stride,
                    sampling_ratio=self.options.sampling,
                    aligned=True,
                )
                parts[key].append(region_pool(pooled, pool).cpu().numpy())
        return {k: np.concatenate(v) for k, v in parts.items()}
