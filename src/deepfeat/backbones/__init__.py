"""Pretrained networks with named, described layers."""

from deepfeat.backbones.backbone import Backbone
from deepfeat.backbones.layers import LayerCatalog, LayerInfo
from deepfeat.backbones.registry import DEFAULT_BACKBONE, list_backbones, load_backbone

__all__ = [
    "DEFAULT_BACKBONE",
    "Backbone",
    "LayerCatalog",
    "LayerInfo",
    "list_backbones",
    "load_backbone",
]
