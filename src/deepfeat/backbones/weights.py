"""The one place that turns a ``weights=`` argument into loaded weights and a weights identity.

``weights`` is None (the backbone's default: its bundled file when it has one, else a seeded random
initialisation with a warning), ``"random"`` (a seeded random initialisation, no warning) or the path
of a weights file (a PyTorch state dict, optionally converted from another key style). The identity
goes into every feature's provenance: ``sha256:<digest of the file>`` or ``random:seed=<n>``.

Pretrained weights of other libraries are found in the local caches (:mod:`deepfeat.backbones.caches`),
never downloaded here: torchvision weights enums (``ResNet50_Weights.IMAGENET1K_V2``) in torch's hub
cache, timm's pretrained configs in the Hugging Face cache or torch's hub cache. Their identity is the
sha256 of the cached file too.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from deepfeat.backbones.backbone import load_weights_strict, read_state_dict, sha256_file
from deepfeat.backbones.caches import hf_cached_file, hf_repo_dir, torch_hub_file
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import BackboneError, UnknownNameError

StateConverter = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def apply_weights(
    module: nn.Module,
    weights: str | os.PathLike | None,
    *,
    name: str,
    seed: int = 0,
    default: Path | None = None,
    convert: StateConverter | None = None,
) -> tuple[str, str]:
    """Load ``weights`` into ``module`` (built with seed ``seed``); returns (weights id, source).

    ``default``: the file used when ``weights`` is None (None: a random initialisation, warned).
    ``convert``: maps a state dict in another key style onto the module's keys.
    """
    if weights is None and default is not None:
        weights = default
    if weights is None or str(weights) == "random":
        if weights is None:
            warnings.warn(
                f"{name}: no weights file given; using a random initialisation (seed {seed}). "
                f"Pass weights=<path to a state dict of {name}> for pretrained features.",
                stacklevel=3,
            )
        return f"random:seed={seed}", "random"
    path = Path(weights)
    state = read_state_dict(path)
    if convert is not None:
        state = convert(state)
    load_weights_strict(module, state, str(path))
    return f"sha256:{sha256_file(path)}", str(path)


# -- torchvision weights enums ----------------------------------------------------------------------


def torchvision_weights(arch: str, weights):
    """The torchvision weights enum member that ``weights`` names for architecture ``arch`` (a member
    such as ``ResNet50_Weights.IMAGENET1K_V2``, or its spelling ``"ResNet50_Weights.IMAGENET1K_V2"``,
    ``"IMAGENET1K_V2"`` or ``"DEFAULT"``); None when ``weights`` is something else (None, ``"random"``,
    an existing file). An enum of another architecture, or an unknown member of this one's, is an error
    listing the valid spellings."""
    from torchvision.models import get_model_weights
    from torchvision.models._api import WeightsEnum

    enum = get_model_weights(arch)
    valid = [f"{enum.__name__}.{m}" for m in enum.__members__]
    if isinstance(weights, WeightsEnum):
        if type(weights).__name__ != enum.__name__:
            raise BackboneError(
                f"{arch}: {weights} are weights of another architecture; valid: {', '.join(valid)}"
            )
        return weights
    if not isinstance(weights, str) or weights == "random" or Path(weights).exists():
        return None
    prefix, dot, member = weights.rpartition(".")
    if dot and prefix.endswith("_Weights"):
        if prefix != enum.__name__ or member not in enum.__members__:
            raise UnknownNameError(f"torchvision weights of {arch}", weights, valid)
        return enum[member]
    return enum[weights] if weights in enum.__members__ else None


def load_torchvision_weights(module: nn.Module, member, *, name: str) -> tuple[str, str]:
    """Load the weights of enum ``member`` from torch's hub cache (never downloaded); returns (weights
    id, source). Missing from the cache: a one-line error naming the file expected."""
    path = torch_hub_file(member.url)
    if not path.is_file():
        raise BackboneError(
            f"{name}: {type(member).__name__}.{member.name} is not in torch's hub cache (expected {path}); "
            f"download {member.url} there, or pass weights=<a state-dict file>"
        )
    load_weights_strict(module, read_state_dict(path), str(path))
    return f"sha256:{sha256_file(path)}", f"torchvision {type(member).__name__}.{member.name} ({path})"


def torchvision_preprocess(member) -> Preprocess:
    """The evaluation transform of a torchvision weights enum member as a :class:`Preprocess`."""
    t = member.transforms()
    mode = getattr(t.interpolation, "value", str(t.interpolation))
    return Preprocess(
        resize="shorter",
        size=int(t.resize_size[0]),
        crop=int(t.crop_size[0]),
        interpolation=mode if mode in ("bilinear", "bicubic") else "bilinear",
        mean=tuple(t.mean),
        std=tuple(t.std),
    )


# -- timm pretrained weights in the local caches ----------------------------------------------------

#: Weight files of a timm repository on the Hugging Face hub, in timm's order of preference.
HF_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)


def timm_cached_weights(cfg) -> tuple[Path, str] | None:
    """(file, where) of the cached pretrained weights of a timm pretrained config: the Hugging Face
    cache (``"hf"``) when the config names a hub repository, else torch's hub cache (``"url"``)."""
    if getattr(cfg, "hf_hub_id", None):
        names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else list(HF_WEIGHT_FILES)
        path = hf_cached_file(cfg.hf_hub_id, names)
        if path is not None:
            return path, "hf"
    if getattr(cfg, "url", None):
        path = torch_hub_file(cfg.url)
        if path.is_file():
            return path, "url"
    return None


def timm_weight_locations(cfg) -> str:
    """Where :func:`timm_cached_weights` looks, as text for messages."""
    places = []
    if getattr(cfg, "hf_hub_id", None):
        places.append(f"{hf_repo_dir(cfg.hf_hub_id.partition('@')[0])}/snapshots/*/")
    if getattr(cfg, "url", None):
        places.append(str(torch_hub_file(cfg.url)))
    return " or ".join(places) or "nowhere (timm knows no weights for it)"
