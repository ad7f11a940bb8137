"""Robust image decoding: any file PIL can read becomes an upright 8-bit RGB image, or an ImageError.

What is handled:
- EXIF orientation is applied, so the pixels are upright as a viewer shows them;
- grayscale, bilevel, palette, CMYK, YCbCr, LAB and HSV images are converted to RGB;
- images with transparency (RGBA, LA, PA, and palette, RGB or grey images with a transparent colour)
  are composited on white;
- 16-bit integer images (PNG, PGM / PPM, TIFF, whatever their values) are scaled to 8 bits by their
  declared range (65535 maps to 255); 32-bit integer images, which declare no useful range, keep values
  up to 255 and are otherwise scaled so that their largest value maps to 255; float images in [0, 1]
  are scaled by 255;
- multi-frame files (GIF, TIFF) give their first frame.
- PNG files have their chunk checksums verified (Pillow would decode damaged data into garbled pixels).

What becomes an :class:`~deepfeat.errors.ImageError` naming the path and the reason: zero-byte files,
files that are not images, truncated or corrupt images, and images with more pixels than
``max_pixels`` (decompression bombs), which are refused from the header before any decoding.

``max_pixels`` may be set above Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``): while such a
load runs, Pillow's limit is raised to it and restored when the last such load ends (reference
counted, under a lock); it is never changed for loads within Pillow's limit.

Paths in messages and ids are printable: bytes of a file name that are not valid UTF-8 are shown as
``\\xNN`` escapes (:func:`printable`).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deepfeat.errors import ImageError

#: PIL's own default limit; larger images are refused unless the caller raises ``max_pixels``.
DEFAULT_MAX_PIXELS = 89_478_485

#: Function from the upright (width, height) of an image to the smallest (width, height) the
#: transform that follows needs; lets JPEG decoding skip resolution that would be thrown away.
DraftRule = Callable[[int, int], tuple[int, int]]

_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 or 270 degrees
_WHITE = (255, 255, 255, 255)


def load_image(
    path: str | os.PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: DraftRule | None = None,
) -> Image.Image:
    """Decode the image at ``path`` into an upright 8-bit RGB image.

    ``draft`` lets JPEG files decode at a reduced scale (1/2, 1/4 or 1/8) that is still at least the
    size the following transform needs. Raises :class:`ImageError` for anything that is not a
    decodable image of at most ``max_pixels`` pixels.
    """
    path = Path(path)
    where = printable(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(where, f"cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise ImageError(where, "empty file (0 bytes)")
    return _open(path, where, max_pixels=max_pixels, draft=draft)


def load_image_bytes(
    data: bytes,
    where: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: DraftRule | None = None,
) -> Image.Image:
    """Decode an image held in memory (a tar member, a dataset cell) as :func:`load_image` decodes a
    file; ``where`` names it in errors (e.g. ``shard.tar:key.jpg``)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageError(where, f"expected the bytes of an image file, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageError(where, "empty file (0 bytes)")
    return _open(io.BytesIO(data), where, max_pixels=max_pixels, draft=draft)


def _open(source, where: str, *, max_pixels: int, draft: DraftRule | None) -> Image.Image:
    with pil_pixel_limit(max_pixels):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(source)
        except UnidentifiedImageError as exc:
            raise ImageError(where, "not an image file PIL can identify") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            pixels = f"{found.group(1)} pixels" if found else "its size"
            raise ImageError(where, _too_large(pixels, max_pixels)) from exc
        except OSError as exc:  # the reason only: the path is named once, by the ImageError
            raise ImageError(where, f"cannot open image ({exc.strerror or exc})") from exc
        with img:
            if img.format == "PNG":
                _verify_png(source, where)
            return _decode(img, where, max_pixels=max_pixels, draft=draft)


def _verify_png(source, where: str) -> None:
    """Refuse a PNG whose chunk checksums do not match (Pillow decodes damaged image data without
    complaint, garbling pixels); read through a second handle, so the open image is undisturbed."""
    check = io.BytesIO(source.getbuffer()) if isinstance(source, io.BytesIO) else source
    try:
        with Image.open(check) as png:
            png.verify()
    except Exception as exc:
        # a bad ancillary chunk (lower-case type: text, time...) leaves the pixels intact: kept, as libpng
        chunk = re.search(r"b'([A-Za-z]{4})'", str(exc))
        if chunk and chunk.group(1)[0].islower():
            return
        raise ImageError(where, f"truncated or corrupt PNG data ({exc})") from exc


def printable(path: str | os.PathLike) -> str:
    """``path`` as text that can always be printed: bytes that are not valid UTF-8 become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class _PixelLimit:
    """Pillow's MAX_IMAGE_PIXELS raised for the loads that need more, and restored after the last."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: list[int] = []
        self.saved: int | None = None

    @contextlib.contextmanager
    def at_least(self, max_pixels: int) -> Iterator[None]:
        with self.lock:
            current = self.saved if self.active else Image.MAX_IMAGE_PIXELS
            if current is None or max_pixels <= current:
                needed = False
            else:
                needed = True
                if not self.active:
                    self.saved = current
                self.active.append(int(max_pixels))
                Image.MAX_IMAGE_PIXELS = max(self.active)
        try:
            yield
        finally:
            if needed:
                with self.lock:
                    self.active.remove(int(max_pixels))
                    Image.MAX_IMAGE_PIXELS = max(self.active) if self.active else self.saved


_PIXEL_LIMIT = _PixelLimit()


def pil_pixel_limit(max_pixels: int):
    """Context in which Pillow opens and decodes images of up to ``max_pixels`` pixels even when that
    is above ``PIL.Image.MAX_IMAGE_PIXELS`` (which is restored after); deepfeat's own check of
    ``max_pixels`` applies either way."""
    return _PIXEL_LIMIT.at_least(max_pixels)


def _too_large(pixels: str, max_pixels: int) -> str:
    return (
        f"image too large: {pixels} exceeds the limit of {max_pixels} "
        "(raise max_pixels / --max-pixels to accept it)"
    )


def to_rgb(img: Image.Image, sixteen_bit: bool | None = None) -> Image.Image:
    """Convert a decoded PIL image of any mode to 8-bit RGB (alpha composited on white).
    ``sixteen_bit``: whether an integer image of mode ``I`` came from a 16-bit file (default: read from
    ``img``, whose format transposition may have dropped; see :func:`_declares_16_bits`)."""
    mode = img.mode
    if mode in ("P", "RGB", "L") and "transparency" in img.info:  # a transparent colour (PNG tRNS)
        img, mode = img.convert("RGBA"), "RGBA"
    if mode == "RGB":
        return img
    if mode == "P":
        return img.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    key = img.info.get("transparency")
    if mode.startswith("I") or mode == "F":
        rgb = _high_depth_to_rgb(img, _declares_16_bits(img) if sixteen_bit is None else sixteen_bit)
    else:
        rgb = img.convert("RGB")
    if isinstance(key, int) and mode in ("1", "I", "I;16", "I;16B", "I;16L"):  # a grey colour key
        clear = np.asarray(img) == (bool(key) if mode == "1" else key)
        if clear.any():
            arr = np.array(rgb)
            arr[clear] = 255
            rgb = Image.fromarray(arr)
    return rgb


def _declares_16_bits(img: Image.Image) -> bool:
    """Whether an integer image's file holds at most 16 bits per sample: I;16 modes, PNG, PGM / PPM
    (Pillow spreads any maxval over 0..65535) and TIFF with BitsPerSample <= 16."""
    if img.mode.startswith("I;16") or img.format in ("PNG", "PPM"):
        return True
    if img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258) or (32,)
        return max(bits if isinstance(bits, tuple) else (bits,)) <= 16
    return False


