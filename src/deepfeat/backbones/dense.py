"""Fully convolutional AlexNet and VGG16: the fully connected layers applied densely over large inputs.

torchvision's AlexNet and VGG16 squeeze pool5 to 6x6 / 7x7 with an adaptive average pooling before
their fully connected layers, so on a large image (InterActive's ~512^2 extraction) fc6 and fc7 see a
blurred, resampled pool5. The fully convolutional variant runs the network densely instead, as the
InterActive poster does: fc6 becomes a 6x6 (AlexNet) / 7x7 (VGG16) convolution over pool5 and fc7,
fc8 1x1 convolutions, with the same weights; fc6 and fc7 are then maps (averaged over their positions
by the ``avg`` pooling), and the class scores fc8 are averaged over positions before the softmax. At
224x224 input the maps are 1x1 and the variant equals the ordinary network.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from deepfeat.backbones.backbone import Backbone, prepare_for_inference
from deepfeat.backbones.layers import LayerCatalog
from deepfeat.errors import ConfigError

VARIANT = "fully-convolutional"


class GlobalAverage(nn.Module):
    """(N, C, H, W) -> (N, C): the mean over positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class DenseClassifierNet(nn.Module):
    """``features`` then the classifier as convolutions, class scores averaged over positions."""

    def __init__(self, features: nn.Module, classifier: nn.Sequential, min_side: int):
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.logits_pool = GlobalAverage()
        self.min_side = min_side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.features(x)
        if min(maps.shape[-2:]) < self.min_side:
            raise ConfigError(
                f"the fully convolutional network needs pool5 maps of at least {self.min_side}x"
                f"{self.min_side} (inputs of about {32 * self.min_side} pixels or more), got "
                f"{tuple(maps.shape[-2:])} from a {tuple(x.shape[-2:])} input"
            )
        return self.logits_pool(self.classifier(maps))


def _as_conv(linear: nn.Linear, in_channels: int, side: int) -> nn.Conv2d:
    """A convolution computing ``linear`` at every position of a (in_channels, side, side) window."""
    conv = nn.Conv2d(in_channels, linear.out_features, side)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(linear.out_features, in_channels, side, side))
        conv.bias.copy_(linear.bias)
    return conv


def fully_convolutional(backbone: Backbone) -> Backbone:
    """The fully convolutional variant of a torchvision AlexNet / VGG16 backbone (same weights)."""
    module = backbone.module
    pool = getattr(module, "avgpool", None)
    classifier = getattr(module, "classifier", None)
    if not isinstance(pool, nn.AdaptiveAvgPool2d) or not isinstance(classifier, nn.Sequential):
        raise ConfigError(
            f"{backbone.name}: only torchvision AlexNet / VGG16 have a fully convolutional variant"
        )
    side = pool.output_size if isinstance(pool.output_size, int) else pool.output_size[0]
    layers, channels, first = [], None, True
    for child in classifier:
        if isinstance(child, nn.Linear):
            if first:
                channels = child.in_features // (side * side)
                layers.append(_as_conv(child, channels, side))
                first = False
            else:
                layers.append(_as_conv(child, child.in_features, 1))
        else:
            layers.append(child)
    dense = DenseClassifierNet(module.features, nn.Sequential(*layers), side)
    catalog = LayerCatalog(
        dataclasses.replace(layer, stride=32)
        if layer.kind == "fc"
        else dataclasses.replace(layer, module="logits_pool")
        if layer.kind == "logits"
        else layer
        for layer in backbone.catalog
    )
    return dataclasses.replace(
        backbone, module=prepare_for_inference(dense), catalog=catalog, variant=VARIANT
    )
