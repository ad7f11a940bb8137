"""A PyTorch map-style ``Dataset`` of (image, label) pairs as a deepfeat dataset.

Items may be ``(image, label)`` tuples (torchvision's datasets) or dicts with an image and a label
key (image / img and label / labels / target). Images may be PIL images, uint8 arrays (H, W) or
(H, W, C), or tensors / float arrays (C, H, W) or (H, W, C) with values in [0, 1]; deepfeat resizes and
normalises them for the backbone, so give the dataset without its own transforms (a normalised tensor
is refused with a message saying so).

Labels are read without decoding images when the dataset has ``targets`` (or ``labels``) of its
length, as torchvision's datasets do; otherwise one pass over the items reads them (with a progress
bar), and an item that raises then is listed in ``ignored`` with the reason. Class names come from
``classes=``, else the dataset's ``classes``, else the distinct labels.

The data's identity (part of every stored feature's key) is ``fingerprint=`` when given; else the
files behind an ``ImageFolder`` (``samples``: path, size, time) or the array behind an in-memory dataset
(``data``: CIFAR, MNIST); else a hash of every item's pixels, computed once when first needed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from deepfeat.data.base import ImageDataset, labels_to_targets
from deepfeat.data.images import DEFAULT_MAX_PIXELS, DraftRule, to_rgb
from deepfeat.errors import ConfigError, DataError, ImageError

_IMAGE_KEYS = ("image", "img", "pixel_values")
_LABEL_KEYS = ("label", "labels", "target", "targets")


def _split_item(item: Any) -> tuple[Any, Any]:
    if isinstance(item, tuple | list) and len(item) >= 2:
        return item[0], item[1]
    if isinstance(item, dict):
        image = next((item[k] for k in _IMAGE_KEYS if k in item), None)
        label = next((item[k] for k in _LABEL_KEYS if k in item), None)
        if image is not None and label is not None:
            return image, label
    raise DataError(
        f"items must be (image, label) pairs or dicts with image and label keys, got {type(item).__name__}"
    )


def _plain_label(value: Any) -> Any:
    if hasattr(value, "tolist"):  # tensors and numpy scalars
        value = value.tolist()
    return value


def to_pil(image: Any, where: str) -> Image.Image:
    """An RGB PIL image from a PIL image, a uint8 / [0, 1] float array or a tensor (C, H, W)."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ImageError(where, f"not an image: a {type(image).__name__} (expected PIL, array or tensor)")
    arr = image
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # (C, H, W) -> (H, W, C)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(where, f"array of shape {image.shape} is not an image (H, W[, C]) or (C, H, W)")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageError(where, "image holds NaN or infinite values")
        low, high = float(arr.min()), float(arr.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise ImageError(
                where,
                f"float image values span [{low:.3g}, {high:.3g}], not [0, 1]: give the dataset without "
                "its normalising transform (deepfeat preprocesses for the backbone)",
            )
        arr = np.rint(np.clip(arr, 0, 1) * 255)
    elif arr.dtype != np.uint8 and (arr.min() < 0 or arr.max() > 255):
        raise ImageError(where, f"{arr.dtype} image values outside 0..255")
    return to_rgb(Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8))))


def torch_dataset(
    dataset: Any,
    *,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    fingerprint: str | None = None,
    progress: bool = True,
) -> TorchImageDataset:
    """Wrap a map-style PyTorch dataset of (image, label) items (see the module docstring)."""
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ConfigError(
            f"{type(dataset).__name__}: a map-style dataset is needed (with __len__ and __getitem__); "
            "iterable datasets have no stable item order to key stored features by"
        )
    label = name or type(dataset).__name__
    n = len(dataset)
    if n == 0:
        raise DataError(f"{label}: the dataset holds no items")
    rows, labels, ignored = list(range(n)), None, []
    for attr in ("targets", "labels"):
        values = getattr(dataset, attr, None)
        if values is not None and not isinstance(values, str) and len(values) == n:
            labels = [_plain_label(v) for v in values]
            break
    if labels is None:
        rows, labels = [], []
        for i in tqdm(range(n), desc=f"labels of {label}", unit="item", disable=not progress):
            try:
                labels.append(_plain_label(_split_item(dataset[i])[1]))
                rows.append(i)
            except Exception as exc:
                ignored.append((f"{label}[{i}]", f"cannot read the item ({type(exc).__name__}: {exc})"))
        if not rows:
            raise DataError(f"{label}: no item could be read (first: {ignored[0][1]})")
    names = list(classes) if classes is not None else getattr(dataset, "classes", None)
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in labels)
    if names is not None and ints and all(0 <= v < len(names) for v in labels):
        class_names, targets = [str(c) for c in names], np.asarray(labels, dtype=np.int64)
    elif classes is not None:
        raise DataError(f"{label}: labels must be indices 0..{len(classes) - 1} into classes=")
    else:
        class_names, targets = labels_to_targets(labels)
    return TorchImageDataset(
        name=label,
        ids=[f"{label}/{i:06d}" for i in rows],
        classes=class_names,
        targets=targets,
        ignored=ignored,
        dataset=dataset,
        rows=np.asarray(rows, dtype=np.int64),
        given_fingerprint=fingerprint,
        progress=progress,
    )


@dataclass
class TorchImageDataset(ImageDataset):
    """Items of a PyTorch dataset: item i is ``dataset[rows[i]]``."""

    dataset: Any = None
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    given_fingerprint: str | None = None
    progress: bool = True
    _content: str | None = field(default=None, init=False, repr=False)

    def source(self, index: int) -> str:
        return f"{self.name}[{int(self.rows[index])}]"

    def load(
        self, index: int, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: DraftRule | None = None
    ) -> Image.Image:
        where = self.source(index)
        try:
            image, _ = _split_item(self.dataset[int(self.rows[index])])
        except Exception as exc:
            raise ImageError(where, f"cannot read the item ({type(exc).__name__}: {exc})") from exc
        img = to_pil(image, where)
        if img.width * img.height > max_pixels:
            raise ImageError(where, f"image too large: {img.width}x{img.height} pixels exceed {max_pixels}")
        return img

    def _hash_content(self, h) -> None:
        if self._content is None:
            self._content = self.given_fingerprint or self._identity()
        h.update(self._content.encode())

    def _identity(self) -> str:
        h = hashlib.sha256(type(self.dataset).__name__.encode())
        h.update(self.rows.tobytes())
        samples = getattr(self.dataset, "samples", None)
        data = getattr(self.dataset, "data", None)
        if isinstance(samples, list) and len(samples) == len(self.dataset):
            for s in samples:
                path = Path(s[0] if isinstance(s, tuple | list) else s)
                try:
                    st = path.stat()
                    h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
                except OSError:
                    h.update(f"{path}\0missing\n".encode("utf-8", "surrogateescape"))
            return h.hexdigest()
        if hasattr(data, "shape") and len(data) == len(self.dataset):
            arr = data.detach().cpu().numpy() if hasattr(data, "detach") else np.asarray(data)
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
            return h.hexdigest()
        for i in tqdm(
            range(len(self)), desc=f"fingerprint of {self.name}", unit="item", disable=not self.progress
        ):
            try:
                h.update(np.asarray(self.load(i)).tobytes())
            except ImageError as exc:
                h.update(f"error {exc.reason}".encode())
        return h.hexdigest()
