"""BiGAN encoders as backbones: the AlexNet-like convolutional encoder of thesis chapter 5 (appendix
5.5.3.2, scaled to 32 or 64 pixel inputs), its layer catalog, batch norm folded into the
convolutions for evaluation, and loading it from a BiGAN checkpoint.

``load_backbone("bigan:PATH")`` reads a checkpoint written by :mod:`deepfeat.tasks.bigan` (a
:mod:`deepfeat.checkpoint` of kind ``"bigan"``; nothing in it is executed), rebuilds the network the
run learned features in (the encoder E; the discriminator D for the discriminator baseline, whose
x-path has the encoder's architecture as in the thesis), folds every batch norm into the convolution
before it (the thesis evaluates without batch norm, its scale and bias merged into the weights) and
returns a :class:`~deepfeat.backbones.backbone.Backbone` whose preprocessing is the training one
(shorter side to 72/64 of the input, centre crop of the input size, pixels scaled to [-1, 1]) and
whose weights id is the checkpoint's sha256. ``weights="random"`` gives the same architecture with
the training initialisation (N(0, 0.02) weights, seeded) instead of the checkpoint's weights.

Layers: ``conv1`` .. ``conv5`` (after the leaky ReLU), ``pool1``, ``pool2`` (3x3 max pooling, stride
2) and ``output`` (the linear prediction of z, or of the discriminator's logit).
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from deepfeat.backbones.backbone import (
    Backbone,
    build_seeded,
    load_weights_strict,
    prepare_for_inference,
    sha256_file,
)
from deepfeat.backbones.layers import LayerCatalog, LayerInfo
from deepfeat.checkpoint import load_checkpoint
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import BackboneError, CheckpointError, ConfigError

KIND = "bigan"
MARKER = "deepfeat_bigan"
#: AlexNet's 96-256-384-384-256 channels divided by 4 (CPU-sized; configurable).
ENCODER_WIDTHS = (24, 64, 96, 96, 64)
INPUT_SIZES = (32, 64)
LEAK = 0.2
INIT_STD = 0.02
#: the thesis resizes the shorter side to 72 before a random 64 x 64 crop: the same ratio at any size
RESIZE_RATIO = 72 / 64


def resize_side(input_size: int) -> int:
    """Shorter side images are resized to before the (random or centre) crop of ``input_size``."""
    return round(input_size * RESIZE_RATIO)


def encoder_preprocess(input_size: int) -> Preprocess:
    """Evaluation preprocessing of a conv BiGAN network: shorter side to 72/64 of the input size, centre
    crop of the input size, pixels scaled to [-1, 1] (mean 0.5, std 0.5)."""
    return Preprocess(
        resize="shorter",
        size=resize_side(input_size),
        crop=input_size,
        interpolation="bilinear",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )


def check_encoder_config(widths: Sequence[int], input_size: int, out_features: int) -> tuple[int, ...]:
    """The widths as a tuple of 5 positive ints; a ConfigError naming the argument otherwise."""
    if input_size not in INPUT_SIZES:
        raise ConfigError(f"input_size must be one of {INPUT_SIZES} (pixels), got {input_size!r}")
    try:
        widths = tuple(int(w) for w in widths)
    except (TypeError, ValueError):
        raise ConfigError(f"encoder widths must be 5 whole numbers, got {widths!r}") from None
    if len(widths) != 5 or min(widths) < 1:
        raise ConfigError(f"encoder widths must be 5 positive channel counts (conv1..conv5), got {widths}")
    if int(out_features) < 1:
        raise ConfigError(f"out_features must be at least 1, got {out_features}")
    return widths


def _block(cin: int, cout: int, kernel: int, stride: int, batchnorm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(LEAK))
    return nn.Sequential(*layers)


class ConvEncoder(nn.Sequential):
    """AlexNet-like encoder through conv5, then a linear prediction of ``out_features`` values.

    conv1 5x5 (stride 1 at 32 pixels, 2 at 64) -> pool1 -> conv2 5x5 -> pool2 -> conv3, conv4, conv5
    3x3, every convolution followed by batch norm (learned scale and bias; ``batchnorm=False`` gives
    biased convolutions instead, the evaluation form) and a leaky ReLU (0.2); the conv5 map (8 x 8)
    feeds the linear ``output`` layer, as the thesis' encoder feeds conv5 to its prediction of z.
    """

    def __init__(
        self,
        out_features: int,
        widths: Sequence[int] = ENCODER_WIDTHS,
        input_size: int = 32,
        batchnorm: bool = True,
    ):
        w = check_encoder_config(widths, input_size, out_features)
        s1 = input_size // 32
        super().__init__(
            OrderedDict(
                conv1=_block(3, w[0], 5, s1, batchnorm),
                pool1=nn.MaxPool2d(3, 2, padding=1),
                conv2=_block(w[0], w[1], 5, 1, batchnorm),
                pool2=nn.MaxPool2d(3, 2, padding=1),
                conv3=_block(w[1], w[2], 3, 1, batchnorm),
                conv4=_block(w[2], w[3], 3, 1, batchnorm),
                conv5=_block(w[3], w[4], 3, 1, batchnorm),
                flatten=nn.Flatten(),
                output=nn.Linear(w[4] * 8 * 8, int(out_features)),
            )
        )
        self.widths = w
        self.input_size = int(input_size)
        self.out_features = int(out_features)
        self.batchnorm = bool(batchnorm)

    def config(self) -> dict:
        """Plain-JSON architecture (what a checkpoint records to rebuild it)."""
        return {
            "kind": "conv",
            "widths": list(self.widths),
            "input_size": self.input_size,
            "out_features": self.out_features,
        }


def conv_encoder_catalog(widths: Sequence[int], input_size: int, out_features: int) -> LayerCatalog:
    """The layers of :class:`ConvEncoder`: conv1..conv5, pool1, pool2 and output."""
    w = check_encoder_config(widths, input_size, out_features)
    s = input_size // 32
    return LayerCatalog(
        [
            LayerInfo("conv1", "conv1", "conv", w[0], s),
            LayerInfo("pool1", "pool1", "pool", w[0], 2 * s),
            LayerInfo("conv2", "conv2", "conv", w[1], 2 * s),
            LayerInfo("pool2", "pool2", "pool", w[1], 4 * s),
            LayerInfo("conv3", "conv3", "conv", w[2], 4 * s),
            LayerInfo("conv4", "conv4", "conv", w[3], 4 * s),
            LayerInfo("conv5", "conv5", "conv", w[4], 4 * s),
            LayerInfo("output", "output", "fc", int(out_features), linear="output"),
        ]
    )


def init_normal_(module: nn.Module, std: float = INIT_STD) -> nn.Module:
    """The thesis' initialisation: every convolution and linear weight ~ N(0, std), biases 0, batch
    norm scales 1 and shifts 0. Uses the global torch RNG; returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


