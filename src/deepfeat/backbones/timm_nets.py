"""Any timm model by name (``timm:<model>``), with a catalog found from timm's feature metadata and one
dummy forward pass.

Names: an architecture (``resnet18``), an architecture with a pretrained tag (``resnet18.a1_in1k``),
a Hugging Face repository (``hf-hub:timm/resnet18.a1_in1k``, optionally ``@revision``) or a local
folder with timm's ``config.json`` and weights (``local-dir:/path``). Unknown names and tags are
refused with the closest valid names.

Weights (offline first, see :mod:`deepfeat.backbones.caches`):

- None (default): the pretrained weights when they are in the local caches (the Hugging Face cache
  for the config's hub repository, else torch's hub cache for its URL), else a seeded random
  initialisation with a warning naming where they were looked for; never a download;
- ``"pretrained"``: the cached weights, else a download through timm, unless ``HF_HUB_OFFLINE`` is set:
  then a one-line error naming the cache path;
- ``"random"``: a seeded random initialisation; a file: a state dict loaded strictly.

Layers: ``stage<i>`` for each entry of the model's ``feature_info`` (timm's stage or block outputs,
with their channels and reduction). Convolutional stages are (N, C, H, W) maps (channels-last outputs
such as Swin's are permuted); a vision transformer's blocks return tokens, whose patch tokens become an
(N, C, H, W) map (as ``forward_intermediates`` reshapes them; kind ``block``) and whose class token is
the vector layer ``stage<i>_cls`` (kind ``token``). Then ``pool`` (the classifier's input: pooled,
pre-logits features), ``logits`` and ``prob`` when the model has a classifier.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from deepfeat.backbones.backbone import Backbone, build_seeded, prepare_for_inference, sha256_file
from deepfeat.backbones.caches import hf_repo_dir, hf_snapshot, hub_offline
from deepfeat.backbones.custom import infer_layer, module_device, probe_outputs
from deepfeat.backbones.layers import LayerCatalog, LayerInfo
from deepfeat.backbones.weights import (
    HF_WEIGHT_FILES,
    apply_weights,
    timm_cached_weights,
    timm_weight_locations,
)
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import BackboneError, UnknownNameError
from deepfeat.validation import close_matches

log = logging.getLogger(__name__)

SOURCES = ("hf-hub", "local-dir")


@dataclass(frozen=True)
class TimmName:
    """A parsed model name: ``source`` is ``"timm"`` (registry name, ``arch`` and optional ``tag``),
    ``"hf-hub"`` (``location`` = repository id) or ``"local-dir"`` (``location`` = folder)."""

    text: str
    source: str
    arch: str | None = None
    tag: str | None = None
    location: str | None = None


def all_model_names() -> list[str]:
    """Every architecture and every architecture.tag timm knows, sorted."""
    import timm

    return sorted(set(timm.list_models()) | set(timm.list_pretrained()))


def parse_name(text: str) -> TimmName:
    """Check and parse a timm model name; unknown names and tags list the closest valid ones."""
    import timm
    from timm.models import split_model_name_tag

    source, sep, rest = text.partition(":")
    if sep and source in SOURCES:
        if not rest:
            raise BackboneError(f"timm:{text}: give the {source} location after '{source}:'")
        if source == "local-dir" and not (Path(rest) / "config.json").is_file():
            raise BackboneError(f"timm:{text}: {Path(rest) / 'config.json'} not found (timm's model config)")
        return TimmName(text, source, location=rest)
    arch, tag = split_model_name_tag(text)
    if not timm.is_model(arch):
        raise UnknownNameError("timm model", text, close_matches(text, all_model_names(), n=10))
    if tag:
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
        if tag not in tags:
            raise UnknownNameError(
                f"pretrained tag of timm model {arch!r}", tag, close_matches(tag, tags) + tags
            )
    return TimmName(text, "timm", arch=arch, tag=tag or None)


def build_timm(model_name: str, weights: str | os.PathLike | None = None, seed: int = 0) -> Backbone:
    """The timm model ``model_name`` with ``weights`` (see the module docstring)."""
    ref = parse_name(model_name)
    module, weights_id, source = _create(ref, weights, seed)
    cfg = module.pretrained_cfg
    crop = int(cfg.get("input_size", (3, 224, 224))[-1])
    preprocess = Preprocess(
        resize="shorter",
        size=int(crop / float(cfg.get("crop_pct", 0.875) or 0.875)),
        crop=crop,
        interpolation=cfg.get("interpolation")
        if cfg.get("interpolation") in ("bilinear", "bicubic")
        else "bicubic",
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
    )
    module = prepare_for_inference(module)
    return Backbone(
        name=f"timm:{model_name}",
        module=module,
        catalog=timm_catalog(module, (crop, crop)),
        preprocess=preprocess,
        weights_id=weights_id,
        weights_source=source,
        class_names=_class_names(module) if source not in ("random",) else None,
        channels_last=True,
    )


def _create(ref: TimmName, weights, seed: int) -> tuple[nn.Module, str, str]:
    """(module, weights id, source) for a parsed name and a ``weights`` argument."""
    if ref.source != "timm":
        return _create_from_folder(ref, weights, seed)
    name = ref.text
    if weights is not None and str(weights) not in ("random", "pretrained"):
        module = _timm_create(name, seed=seed)
        return (module, *apply_weights(module, weights, name=f"timm:{name}", seed=seed))
    if weights == "random":
        return _timm_create(name, seed=seed), f"random:seed={seed}", "random"
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name) if ref.tag else get_pretrained_cfg(ref.arch)
    cached = timm_cached_weights(cfg) if cfg is not None else None
    if cached is not None:
        path, where = cached
        overlay = {"file": str(path), "source": ""}
        if where == "hf":  # a timm-format file, whatever the original release needed
            overlay["custom_load"] = False
        module = _timm_create(name, seed=seed, pretrained=True, pretrained_cfg_overlay=overlay)
        return module, f"sha256:{sha256_file(path)}", str(path)
    places = timm_weight_locations(cfg) if cfg is not None else "nowhere (timm has no pretrained config)"
    if weights is None:
        warnings.warn(
            f"timm:{name}: no pretrained weights in the local caches ({places}); using a random "
            f"initialisation (seed {seed}). Pass weights='pretrained' to download them.",
            stacklevel=4,
        )
        return _timm_create(name, seed=seed), f"random:seed={seed}", "random"
    if hub_offline():
        raise BackboneError(
            f"timm:{name}: pretrained weights are not in the local caches (looked in {places}) and "
            "HF_HUB_OFFLINE is set; put them there, pass weights=<file>, or unset HF_HUB_OFFLINE"
        )
    module = _timm_create(name, seed=seed, pretrained=True)
    cached = timm_cached_weights(cfg)
    if cached is not None:
        return module, f"sha256:{sha256_file(cached[0])}", str(cached[0])
    return module, f"timm-pretrained:{cfg.hf_hub_id or cfg.url or name}", "timm hub"


def _create_from_folder(ref: TimmName, weights, seed: int) -> tuple[nn.Module, str, str]:
    """hf-hub and local-dir names: a folder with config.json and weights (a cached hub snapshot)."""
    folder = Path(ref.location) if ref.source == "local-dir" else hf_snapshot(ref.location)
    where = (
        str(Path(ref.location))
        if ref.source == "local-dir"
        else f"{hf_repo_dir(ref.location.partition('@')[0])}/snapshots/*/"
    )
    has_config = folder is not None and (folder / "config.json").is_file()
    files = [folder / f for f in HF_WEIGHT_FILES if folder is not None and (folder / f).is_file()]
    local = f"local-dir:{folder}"
    if has_config and (weights == "random" or (weights is not None and weights != "pretrained")):
        module = _timm_create(local, seed=seed)
        if weights == "random":
            return module, f"random:seed={seed}", "random"
        return (module, *apply_weights(module, weights, name=f"timm:{ref.text}", seed=seed))
    if has_config and files:
        module = _timm_create(local, seed=seed, pretrained=True)
        return module, f"sha256:{sha256_file(files[0])}", str(files[0])
    if ref.source == "local-dir":
        raise BackboneError(
            f"timm:{ref.text}: no weights file in {where} (looked for {', '.join(HF_WEIGHT_FILES)})"
        )
    if weights != "pretrained" or hub_offline():
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "weights='pretrained' downloads them"
        missing = "weights are" if has_config else "config.json and weights are"
        raise BackboneError(
            f"timm:{ref.text}: the model's {missing} not in the Hugging Face cache (looked in {where}); {why}"
        )
    module = _timm_create(ref.text, seed=seed, pretrained=True)
    folder = hf_snapshot(ref.location)
    files = [folder / f for f in HF_WEIGHT_FILES if folder is not None and (folder / f).is_file()]
    weights_id = f"sha256:{sha256_file(files[0])}" if files else f"timm-pretrained:{ref.location}"
    return module, weights_id, str(files[0]) if files else "timm hub"


def _timm_create(name: str, *, seed: int, pretrained: bool = False, **kwargs) -> nn.Module:
    import timm

    try:
        return build_seeded(lambda: timm.create_model(name, pretrained=pretrained, **kwargs), seed)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BackboneError(f"timm:{name}: cannot build the model ({first})") from None


def timm_catalog(module: nn.Module, input_hw: tuple[int, int]) -> LayerCatalog:
    """Catalog of a timm model: its feature-info stages, then pool, logits and prob (one dummy pass)."""
    info = list(getattr(module, "feature_info", None) or [])
    names = dict(module.named_modules())
    classifier = module.pretrained_cfg.get("classifier")
    if isinstance(classifier, (list, tuple)):
        classifier = classifier[0] if classifier else None
    num_classes = int(getattr(module, "num_classes", 0) or 0)
    head = classifier if classifier in names and num_classes > 0 else None
    paths = [entry["module"] for entry in info]
    shapes, _ = probe_outputs(module, paths + ([head] if head else []), input_hw, strict=False)
    layers: list[LayerInfo] = []
    for i, entry in enumerate(info):
        path = entry["module"]
        if path not in shapes:  # returns a tuple or is not reached: not a layer deepfeat can capture
            log.warning(
                "%s: stage %d (%s) gives no single tensor; left out", type(module).__name__, i + 1, path
            )
            continue
        layers += infer_layer(
            f"stage{i + 1}",
            path,
            shapes[path],
            input_hw,
            module,
            channels=int(entry["num_chs"]),
            stride=int(entry["reduction"]),
        )
    pool = _classifier_input(module, head, input_hw) if head else None
    if pool is None and _named_pool(names):
        pool = (_named_pool(names), int(module.num_features))
    if pool is not None:
        layers.append(LayerInfo("pool", pool[0], "pool", pool[1], None))
    if head:
        linear = head if isinstance(names[head], nn.Linear) else None
        layers.append(LayerInfo("logits", head, "logits", num_classes, None, linear=linear))
        layers.append(LayerInfo("prob", None, "prob", num_classes, None, derived_from="logits"))
    if not layers:
        raise BackboneError(f"{type(module).__name__}: timm gives no feature metadata for this model")
    return LayerCatalog(layers)


def _named_pool(names: dict[str, nn.Module]) -> str | None:
    return next((p for p in ("global_pool", "head.global_pool") if p in names), None)


def _classifier_input(module: nn.Module, head: str, input_hw: tuple[int, int]) -> tuple[str, int] | None:
    """(path, width) of the last submodule whose output is the classifier's input (the pooled
    pre-logits features); None when the model computes that input without a submodule."""
    import torch

    seen: list[tuple[str, int, tuple]] = []
    found: list[torch.Tensor] = []

    def record(name):
        def hook(_m, _i, out):
            if isinstance(out, torch.Tensor) and not found:
                seen.append((name, out.data_ptr(), tuple(out.shape)))

        return hook

    handles = [
        m.register_forward_hook(record(n))
        for n, m in module.named_modules()
        if n and n != head and not head.startswith(n + ".")
    ]
    handles.append(module.get_submodule(head).register_forward_pre_hook(lambda _m, a: found.append(a[0])))
    try:
        with torch.inference_mode():
            module(torch.zeros(1, 3, *input_hw, device=module_device(module)))
    finally:
        for handle in handles:
            handle.remove()
    if not found:
        return None
    key = (found[0].data_ptr(), tuple(found[0].shape))
    matches = [name for name, ptr, shape in seen if (ptr, shape) == key]
    if not matches or found[0].dim() != 2:
        return None
    return matches[-1], int(found[0].shape[1])


def _class_names(module: nn.Module) -> list[str] | None:
    """ImageNet class descriptions of a pretrained timm classifier, when timm knows its label set."""
    cfg = module.pretrained_cfg
    if cfg.get("label_names") and len(cfg["label_names"]) == getattr(module, "num_classes", -1):
        return [str(x) for x in cfg.get("label_descriptions") or cfg["label_names"]]
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(module)
        return list(ImageNetInfo(subset).label_descriptions()) if subset else None
    except Exception:  # label metadata is a convenience for 'deepfeat predict', never required
        return None


def list_timm_models(pattern: str = "*", *, cached_only: bool = False) -> list[tuple[str, bool]]:
    """(name with pretrained tag, weights cached locally) for every timm pretrained model matching
    the wildcard ``pattern``; with ``cached_only`` only those whose weights are in the local caches."""
    import timm
    from timm.models import get_pretrained_cfg

    out = []
    for name in timm.list_pretrained(pattern):
        try:
            cached = timm_cached_weights(get_pretrained_cfg(name)) is not None
        except Exception:  # a registry entry timm cannot describe: listed, not cached
            cached = False
        if cached or not cached_only:
            out.append((name, cached))
    return out
