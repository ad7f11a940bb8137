"""Where a job's images come from: an :class:`~deepfeat.data.datasets.ImageDataset` already built, a
PyTorch map-style ``Dataset`` of (image, label) items, a Hugging Face ``datasets.Dataset`` /
``DatasetDict``, or a spelling (``"digits"``, a folder, a manifest, tar shards, ``hf:NAME[:SPLIT]``)."""

from __future__ import annotations

import os
from typing import Any, TypeAlias

from deepfeat.data.datasets import ImageDataset, open_dataset
from deepfeat.errors import ConfigError

#: A dataset, what :func:`~deepfeat.data.datasets.open_dataset` opens, or a PyTorch / Hugging Face
#: dataset object.
DataSource: TypeAlias = ImageDataset | str | os.PathLike | Any


def as_dataset(source: DataSource) -> ImageDataset:
    """The dataset itself, the one ``source`` names, or a PyTorch / Hugging Face dataset wrapped."""
    if isinstance(source, ImageDataset):
        return source
    if isinstance(source, str | os.PathLike):
        return open_dataset(source)
    module = type(source).__module__ or ""
    if module.startswith("datasets"):
        from deepfeat.data.hf import hf_dataset

        return hf_dataset(source)
    try:
        from torch.utils.data import Dataset
    except ImportError:  # pragma: no cover - torch is a dependency
        Dataset = ()
    if isinstance(source, list | tuple):
        raise ConfigError(
            "data is a list; for image files use dataset_from_paths(paths, labels), for (image, label) "
            "pairs a torch Dataset"
        )
    if isinstance(source, Dataset) or (hasattr(source, "__getitem__") and hasattr(source, "__len__")):
        from deepfeat.data.torchdata import torch_dataset

        return torch_dataset(source)
    raise ConfigError(
        f"data must be a dataset, a path or a name, got {type(source).__name__}; valid: an ImageDataset, "
        "a torch Dataset of (image, label), a datasets.Dataset, 'digits', a folder, a manifest, .tar shards"
    )
