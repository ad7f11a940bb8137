"""Feature methods, one-pass extraction and the feature store."""

from deepfeat.features.activations import LayerActivations
from deepfeat.features.activeness import Activeness, activeness_maps
from deepfeat.features.base import FeatureMethod, OutputSpec
from deepfeat.features.capture import LayerCapture
from deepfeat.features.featureset import FeatureKind, FeatureSet, concat_features
from deepfeat.features.fisher import DiagonalGMM, FisherEncoder, fisher_vectors
from deepfeat.features.gradients import GradientFeatures
from deepfeat.features.pipeline import Extraction, extract
from deepfeat.features.pooling import POOLINGS, pool_maps
from deepfeat.features.store import FeatureStore
from deepfeat.features.transformer import FeatureExtractor

__all__ = [
    "POOLINGS",
    "Activeness",
    "DiagonalGMM",
    "Extraction",
    "FeatureExtractor",
    "FeatureKind",
    "FeatureMethod",
    "FeatureSet",
    "FeatureStore",
    "FisherEncoder",
    "GradientFeatures",
    "LayerActivations",
    "LayerCapture",
    "OutputSpec",
    "activeness_maps",
    "concat_features",
    "extract",
    "fisher_vectors",
    "pool_maps",
]