@torch.no_grad()
def fold_batchnorm(encoder: ConvEncoder) -> ConvEncoder:
    """The evaluation form of ``encoder``: every batch norm (its running statistics, scale and shift)
    merged into the convolution before it, which gains a bias; equal to ``encoder.eval()`` up to
    float rounding. A copy: ``encoder`` is left as it is."""
    if not encoder.batchnorm:
        return copy.deepcopy(encoder)
    folded = ConvEncoder(encoder.out_features, encoder.widths, encoder.input_size, batchnorm=False)
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        conv, bn = encoder.get_submodule(name)[0], encoder.get_submodule(name)[1]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        target = folded.get_submodule(name)[0]
        target.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        target.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    folded.output.load_state_dict(encoder.output.state_dict())
    return folded


# -- checkpoints ---------------------------------------------------------------------------------
def read_bigan_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """The model description (``meta["deepfeat_bigan"]``) and the state dicts of a BiGAN checkpoint,
    read without running code from the file; a BackboneError naming the file otherwise."""
    path = Path(path)
    try:
        ck = load_checkpoint(path, kind=KIND)
    except CheckpointError as exc:
        raise BackboneError(
            f"{exc}; bigan:PATH takes a checkpoint written by 'deepfeat bigan train'"
        ) from None
    model = ck.meta.get(MARKER)
    if not isinstance(model, dict) or not isinstance(model.get("feature_net"), dict):
        raise BackboneError(f"{path}: damaged BiGAN checkpoint (no {MARKER!r} model description)")
    return model, ck.state


def load_bigan(path: str | os.PathLike, weights: str | os.PathLike | None = None, seed: int = 0) -> Backbone:
    """The feature network of the BiGAN checkpoint at ``path`` as a backbone (see the module
    docstring); ``weights``: None (the checkpoint's) or ``"random"`` (seeded initialisation)."""
    path = Path(path)
    model, state = read_bigan_checkpoint(path)
    net = model["feature_net"]
    if net.get("kind") != "conv":
        raise BackboneError(
            f"{path}: a {net.get('kind')!r} BiGAN ({model.get('arch')} architecture); only convolutional "
            "runs ('deepfeat bigan train DATA --arch conv') make backbones; evaluate MLP runs with "
            "'deepfeat bigan evaluate RUN'"
        )
    try:
        widths, size, out = net["widths"], int(net["input_size"]), int(net["out_features"])
        check_encoder_config(widths, size, out)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise BackboneError(f"{path}: damaged BiGAN model description ({exc})") from None
    module = build_seeded(lambda: init_normal_(ConvEncoder(out, widths, size)), seed)
    if weights is None:
        weights_state = state.get(net.get("state", "encoder"))
        if not isinstance(weights_state, dict):
            raise BackboneError(f"{path}: the checkpoint holds no {net.get('state')!r} weights")
        load_weights_strict(module, weights_state, str(path))
        weights_id, source = f"sha256:{sha256_file(path)}", str(path)
    elif str(weights) == "random":
        weights_id, source = f"random:seed={seed}", "random"
    else:
        raise BackboneError(
            f"bigan:{path} takes its weights from the checkpoint; weights may only be 'random' "
            f"(the same architecture, seeded initialisation), got {str(weights)!r}"
        )
    module.eval()
    return Backbone(
        name="bigan",
        module=prepare_for_inference(fold_batchnorm(module)),
        catalog=conv_encoder_catalog(widths, size, out),
        preprocess=encoder_preprocess(size),
        weights_id=weights_id,
        weights_source=source,
        channels_last=True,
        extra={"bigan": {k: model[k] for k in ("method", "arch", "feature_net") if k in model}},
        variant=str(net.get("state", "encoder")),
    )
