"""Image data: robust decoding, datasets and preprocessing."""

from deepfeat.data.datasets import (
    ArrayDataset,
    FileDataset,
    ImageDataset,
    dataset_from_paths,
    digits_dataset,
    folder_dataset,
    manifest_dataset,
    open_dataset,
)
from deepfeat.data.images import load_image, to_rgb
from deepfeat.data.transforms import Preprocess

__all__ = [
    "ArrayDataset",
    "FileDataset",
    "ImageDataset",
    "Preprocess",
    "dataset_from_paths",
    "digits_dataset",
    "folder_dataset",
    "load_image",
    "manifest_dataset",
    "open_dataset",
    "to_rgb",
]
