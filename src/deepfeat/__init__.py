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
    Activeness,
    FeatureExtractor,
    FeatureSet,
    FeatureStore,
    FisherEncoder,
    GradientFeatures,
    LayerActivations,
    extract,
)
from deepfeat.kernels import FactoredLayout, factored_kernel
from deepfeat.probes import KernelProbe, LinearProbe, probe_for

__all__ = [
    "Activeness",
    "Backbone",
    "DeepfeatError",
    "FactoredLayout",
    "FeatureExtractor",
    "FeatureSet",
    "FeatureStore",
    "FisherEncoder",
    "GradientFeatures",
    "KernelProbe",
    "LayerActivations",
    "LinearProbe",
    "Preprocess",
    "__version__",
    "dataset_from_paths",
    "digits_dataset",
    "extract",
    "factored_kernel",
    "folder_dataset",
    "list_backbones",
    "load_backbone",
    "manifest_dataset",
    "open_dataset",
    "probe_for",
]
