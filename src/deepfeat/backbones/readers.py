"""Which weight layers read a catalog layer's output: the layer's outgoing connections.

Found once per backbone and layer by one forward pass of a small input with hooks: a weight layer
(``nn.Conv2d`` or ``nn.Linear``) reads layer t when its input is layer t's output tensor or a view of
it (a flattening before a fully connected layer). InterActive's unweighted collection of connection
activeness needs them.
"""

from __future__ import annotations

import torch
from torch import nn

from deepfeat.backbones.backbone import Backbone
from deepfeat.backbones.layers import LayerInfo
from deepfeat.errors import ConfigError


def _storage(t: torch.Tensor) -> tuple[int, int]:
    return t.untyped_storage().data_ptr(), t.numel()


def weight_readers(backbone: Backbone, layer: LayerInfo) -> list[str]:
    """Dotted paths of the weight layers that take ``layer``'s output as their input (cached)."""
    cache = backbone.extra.setdefault("weight_readers", {})
    if layer.name in cache:
        return list(cache[layer.name])
    if layer.module is None:
        raise ConfigError(f"layer {layer.name!r} is computed from another layer; it has no readers")
    outputs: list[torch.Tensor] = []
    inputs: list[tuple[str, torch.Tensor]] = []  # references kept: storages cannot be reused mid-pass
    handles = [
        backbone.submodule(layer.module).register_forward_hook(lambda _m, _i, out: outputs.append(out))
    ]
    for name, module in backbone.module.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            handles.append(
                module.register_forward_pre_hook(lambda _m, args, name=name: inputs.append((name, args[0])))
            )
    side = backbone.preprocess.crop or backbone.preprocess.size
    try:
        with torch.inference_mode():
            param = next(backbone.module.parameters(), None)
            backbone.module(torch.zeros(1, 3, side, side, device=None if param is None else param.device))
    finally:
        for handle in handles:
            handle.remove()
    if not outputs:
        raise ConfigError(f"layer {layer.name!r} was not reached by a forward pass of {backbone.name}")
    key = _storage(outputs[0])
    found = list(dict.fromkeys(name for name, x in inputs if _storage(x) == key))
    cache[layer.name] = found
    return list(found)
