"""Backbones with a new output layer, and fine-tuning checkpoints loaded back as backbones.

A fine-tuning checkpoint (written by :mod:`deepfeat.training.finetune`) is a ``torch.save`` dict with
the key ``"deepfeat_finetune"`` (the backbone name, number of classes, class names, the trainable
scope) and ``"state_dict"``. ``load_backbone(name, weights=checkpoint)`` recognises it, rebuilds the
architecture with the new output layer and loads the weights, so every feature method and analysis
runs on fine-tuned networks; the weights id is the checkpoint's sha256.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from deepfeat.backbones.backbone import Backbone, load_weights_strict, prepare_for_inference, sha256_file
from deepfeat.backbones.layers import LayerCatalog
from deepfeat.errors import BackboneError, ConfigError

MARKER = "deepfeat_finetune"


def output_layer_path(backbone: Backbone) -> str:
    """Dotted path of the weight layer that produces the logits."""
    for layer in backbone.catalog:
        if layer.kind == "logits" and layer.linear is not None:
            return layer.linear
    raise ConfigError(f"{backbone.name} has no linear output layer to replace")


def replace_classifier(backbone: Backbone, n_classes: int, class_names: list[str] | None = None) -> Backbone:
    """The backbone with a new, freshly initialised (seeded by the caller's RNG) linear output layer of
    ``n_classes`` units; the catalog's logits / prob layers follow."""
    if n_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {n_classes}")
    path = output_layer_path(backbone)
    old = backbone.submodule(path)
    if not isinstance(old, nn.Linear):
        raise ConfigError(f"the output layer {path!r} of {backbone.name} is not nn.Linear")
    new = nn.Linear(old.in_features, n_classes)
    parent_path, _, child = path.rpartition(".")
    parent = backbone.module.get_submodule(parent_path) if parent_path else backbone.module
    setattr(parent, child, new)
    if hasattr(backbone.module, "num_classes"):
        backbone.module.num_classes = n_classes
    layers = [
        dataclasses.replace(layer, channels=n_classes) if layer.kind in ("logits", "prob") else layer
        for layer in backbone.catalog
    ]
    return dataclasses.replace(backbone, catalog=LayerCatalog(layers), class_names=class_names)


def is_finetune_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a deepfeat fine-tuning checkpoint."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file, or not loadable safely: not ours
        return False
    return isinstance(obj, dict) and MARKER in obj


def load_finetuned(name: str, path: str | Path, build) -> Backbone:
    """Rebuild backbone ``name`` (``build(weights="random")``) with the checkpoint's output layer and
    load the checkpoint's weights."""
    path = Path(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    meta = obj[MARKER]
    if meta["backbone"] != name:
        raise BackboneError(
            f"{path}: a fine-tuned {meta['backbone']!r} checkpoint, not {name!r}; "
            f"use --backbone {meta['backbone']}"
        )
    base = build(weights="random")
    bb = replace_classifier(base, int(meta["n_classes"]), list(meta.get("classes") or []) or None)
    load_weights_strict(bb.module, obj["state_dict"], str(path))
    prepare_for_inference(bb.module)
    return dataclasses.replace(
        bb, weights_id=f"sha256:{sha256_file(path)}", weights_source=str(path), extra={**bb.extra, **meta}
    )
