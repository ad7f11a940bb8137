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
from deepfeat.data.hf import HFImageDataset, hf_dataset
from deepfeat.data.images import load_image, load_image_bytes, to_rgb
from deepfeat.data.source import as_dataset
from deepfeat.data.torchdata import TorchImageDataset, torch_dataset
from deepfeat.data.transforms import Preprocess
from deepfeat.data.webdataset import TarDataset, tar_dataset

__all__ = [
    "ArrayDataset",
    "FileDataset",
    "HFImageDataset",
    "ImageDataset",
    "Preprocess",
    "TarDataset",
    "TorchImageDataset",
    "as_dataset",
    "dataset_from_paths",
    "digits_dataset",
    "folder_dataset",
    "hf_dataset",
    "load_image",
    "load_image_bytes",
    "manifest_dataset",
    "open_dataset",
    "tar_dataset",
    "to_rgb",
    "torch_dataset",
]
