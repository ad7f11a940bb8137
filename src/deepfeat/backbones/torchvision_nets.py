"""AlexNet, VGG16 and ResNet-50 (torchvision architectures) with the papers' layer names.

Weights come from a file the user gives (a torchvision state dict, e.g. ``alexnet-owt-7be5be79.pth``)
or a torchvision weights enum (``ResNet50_Weights.IMAGENET1K_V2``, also spelled as that string, found in
torch's hub cache with its evaluation transform and class names); without one the network is randomly
initialised (seeded) and a warning says so. Nothing is downloaded.

Layer outputs are taken after the ReLU, as Caffe's in-place ReLUs leave them (DeCAF's convention), so
``fc6`` is the rectified 4096-d activation; ``fc8`` is the pre-softmax output and ``prob`` its softmax.
torchvision's AlexNet is the single-GPU variant (64-192-384-256-256 channels), not Caffe's
(96-256-384-384-256); Caffe weights need converting to it before use.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from deepfeat.backbones.backbone import Backbone, build_seeded, prepare_for_inference
from deepfeat.backbones.layers import LayerCatalog, LayerInfo
from deepfeat.backbones.weights import (
    apply_weights,
    load_torchvision_weights,
    torchvision_preprocess,
    torchvision_weights,
)
from deepfeat.data.transforms import Preprocess

IMAGENET_PREPROCESS = Preprocess(resize="shorter", size=256, crop=224, interpolation="bilinear")

_PROB = LayerInfo("prob", None, "prob", 1000, None, derived_from="fc8")


def alexnet_catalog() -> LayerCatalog:
    """AlexNet layers (torchvision module indices of the ReLU / pooling outputs)."""
    return LayerCatalog(
        [
            LayerInfo("conv1", "features.1", "conv", 64, 4),
            LayerInfo("pool1", "features.2", "pool", 64, 8),
            LayerInfo("conv2", "features.4", "conv", 192, 8),
            LayerInfo("pool2", "features.5", "pool", 192, 16),
            LayerInfo("conv3", "features.7", "conv", 384, 16),
            LayerInfo("conv4", "features.9", "conv", 256, 16),
            LayerInfo("conv5", "features.11", "conv", 256, 16),
            LayerInfo("pool5", "features.12", "pool", 256, 32),
            LayerInfo("fc6", "classifier.2", "fc", 4096, linear="classifier.1"),
            LayerInfo("fc7", "classifier.5", "fc", 4096, linear="classifier.4"),
            LayerInfo("fc8", "classifier.6", "logits", 1000, linear="classifier.6"),
            _PROB,
        ]
    )


def vgg16_catalog() -> LayerCatalog:
    """VGG16 layers: every conv (after ReLU) and pool, fc6, fc7, fc8 and prob."""
    plan = [(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)]
    channels = [64, 128, 256, 512, 512]
    layers, index = [], 0
    for (block, n_conv), ch in zip(plan, channels):
        stride = 2 ** (block - 1)
        for j in range(1, n_conv + 1):
            layers.append(LayerInfo(f"conv{block}_{j}", f"features.{index + 1}", "conv", ch, stride))
            index += 2
        layers.append(LayerInfo(f"pool{block}", f"features.{index}", "pool", ch, stride * 2))
        index += 1
    layers += [
        LayerInfo("fc6", "classifier.1", "fc", 4096, linear="classifier.0"),
        LayerInfo("fc7", "classifier.4", "fc", 4096, linear="classifier.3"),
        LayerInfo("fc8", "classifier.6", "logits", 1000, linear="classifier.6"),
        _PROB,
    ]
    return LayerCatalog(layers)


def resnet50_catalog() -> LayerCatalog:
    """ResNet-50 layers: stem, pool1, res2..res5 (torchvision layer1..layer4), pool, logits, prob."""
    return LayerCatalog(
        [
            LayerInfo("stem", "relu", "conv", 64, 2),
            LayerInfo("pool1", "maxpool", "pool", 64, 4),
            LayerInfo("res2", "layer1", "conv", 256, 4),
            LayerInfo("res3", "layer2", "conv", 512, 8),
            LayerInfo("res4", "layer3", "conv", 1024, 16),
            LayerInfo("res5", "layer4", "conv", 2048, 32),
            LayerInfo("pool", "avgpool", "pool", 2048, None),
            LayerInfo("logits", "fc", "logits", 1000, linear="fc"),
            LayerInfo("prob", None, "prob", 1000, derived_from="logits"),
        ]
    )


def _builder(name: str, factory: Callable[[], nn.Module], catalog: Callable[[], LayerCatalog]):
    def build(weights=None, seed: int = 0) -> Backbone:
        module = build_seeded(factory, seed)
        member = torchvision_weights(name, weights)
        preprocess, class_names = IMAGENET_PREPROCESS, None
        if member is not None:
            weights_id, source = load_torchvision_weights(module, member, name=name)
            preprocess, class_names = torchvision_preprocess(member), member.meta.get("categories")
        else:
            weights_id, source = apply_weights(module, weights, name=name, seed=seed)
        return Backbone(
            name=name,
            module=prepare_for_inference(module),
            catalog=catalog(),
            preprocess=preprocess,
            weights_id=weights_id,
            weights_source=source,
            class_names=class_names,
            channels_last=True,
        )

    build.__doc__ = (
        f"{name} from torchvision; ``weights`` is a state-dict file, None, 'random' or a torchvision "
        "weights enum (member or spelling) found in torch's hub cache."
    )
    return build


def _alexnet() -> nn.Module:
    from torchvision.models import alexnet

    return alexnet(weights=None)


def _vgg16() -> nn.Module:
    from torchvision.models import vgg16

    return vgg16(weights=None)


def _resnet50() -> nn.Module:
    from torchvision.models import resnet50

    return resnet50(weights=None)


build_alexnet = _builder("alexnet", _alexnet, alexnet_catalog)
build_vgg16 = _builder("vgg16", _vgg16, vgg16_catalog)
build_resnet50 = _builder("resnet50", _resnet50, resnet50_catalog)
