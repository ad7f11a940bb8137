"""Backbones by name: ``load_backbone`` and ``list_backbones``."""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from pathlib import Path

from deepfeat.backbones import efficientnet_lite, torchvision_nets
from deepfeat.backbones.backbone import Backbone
from deepfeat.backbones.finetuned import is_finetune_checkpoint, load_finetuned
from deepfeat.checkpoint import keeps_rng
from deepfeat.errors import ConfigError, UnknownNameError
from deepfeat.validation import check_int

DEFAULT_BACKBONE = "efficientnet_lite0"

_BUILDERS: dict[str, tuple[Callable[..., Backbone], str]] = {
    "efficientnet_lite0": (efficientnet_lite.build, "ImageNet weights bundled (offline)"),
    "alexnet": (
        torchvision_nets.build_alexnet,
        "torchvision AlexNet; weights from a file or AlexNet_Weights.* (torch hub cache), else random",
    ),
    "vgg16": (torchvision_nets.build_vgg16, "torchvision VGG16; as AlexNet (VGG16_Weights.*)"),
    "resnet50": (
        torchvision_nets.build_resnet50,
        "torchvision ResNet-50; as AlexNet (ResNet50_Weights.*)",
    ),
}


def list_backbones() -> dict[str, str]:
    """Backbone names with a one-line description; any ``timm:<model>`` is accepted too."""
    out = {name: text for name, (_, text) in _BUILDERS.items()}
    out["timm:<model>"] = (
        "any timm model (name[.tag], hf-hub:org/name, local-dir:PATH); cached pretrained weights, "
        "'pretrained' (downloads unless HF_HUB_OFFLINE), a file or random; see 'backbones --all'"
    )
    out["bigan:<checkpoint>"] = (
        "the encoder (or discriminator) of a 'deepfeat bigan train --arch conv' run; weights from the "
        "checkpoint, or 'random'"
    )
    return out


@keeps_rng
def load_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | Path | None = None,
    seed: int = 0,
    *,
    fully_convolutional: bool = False,
) -> Backbone:
    """Build backbone ``name`` ready for extraction.

    ``weights``: None for the default (bundled ImageNet weights for efficientnet_lite0, the cached
    pretrained weights for a timm name, a seeded random initialisation with a warning otherwise),
    ``"random"`` for a seeded random initialisation, the path of a weights file (a PyTorch state dict,
    or a deepfeat fine-tuning checkpoint, which brings its own output layer), a torchvision weights
    enum for alexnet / vgg16 / resnet50 (``ResNet50_Weights.IMAGENET1K_V2`` or that string, read from
    torch's hub cache), or ``"pretrained"`` for timm names (cached, else downloaded unless
    ``HF_HUB_OFFLINE`` is set). See :mod:`deepfeat.backbones.timm_nets` for timm names.

    ``"bigan:<checkpoint>"`` names the feature network of a convolutional BiGAN run (see
    :mod:`deepfeat.backbones.bigan`); its weights come from the checkpoint (or ``weights="random"``,
    or a fine-tuning checkpoint of that network).

    ``fully_convolutional``: run AlexNet / VGG16's fully connected layers densely as convolutions over
    large inputs (see :mod:`deepfeat.backbones.dense`); the other backbones are convolutional up to
    their global pooling already and are returned unchanged.

    The caller's torch random stream is left where it was (seeded initialisations use ``seed``).
    """
    if not isinstance(name, str):
        raise ConfigError(
            f"backbone name must be a string such as {DEFAULT_BACKBONE!r} (see list_backbones()), got "
            f"{type(name).__name__} {name!r:.60}"
        )
    if not isinstance(weights, str | os.PathLike | enum.Enum | None):
        raise ConfigError(
            f"weights must be None, 'random', a weights file, a torchvision weights enum or, for timm names, "
            f"'pretrained'; got {type(weights).__name__} {weights!r:.60}"
        )
    seed = check_int("seed", seed)
    backbone = _load(name, weights, seed)
    if fully_convolutional and name in DENSE_VARIANTS:
        from deepfeat.backbones.dense import fully_convolutional as dense

        backbone = dense(backbone)
    return backbone


#: Backbones with a fully convolutional variant (``load_backbone(..., fully_convolutional=True)``).
DENSE_VARIANTS = ("alexnet", "vgg16")


def _load(name: str, weights, seed: int) -> Backbone:
    if name.startswith("bigan:"):
        from deepfeat.backbones.bigan import load_bigan

        def build(weights=weights):
            return load_bigan(name.removeprefix("bigan:"), weights=weights, seed=seed)
    elif name.startswith("timm:"):
        from deepfeat.backbones.timm_nets import build_timm

        def build(weights=weights):
            return build_timm(name.removeprefix("timm:"), weights=weights, seed=seed)
    elif name in _BUILDERS:

        def build(weights=weights):
            return _BUILDERS[name][0](weights=weights, seed=seed)
    else:
        raise UnknownNameError("backbone", name, list_backbones())
    if (
        isinstance(weights, str | os.PathLike)
        and str(weights) not in ("random", "pretrained")
        and is_finetune_checkpoint(weights)
    ):
        return load_finetuned(name, weights, build)
    return build()
