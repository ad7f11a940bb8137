"""Where a job's images come from: an :class:`~deepfeat.data.datasets.ImageDataset` already built,
or its spelling on the command line (``"digits"``, a folder, a manifest file)."""

from __future__ import annotations

import os
from typing import TypeAlias

from deepfeat.data.datasets import ImageDataset, open_dataset

#: A dataset, or what :func:`~deepfeat.data.datasets.open_dataset` opens.
DataSource: TypeAlias = ImageDataset | str | os.PathLike


def as_dataset(source: DataSource) -> ImageDataset:
    """The dataset itself, or the one ``source`` names."""
    return source if isinstance(source, ImageDataset) else open_dataset(source)
