"""Geometric preprocessing of decoded images and normalisation of batches.

A :class:`Preprocess` turns an RGB PIL image into a uint8 HxWx3 array (resize, then centre crop);
:meth:`Preprocess.to_batch` stacks such arrays into a normalised float tensor in channels-last memory
format. Two presets exist: the backbone's own (timm-style: shorter side to ``size``, centre crop) and
DeCAF's (warp to 256x256 ignoring the aspect ratio, centre 224x224 crop, as the thesis describes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from deepfeat.errors import ConfigError, UnknownNameError

RESIZE_MODES = ("shorter", "warp")
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
PRESETS = ("backbone", "decaf")


@dataclass(frozen=True)
class Preprocess:
    """Resize, centre crop and normalisation applied to every image before the network.

    Parameters
    ----------
    resize: ``"shorter"`` scales the shorter side to ``size`` keeping the aspect ratio;
        ``"warp"`` scales both sides to ``size`` (DeCAF).
    size: target of the resize, in pixels.
    crop: side of the centre square crop taken after resizing; ``None`` keeps the resized image.
    interpolation: ``"bilinear"`` or ``"bicubic"``.
    mean, std: per-channel normalisation of pixel values scaled to [0, 1].
    jpeg_draft: let JPEG files decode at 1/2, 1/4 or 1/8 scale when that still leaves at least the
        resolution the resize needs (much faster on large photos; part of the provenance).
    """

    resize: str = "shorter"
    size: int = 256
    crop: int | None = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    jpeg_draft: bool = True

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise UnknownNameError("resize mode", self.resize, RESIZE_MODES)
        if self.interpolation not in INTERPOLATIONS:
            raise UnknownNameError("interpolation", self.interpolation, INTERPOLATIONS)
        if self.size < 1:
            raise ConfigError(f"resize size must be a positive number of pixels, got {self.size}")
        if self.crop is not None and not 1 <= self.crop <= self.size:
            raise ConfigError(f"crop must be between 1 and the resize size {self.size}, got {self.crop}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("mean and std need 3 values each, std positive")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description (part of every feature's provenance)."""
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """Size (width, height) of an image of the given size after the resize step."""
        if self.resize == "warp":
            return self.size, self.size
        if width <= height:
            return self.size, max(1, int(self.size * height / width))
        return max(1, int(self.size * width / height)), self.size

    def draft_size(self, width: int, height: int) -> tuple[int, int]:
        """Smallest decoded size that loses nothing the resize keeps (see ``jpeg_draft``)."""
        rw, rh = self.resized_size(width, height)
        return math.ceil(rw), math.ceil(rh)

    def __call__(self, img: Image.Image) -> np.ndarray:
        """Resize and crop an RGB image; returns a uint8 array of shape (H, W, 3)."""
        w, h = self.resized_size(*img.size)
        if (w, h) != img.size:
            img = img.resize((w, h), INTERPOLATIONS[self.interpolation])
        if self.crop is not None:
            top = round((h - self.crop) / 2.0)
            left = round((w - self.crop) / 2.0)
            img = img.crop((left, top, left + self.crop, top + self.crop))
        return np.asarray(img, dtype=np.uint8)

    def to_batch(self, images: list[np.ndarray], channels_last: bool = True) -> torch.Tensor:
        """Stack uint8 HxWx3 arrays of one size into a normalised float32 NCHW tensor."""
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)  # NHWC storage
        if not channels_last:
            batch = batch.contiguous()
        mean = torch.tensor(self.mean).view(1, 3, 1, 1) * 255.0
        inv_std = 1.0 / (torch.tensor(self.std).view(1, 3, 1, 1) * 255.0)
        return (batch.float() - mean) * inv_std


def preset(name: str, backbone_default: Preprocess) -> Preprocess:
    """The named preprocessing: ``"backbone"`` (its own default) or ``"decaf"`` (256 warp, 224 crop)."""
    if name == "backbone":
        return backbone_default
    if name == "decaf":
        return replace(backbone_default, resize="warp", size=256, crop=224, interpolation="bilinear")
    raise UnknownNameError("preprocessing", name, PRESETS)