def _decode(img: Image.Image, where: str, *, max_pixels: int, draft: DraftRule | None) -> Image.Image:
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(where, _too_large(f"{width}x{height} = {width * height} pixels", max_pixels))
    if width == 0 or height == 0:
        raise ImageError(where, f"image has no pixels ({width}x{height})")
    orientation = _orientation(img)
    try:
        if draft is not None and img.format == "JPEG":
            upright = (height, width) if orientation in _SWAPS_AXES else (width, height)
            need_w, need_h = draft(*upright)
            if orientation in _SWAPS_AXES:
                need_w, need_h = need_h, need_w
            img.draft("RGB", (max(1, need_w), max(1, need_h)))
        img.load()
    except Exception as exc:  # decoders raise OSError, SyntaxError, ValueError, struct.error...
        raise ImageError(where, f"truncated or corrupt image data ({exc})") from exc
    sixteen_bit = _declares_16_bits(img)  # before transposition, which drops the file format
    if orientation not in (None, 1):
        try:
            img = ImageOps.exif_transpose(img)
        except Exception as exc:
            raise ImageError(where, f"cannot apply EXIF orientation {orientation} ({exc})") from exc
    try:
        return to_rgb(img, sixteen_bit)
    except Exception as exc:
        raise ImageError(where, f"cannot convert mode {img.mode!r} to RGB ({exc})") from exc


def _orientation(img: Image.Image) -> int | None:
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # a damaged EXIF block must not cost the image
        return None
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None


def _high_depth_to_rgb(img: Image.Image, sixteen_bit: bool) -> Image.Image:
    arr = np.asarray(img)
    if arr.ndim == 3:  # multi-channel high-depth modes reach here only through conversions
        arr = arr[..., :3]
    arr = arr.astype(np.float64)
    if img.mode == "F":
        finite = arr[np.isfinite(arr)]
        top = float(finite.max()) if finite.size else 0.0
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        if top <= 1.0:
            arr = arr * 255.0
    elif sixteen_bit:
        arr = arr / 257.0
    else:  # 32-bit: no declared range; the largest value maps to 255 where it is above 255
        arr = arr * (255.0 / max(255.0, float(arr.max(initial=0))))
    arr8 = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if arr8.ndim == 2:
        arr8 = np.repeat(arr8[:, :, None], 3, axis=2)
    return Image.fromarray(arr8)
