"""Any timm model by name (``timm:<model>``), with a catalog built from timm's feature metadata.

Layers: ``stage<i>`` for each entry of the model's ``feature_info`` (timm's stage outputs, with their
channels and reduction), then ``pool``, ``logits`` and ``prob`` when the model has a classifier.
Weights come from a file; ``weights="pretrained"`` asks timm to download them (network needed).
"""

from __future__ import annotations

import os

from torch import nn

from deepfeat.backbones.backbone import Backbone, build_seeded, prepare_for_inference
from deepfeat.backbones.layers import LayerCatalog, LayerInfo
from deepfeat.backbones.weights import apply_weights
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import BackboneError, UnknownNameError


def build_timm(model_name: str, weights: str | os.PathLike | None = None, seed: int = 0) -> Backbone:
    """A timm model; ``weights``: a state-dict file, None / 'random' (seeded random, warned for None)
    or 'pretrained' (downloaded by timm)."""
    import timm

    if model_name not in timm.list_models():
        close = timm.list_models(f"*{model_name}*")[:20] or timm.list_models()[:20]
        raise UnknownNameError("timm model", model_name, close)
    pretrained = weights == "pretrained"
    try:
        module = build_seeded(lambda: timm.create_model(model_name, pretrained=pretrained), seed)
    except Exception as exc:
        raise BackboneError(f"timm:{model_name}: cannot build the model ({exc})") from exc
    if pretrained:
        weights_id, source = (
            f"timm-pretrained:{module.pretrained_cfg.get('hf_hub_id') or model_name}",
            "timm hub",
        )
    else:
        weights_id, source = apply_weights(module, weights, name=f"timm:{model_name}", seed=seed)
    cfg = module.pretrained_cfg
    crop = int(cfg.get("input_size", (3, 224, 224))[-1])
    preprocess = Preprocess(
        resize="shorter",
        size=int(crop / float(cfg.get("crop_pct", 0.875))),
        crop=crop,
        interpolation=cfg.get("interpolation", "bicubic")
        if cfg.get("interpolation") in ("bilinear", "bicubic")
        else "bicubic",
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
    )
    return Backbone(
        name=f"timm:{model_name}",
        module=prepare_for_inference(module),
        catalog=_catalog(module),
        preprocess=preprocess,
        weights_id=weights_id,
        weights_source=source,
        channels_last=True,
    )


def _catalog(module) -> LayerCatalog:
    layers = []
    info = getattr(module, "feature_info", None) or []
    for i, entry in enumerate(info):
        layers.append(
            LayerInfo(
                f"stage{i + 1}",
                entry["module"],
                "conv",
                int(entry["num_chs"]),
                int(entry["reduction"]),
            )
        )
    names = dict(module.named_modules())
    pool_path = next((p for p in ("global_pool", "head.global_pool") if p in names), None)
    classifier_path = module.pretrained_cfg.get("classifier")
    num_classes = int(getattr(module, "num_classes", 0) or 0)
    if pool_path is not None:
        layers.append(LayerInfo("pool", pool_path, "pool", int(module.num_features), None))
    if classifier_path in names and num_classes > 0:
        linear = classifier_path if isinstance(names[classifier_path], nn.Linear) else None
        layers.append(LayerInfo("logits", classifier_path, "logits", num_classes, None, linear=linear))
        layers.append(LayerInfo("prob", None, "prob", num_classes, None, derived_from="logits"))
    if not layers:
        raise BackboneError(f"{type(module).__name__}: timm gives no feature metadata for this model")
    return LayerCatalog(layers)
