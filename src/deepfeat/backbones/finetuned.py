"""Backbones with a new output layer, and fine-tuning checkpoints loaded back as backbones.

A fine-tuning checkpoint (written by :mod:`deepfeat.training.finetune`) is a
:mod:`deepfeat.checkpoint` of kind ``"finetune"``: its metadata holds ``"deepfeat_finetune"`` (the
backbone name, number of classes, class names, the trainable scope) and its state ``"model"``;
files of the layout before that module (the same keys at the top level) are read too.
``load_backbone(name, weights=checkpoint)`` recognises it, rebuilds the architecture with the new
output layer and loads the weights, so every feature method and analysis runs on fine-tuned
networks; the weights id is the checkpoint's sha256. Nothing in a checkpoint is ever executed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from deepfeat.backbones.backbone import Backbone, load_weights_strict, prepare_for_inference, sha256_file
from deepfeat.backbones.layers import LayerCatalog
from deepfeat.checkpoint import MARKER as CHECKPOINT_MARKER
from deepfeat.checkpoint import checkpoint_kind, load_checkpoint, read_torch_file
from deepfeat.errors import BackboneError, CheckpointError, ConfigError

MARKER = "deepfeat_finetune"
KIND = "finetune"


def output_layer_path(backbone: Backbone) -> str:
    """Dotted path of the weight layer that produces the logits (a network without a logits layer:
    the linear layer of its last catalog layer, e.g. a BiGAN encoder's prediction of z)."""
    for layer in backbone.catalog:
        if layer.kind == "logits" and layer.linear is not None:
            return layer.linear
    last = list(backbone.catalog)[-1]
    if last.linear is not None and last.kind == "fc":
        return last.linear
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
        dataclasses.replace(layer, channels=n_classes)
        if layer.kind in ("logits", "prob") or layer.linear == path
        else layer
        for layer in backbone.catalog
    ]
    return dataclasses.replace(backbone, catalog=LayerCatalog(layers), class_names=class_names)


def is_finetune_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a deepfeat fine-tuning checkpoint (read safely; False for anything else,
    including files that cannot be read, which the weights loader then reports)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        obj = read_torch_file(path, mmap=True)
    except CheckpointError:
        return False
    header = obj.get(CHECKPOINT_MARKER) if isinstance(obj, dict) else None
    return (isinstance(header, dict) and header.get("kind") == KIND) or _legacy(obj) is not None


def read_finetuned(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The metadata (backbone, n_classes, classes, scope) and model state dict of a fine-tuning
    checkpoint, read without running code from the file."""
    path = Path(path)
    try:
        if checkpoint_kind(path) is None:
            legacy = _legacy(read_torch_file(path))
            if legacy is not None:
                return legacy
        ck = load_checkpoint(path, kind=KIND)
    except CheckpointError as exc:
        raise BackboneError(str(exc)) from None
    meta, model = ck.meta.get(MARKER), ck.state.get("model")
    if not isinstance(meta, dict) or not isinstance(model, dict) or "backbone" not in meta:
        raise BackboneError(f"{path}: damaged fine-tuning checkpoint (no model or no {MARKER!r} metadata)")
    return meta, model


def load_finetuned(name: str, path: str | Path, build) -> Backbone:
    """Rebuild backbone ``name`` (``build(weights="random")``) with the checkpoint's output layer and
    load the checkpoint's weights."""
    path = Path(path)
    meta, model = read_finetuned(path)
    # a BiGAN backbone is named by its run's checkpoint ("bigan:RUN/last.pt"); its fine-tuning
    # checkpoints record the family, and the strict weight load checks the architecture
    if meta["backbone"] != ("bigan" if name.startswith("bigan:") else name):
        raise BackboneError(
            f"{path}: a fine-tuned {meta['backbone']!r} checkpoint, not {name!r}; "
            f"use --backbone {meta['backbone']}"
            + (":RUN/last.pt (the BiGAN run it was tuned from)" if meta["backbone"] == "bigan" else "")
        )
    base = build(weights="random")
    bb = replace_classifier(base, int(meta["n_classes"]), list(meta.get("classes") or []) or None)
    load_weights_strict(bb.module, model, str(path))
    prepare_for_inference(bb.module)
    return dataclasses.replace(
        bb, weights_id=f"sha256:{sha256_file(path)}", weights_source=str(path), extra={**bb.extra, **meta}
    )


def _legacy(obj) -> tuple[dict, dict] | None:
    """(meta, state dict) of a checkpoint written before deepfeat.checkpoint existed, else None."""
    if not isinstance(obj, dict):
        return None
    meta, state = obj.get(MARKER), obj.get("state_dict")
    return (meta, state) if isinstance(meta, dict) and isinstance(state, dict) else None
