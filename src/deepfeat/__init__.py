"""deepfeat: transferable image representations from pretrained convnets, and how well they transfer."""

from deepfeat._version import __version__
from deepfeat.backbones import Backbone, list_backbones, load_backbone
from deepfeat.data import (
    Preprocess,
    dataset_from_paths,
    digits_dataset,
    folder_dataset,
    manifest_dataset,
    open_dataset,
)
from deepfeat.errors import DeepfeatError
from deepfeat.features import (
    FeatureExtractor,
    FeatureSet,
    FeatureStore,
    LayerActivations,
    extract,
)

__all__ = [
    "Backbone",
    "DeepfeatError",
    "FeatureExtractor",
    "FeatureSet",
    "FeatureStore",
    "LayerActivations",
    "Preprocess",
    "__version__",
    "dataset_from_paths",
    "digits_dataset",
    "extract",
    "folder_dataset",
    "list_backbones",
    "load_backbone",
    "manifest_dataset",
    "open_dataset",
]
