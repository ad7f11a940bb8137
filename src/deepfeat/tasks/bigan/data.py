"""Training data of a BiGAN run: MNIST digits as flat vectors (the MLP) or any image folder (the
convnets), held in memory as uint8 and turned into batches on the fly.

``"mnist"`` is looked up as: ``mnist:PATH``; the file named by ``$DEEPFEAT_MNIST``;
``$DEEPFEAT_DATASETS/mnist/mnist.npz``; ``../shared/datasets/mnist/mnist.npz`` from the current
folder; the same path next to the source checkout (``<repository>/../shared/...``). The file is an
``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` (uint8, 28 x 28 digits); training uses
``x_train`` only, the test digits are for evaluation.

Image folders (anything :func:`~deepfeat.data.datasets.open_dataset` opens) are decoded once, with
bad files reported by path and skipped: each image's shorter side is resized to 72/64 of the input
size and the centre square kept; every batch then takes a random crop of the input size, flipped
horizontally with probability 1/2, scaled to [-1, 1] (the thesis' 72 -> 64 preprocessing; keeping
only the centre square of non-square images is this implementation's simplification).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepfeat.backbones.bigan import resize_side
from deepfeat.data.datasets import ImageDataset, open_dataset
from deepfeat.data.loader import iter_batches
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import DataError

MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
MNIST_RELATIVE = Path("shared") / "datasets" / "mnist" / "mnist.npz"


def mnist_candidates() -> list[Path]:
    """Where ``"mnist"`` is looked for, in order (see the module docstring)."""
    out = []
    if os.environ.get("DEEPFEAT_MNIST"):
        out.append(Path(os.environ["DEEPFEAT_MNIST"]))
    if os.environ.get("DEEPFEAT_DATASETS"):
        out.append(Path(os.environ["DEEPFEAT_DATASETS"]) / "mnist" / "mnist.npz")
    out.append(Path.cwd().parent / MNIST_RELATIVE)
    out.append(Path(__file__).resolve().parents[5] / MNIST_RELATIVE)
    return out


def is_mnist(spec: str | os.PathLike) -> bool:
    """True for the spellings ``mnist`` and ``mnist:PATH``."""
    text = str(spec)
    return text == "mnist" or text.startswith("mnist:")


def resolve_mnist(spec: str = "mnist") -> Path:
    """The MNIST ``.npz`` file ``spec`` names; a DataError listing the places tried otherwise."""
    if spec.startswith("mnist:"):
        path = Path(spec.removeprefix("mnist:"))
        if not path.is_file():
            raise DataError(
                f"{path}: no such MNIST file (mnist:PATH names an .npz with {', '.join(MNIST_KEYS)})"
            )
        return path
    tried = mnist_candidates()
    for path in tried:
        if path.is_file():
            return path
    raise DataError(
        "mnist: no MNIST file found; tried "
        + ", ".join(str(p) for p in tried)
        + "; give mnist:PATH or set DEEPFEAT_MNIST to the .npz file"
    )


@dataclass
class Mnist:
    """The MNIST arrays (uint8 digits (N, 28, 28), int64 labels) and the file they came from."""

    path: Path
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_mnist(spec: str = "mnist") -> Mnist:
    """Read the MNIST file ``spec`` names, checking its arrays."""
    path = resolve_mnist(spec)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in MNIST_KEYS}
    except KeyError as exc:
        raise DataError(f"{path}: no array {exc} (an MNIST .npz holds {', '.join(MNIST_KEYS)})") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 3 or len(x) != len(y) or len(x) == 0:
            raise DataError(
                f"{path}: x_{split} must be uint8 (N, H, W) digits with one label each, got {x.dtype} "
                f"{x.shape} and {len(y)} labels"
            )
    return Mnist(
        path,
        arrays["x_train"],
        arrays["y_train"].astype(np.int64),
        arrays["x_test"],
        arrays["y_test"].astype(np.int64),
    )


@dataclass
class TrainingData:
    """Images for training, uint8: (N, H, W) digits used as flat vectors in [0, 1] (``kind``
    ``"vectors"``), or (N, R, R, 3) images cropped to ``crop`` and scaled to [-1, 1] (``"images"``).
    ``labels`` are kept for evaluation only; ``skipped`` lists (path, reason) of undecodable files."""

    name: str
    kind: str
    images: np.ndarray
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    crop: int | None = None
    source: dict = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    splits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def in_features(self) -> int:
        """Values per flattened image."""
        return int(np.prod(self.images.shape[1:]))

    def fingerprint(self) -> str:
        """sha256 of the pixels (and shape) the run trains on."""
        h = hashlib.sha256(str(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        return h.hexdigest()

    def subset(self, rows: np.ndarray) -> TrainingData:
        """The same data restricted to ``rows``."""
        return TrainingData(
            self.name,
            self.kind,
            self.images[rows],
            None if self.labels is None else self.labels[rows],
            self.classes,
            self.crop,
            dict(self.source, subset=len(rows)),
            list(self.skipped),
            None if self.splits is None else self.splits[rows],
        )

    def batch(self, rows: np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        """Float batch of ``rows``: flat vectors in [0, 1]; or images randomly cropped and flipped with
        ``generator`` (centre crop, no flip when it is None), NCHW in [-1, 1]."""
        if self.kind == "vectors":
            x = torch.from_numpy(self.images[rows].reshape(len(rows), -1))
            return x.float().div_(255.0)
        side, crop = self.images.shape[1], int(self.crop or self.images.shape[1])
        if generator is None:
            tops = lefts = np.full(len(rows), (side - crop) // 2)
            flips = np.zeros(len(rows), dtype=bool)
        else:
            offsets = torch.randint(0, side - crop + 1, (2, len(rows)), generator=generator).numpy()
            tops, lefts = offsets
            flips = (torch.rand(len(rows), generator=generator) < 0.5).numpy()
        out = np.empty((len(rows), crop, crop, 3), dtype=np.uint8)
        for i, (r, t, left, f) in enumerate(zip(rows, tops, lefts, flips)):
            patch = self.images[r, t : t + crop, left : left + crop]
            out[i] = patch[:, ::-1] if f else patch
        x = torch.from_numpy(out).permute(0, 3, 1, 2).float()
        return x.div_(127.5).sub_(1.0)


def mnist_training_data(mnist: Mnist, spec: str) -> TrainingData:
    """MNIST's training digits as flat vectors."""
    return TrainingData(
        name="mnist",
        kind="vectors",
        images=mnist.x_train,
        labels=mnist.y_train,
        classes=[str(c) for c in range(int(mnist.y_train.max()) + 1)],
        source={"spec": spec, "path": str(mnist.path), "split": "train"},
    )


