"""The Backbone: a network in inference mode, its layer catalog, preprocessing and weights identity."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from deepfeat.backbones.layers import LayerCatalog
from deepfeat.checkpoint import read_torch_file
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import BackboneError, CheckpointError

log = logging.getLogger(__name__)


@dataclass
class Backbone:
    """A pretrained (or randomly initialised) network ready for feature extraction.

    ``weights_id`` identifies the weights: the sha256 of the weights file, or ``random:seed=<n>``
    for a seeded random initialisation. It is part of the provenance of every feature.
    """

    name: str
    module: nn.Module
    catalog: LayerCatalog
    preprocess: Preprocess
    weights_id: str
    weights_source: str
    class_names: list[str] | None = None
    channels_last: bool = True
    extra: dict = field(default_factory=dict)
    variant: str | None = None

    def provenance(self) -> dict:
        """Plain-JSON identity of the network (name, weights and architecture variant if any)."""
        out = {"backbone": self.name, "weights_id": self.weights_id}
        if self.variant is not None:
            out["variant"] = self.variant
        return out

    def submodule(self, path: str) -> nn.Module:
        """The submodule at dotted ``path``."""
        return self.module.get_submodule(path)

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities of the network's own output for a preprocessed batch."""
        with torch.inference_mode():
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            return self.module(batch).softmax(dim=-1)

    def __repr__(self) -> str:
        return f"Backbone({self.name!r}, layers={len(self.catalog)}, weights={self.weights_id[:19]})"

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        layers: Sequence[str] | Mapping[str, str],
        preprocess: Preprocess | None = None,
        *,
        name: str | None = None,
        class_names: list[str] | None = None,
        channels_last: bool = False,
    ) -> Backbone:
        """Any PyTorch network as a backbone: every feature method, the store and the evaluation then
        work on it.

        ``layers``: the dotted paths of the submodules whose outputs are the layers (as in
        ``module.named_modules()``), or ``{layer name: path}``. Kind, channels and stride of each come
        from one forward pass of a batch of zeros at the preprocessing's input size (see
        :mod:`deepfeat.backbones.custom`): maps (N, C, H, W), vectors (N, D; an ``nn.Linear`` is the
        layer's weight layer and, as the network's output, the ``logits`` with a ``prob`` softmax
        after it) and transformer tokens (N, L, C: the patch tokens as a map, the class token as
        ``<name>_cls``). ``preprocess``: resize, crop and normalisation (default: ImageNet's, shorter
        side 256, centre crop 224). The module is put in inference mode (eval, no parameter
        gradients, out-of-place activations). Its weights identity is the sha256 of its state dict,
        so features of other weights never share a store entry.

        >>> net = torchvision.models.mobilenet_v3_small()
        >>> bb = Backbone.from_module(net, layers=["features.3", "features.12", "classifier.3"])
        >>> [(x.name, x.kind, x.channels, x.stride) for x in bb.catalog][:2]
        [('features.3', 'conv', 24, 8), ('features.12', 'conv', 576, 32)]
        """
        from deepfeat.backbones.custom import catalog_from_module, state_digest

        if not isinstance(module, nn.Module):
            raise BackboneError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        preprocess = preprocess or Preprocess()
        side = preprocess.crop or preprocess.size
        module = prepare_for_inference(module)
        catalog = catalog_from_module(module, layers, (side, side))
        return cls(
            name=name or f"module:{type(module).__name__}",
            module=module,
            catalog=catalog,
            preprocess=preprocess,
            weights_id=f"state-sha256:{state_digest(module)}",
            weights_source="module",
            class_names=class_names,
            channels_last=channels_last,
        )


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare_for_inference(module: nn.Module) -> nn.Module:
    """Evaluation mode, no parameter gradients, and out-of-place activations.

    Out-of-place activations keep every captured layer output intact (an in-place ReLU would
    overwrite a convolution's output after it was captured) and allow backward passes through them.
    """
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    return module


def build_seeded(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """Build a module with a seeded random initialisation, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from a .pth/.pt file (plain, wrapped under 'state_dict' / 'model', or a
    deepfeat checkpoint's model state), running no code from the file (see :mod:`deepfeat.checkpoint`)."""
    path = Path(path)
    try:
        obj = read_torch_file(path)
    except CheckpointError as exc:
        raise BackboneError(str(exc)) from None
    if isinstance(obj, dict) and isinstance(obj.get("state"), dict):  # a deepfeat checkpoint
        obj = obj["state"]
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(
            f"{path}: not a state dict (expected a dict of tensors, as torch.save(model.state_dict()) writes)"
        )
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def load_weights_strict(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load ``state`` into ``module``; a mismatch names the first missing / unexpected keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong:
            parts.append(
                f"wrong shape {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in wrong[:3]]}"
            )
        raise BackboneError(f"{where}: weights do not fit the architecture: {'; '.join(parts)}")
    module.load_state_dict(state)
