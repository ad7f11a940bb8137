"""Geometric preprocessing of decoded images and normalisation of batches.

A :class:`Preprocess` turns an RGB PIL image into a uint8 HxWx3 array (resize, then centre crop);
:meth:`Preprocess.to_batch` stacks such arrays into a normalised float tensor in channels-last memory
format. Three presets exist: the backbone's own (timm-style: shorter side to ``size``, centre crop),
DeCAF's (warp to 256x256 ignoring the aspect ratio, centre 224x224 crop, as the thesis describes) and
InterActive's improved extraction (``resize="area"``: the whole image, area about ``size``^2, aspect
ratio kept as well as possible, both sides multiples of ``multiple``, no crop).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from deepfeat.errors import ConfigError, UnknownNameError
from deepfeat.validation import check_bool, check_int

RESIZE_MODES = ("shorter", "warp", "area")
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
PRESETS = ("backbone", "decaf", "interactive", "warp")


#: resized images larger than this many pixels (with a 256 shorter side: an aspect ratio past 64:1)
#: are not formed: only their centre crop is resampled, from the same source region at the same scale
#: (PIL's resize box). Pixels can differ from resize-then-crop (8,000 x 1: none; 5 x 900 upscaled 51x:
#: up to 19 grey levels; 70 x 5,000: up to 22); ordinary images keep the resize-then-crop that matches
#: timm and torchvision
CROP_FIRST_PIXELS = 1 << 22


@dataclass(frozen=True)
class Preprocess:
    """Resize, centre crop and normalisation applied to every image before the network.

    Parameters
    ----------
    resize: ``"shorter"`` scales the shorter side to ``size`` keeping the aspect ratio;
        ``"warp"`` scales both sides to ``size`` (DeCAF); ``"area"`` scales to an area of about
        ``size``^2 with both sides multiples of ``multiple`` (InterActive; see :func:`area_size`).
    size: target of the resize, in pixels.
    multiple: side granularity of the ``"area"`` resize (the network's total stride).
    crop: side of the centre square crop taken after resizing; ``None`` keeps the resized image.
    interpolation: ``"bilinear"`` or ``"bicubic"``.
    mean, std: per-channel normalisation of pixel values scaled to [0, 1].
    jpeg_draft: let JPEG files decode at 1/2, 1/4 or 1/8 scale when that still leaves at least the
        resolution the resize needs (much faster on large photos; part of the provenance). The DCT
        downscaling differs slightly from decoding in full and resizing: ``False`` ("exact decoding")
        matches timm's / torchvision's PIL transforms to within float rounding.
    """

    resize: str = "shorter"
    size: int = 256
    crop: int | None = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    jpeg_draft: bool = True
    multiple: int = 32

    def __post_init__(self) -> None:
        for name in ("size", "multiple") + (("crop",) if self.crop is not None else ()):
            object.__setattr__(self, name, check_int(name, getattr(self, name)))
        for name in ("resize", "interpolation"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a name (a string), got {getattr(self, name)!r:.60}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, list | tuple) or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value
            ):
                raise ConfigError(f"{name} must be 3 finite numbers (a tuple or list), got {value!r:.60}")
        check_bool("jpeg_draft", self.jpeg_draft)
        if self.resize not in RESIZE_MODES:
            raise UnknownNameError("resize mode", self.resize, RESIZE_MODES)
        if self.interpolation not in INTERPOLATIONS:
            raise UnknownNameError("interpolation", self.interpolation, INTERPOLATIONS)
        if self.size < 1:
            raise ConfigError(f"resize size must be a positive number of pixels, got {self.size}")
        if self.multiple < 1:
            raise ConfigError(f"multiple must be a positive number of pixels, got {self.multiple}")
        if self.resize == "area" and self.crop is not None:
            raise ConfigError("the 'area' resize keeps the whole image: use crop=None")
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
        if self.resize == "area":
            return area_size(width, height, self.size**2, self.multiple)
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
        if self.crop is not None:
            top = round((h - self.crop) / 2.0)
            left = round((w - self.crop) / 2.0)
            if w * h > CROP_FIRST_PIXELS:
                # a very elongated image (8,000 x 1 pixels resizes to 2,048,000 x 256): only the part the
                # crop keeps is resampled, at the same scale, instead of gigabytes of resized image
                sx, sy = img.width / w, img.height / h
                box = (left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy)
                img = img.resize((self.crop, self.crop), INTERPOLATIONS[self.interpolation], box=box)
                return np.asarray(img, dtype=np.uint8)
        if (w, h) != img.size:
            img = img.resize((w, h), INTERPOLATIONS[self.interpolation])
        if self.crop is not None:
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


def area_size(width: int, height: int, area: int, multiple: int = 32) -> tuple[int, int]:
    """(width, height) with both sides multiples of ``multiple``, area close to ``area`` and the aspect
    ratio close to ``width / height``.

    Among the sides rounded down or up to multiples (at least one multiple each) around the exact
    scaling, the pair minimising the squared log error of the aspect ratio plus that of the area
    wins. For aspect ratios up to 10:1 at an area of 512^2 the area error stays below 5%. Where the
    short side is held at one multiple and the exact aspect would more than double the area (past about
    1,000:1 at 512^2 and multiples of 32; between 256:1 and that the input grows up to twice the area),
    the long side keeps the area instead: a 30,000 x 1 image gave a 32 x 88,672 input, 11x the area.
    """
    if width < 1 or height < 1:
        raise ConfigError(f"image size must be positive, got {width}x{height}")
    scale = math.sqrt(area / (width * height))
    aspect = math.log(width / height)

    def options(side: float) -> set[int]:
        lo = max(multiple, math.floor(side / multiple) * multiple)
        return {lo, lo + multiple}

    def cost(wh: tuple[int, int]) -> float:
        w, h = wh
        return (math.log(w / h) - aspect) ** 2 + math.log(w * h / area) ** 2

    w, h = min(((w, h) for w in options(width * scale) for h in options(height * scale)), key=cost)
    if w * h > 2 * area:  # the short side held at one multiple, the aspect kept: keep the area instead
        if w > h:
            w = min(options(area / h), key=lambda v: abs(math.log(v * h / area)))
        else:
            h = min(options(area / w), key=lambda v: abs(math.log(w * v / area)))
    return w, h


def preset(name: str, backbone_default: Preprocess) -> Preprocess:
    """The named preprocessing: ``"backbone"`` (its own default), ``"decaf"`` (256 warp, 224 crop),
    ``"interactive"`` (area about 512^2, aspect kept, sides multiples of 32, no crop) or ``"warp"``
    (the whole image to the network's input size, aspect not kept, no crop: InterActive's ORIG)."""
    if name == "backbone":
        return backbone_default
    if name == "warp":
        side = backbone_default.crop or backbone_default.size
        return replace(backbone_default, resize="warp", size=side, crop=None)
    if name == "interactive":
        return replace(backbone_default, resize="area", size=512, crop=None, multiple=32)
    if name == "decaf":
        return replace(backbone_default, resize="warp", size=256, crop=224, interpolation="bilinear")
    raise UnknownNameError("preprocessing", name, PRESETS)