def image_training_data(
    dataset: ImageDataset,
    input_size: int,
    *,
    workers: int = 2,
    progress: Callable | None = None,
) -> TrainingData:
    """Every decodable image of ``dataset``, shorter side resized to 72/64 of ``input_size`` and centre
    square kept, as uint8 (N, R, R, 3); undecodable files are listed in ``skipped``."""
    side = resize_side(input_size)
    prep = Preprocess(resize="shorter", size=side, crop=side, interpolation="bilinear")
    images, kept, skipped = [], [], []
    batches = iter_batches(dataset, np.arange(len(dataset)), prep, batch_size=64, workers=workers)
    for batch in progress(batches) if progress else batches:
        for pos in batch.ok:
            images.append(batch.images[pos])
            kept.append(int(batch.rows[pos]))
        skipped += [(dataset.source(r), e.reason) for r, e in batch.errors.items()]
    if not images:
        raise DataError(f"{dataset.name}: no image could be decoded ({len(skipped)} failed)")
    kept = np.array(kept)
    labels = None if dataset.multilabel else dataset.targets[kept].astype(np.int64)
    return TrainingData(
        name=dataset.name,
        kind="images",
        images=np.stack(images),
        labels=labels,
        classes=list(dataset.classes),
        crop=input_size,
        source={
            "spec": str(getattr(dataset, "root", None) or dataset.name),
            "fingerprint": dataset.fingerprint(),
        },
        skipped=skipped,
        splits=None if dataset.splits is None else np.asarray(dataset.splits, dtype=object)[kept],
    )


def open_training_data(
    spec: str | os.PathLike | ImageDataset,
    arch: str,
    input_size: int = 32,
    *,
    progress: Callable | None = None,
) -> TrainingData:
    """The data ``spec`` names for architecture ``arch``: ``mnist`` (or ``mnist:PATH``) for the MLP
    (digits as vectors) or the convnets (digits as RGB images); an image folder, manifest or
    dataset for the convnets."""
    if not isinstance(spec, ImageDataset) and is_mnist(spec):
        mnist = load_mnist(str(spec))
        data = mnist_training_data(mnist, str(spec))
        if arch == "mlp":
            return data
        side = resize_side(input_size)
        from PIL import Image

        resized = np.stack(
            [
                np.asarray(Image.fromarray(x).resize((side, side), Image.Resampling.BILINEAR))
                for x in data.images
            ]
        )
        return TrainingData(
            "mnist",
            "images",
            np.repeat(resized[..., None], 3, axis=3),
            data.labels,
            data.classes,
            input_size,
            data.source,
        )
    if arch == "mlp":
        raise DataError(
            f"{spec}: the MLP architecture trains on permutation-invariant MNIST ('mnist' or mnist:PATH); "
            "use --arch conv for image folders"
        )
    dataset = spec if isinstance(spec, ImageDataset) else open_dataset(spec)
    return image_training_data(dataset, input_size, progress=progress)
