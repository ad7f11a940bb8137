"""Capture the outputs of any set of layers in one forward pass, with forward hooks.

Hooks are placed on the catalog modules of the requested layers and removed when the capture is
closed. When no backward pass is needed, the forward pass stops as soon as the deepest requested
layer has been computed, so asking for early layers costs only the early part of the network.
Derived layers (``prob``) are computed from their source layer after the pass.

For gradient features, the weight layer (``LayerInfo.linear``) of chosen layers is tapped too: its
input and output come back as ``"<layer>:in"`` and ``"<layer>:out"``. With gradients enabled, the
outputs of the layers (or taps) named in ``grad_layers`` that are not already in the autograd graph
become leaves that require grad: the graph starts at the earliest of them, so neither the forward
pass below it nor a backward pass pays for layers that no gradient needs.

Layouts (``LayerInfo.layout``): channels-last maps (``nhwc``) come out permuted to (N, C, H, W); a
transformer block's token sequence (N, L, C) gives its patch tokens as an (N, C, H, W) map on the
patch grid of the input (``tokens``, as timm's ``forward_intermediates`` reshapes them) and its class
token as an (N, C) vector (``class-token``). These are views, no copies. With gradients enabled, the
module's output is rebuilt from the captured pieces (a permuted view, or the tokens concatenated
back), so gradients reach the maps and vectors that the feature methods read.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from deepfeat.backbones.backbone import Backbone
from deepfeat.backbones.layers import LayerInfo
from deepfeat.errors import ConfigError


class _Done(Exception):
    """Raised from a hook to end a forward pass once every requested layer is captured (its argument:
    the capture whose pass it ends)."""


class LayerCapture:
    """Context manager capturing the outputs of ``layers`` during forward passes of ``backbone``.

    >>> with LayerCapture(backbone, backbone.catalog.resolve("stage6,head")) as cap:
    ...     outputs = cap.run(batch)          # {"stage6": tensor, "head": tensor}

    Spatial layers come out as (N, C, H, W) tensors, vector layers as (N, D).
    ``stop_early`` ends the pass after the deepest requested layer (only without gradients).
    """

    def __init__(
        self,
        backbone: Backbone,
        layers: Iterable[LayerInfo],
        *,
        stop_early: bool = True,
        taps: Iterable[LayerInfo] = (),
        grad_layers: Iterable[str] | None = None,
    ):
        self.backbone = backbone
        self.layers = list(layers)
        self.stop_early = stop_early
        self.taps = list(taps)
        self.grad_layers = None if grad_layers is None else set(grad_layers)
        for layer in self.taps:
            if layer.linear is None:
                raise ConfigError(f"layer {layer.name!r} has no weight layer to tap (LayerInfo.linear)")
        hooked = {layer.name: layer for layer in self.layers if layer.module is not None}
        for layer in self.layers:  # derived layers need their source captured
            if layer.derived_from is not None and layer.derived_from not in hooked:
                hooked[layer.derived_from] = backbone.catalog.get(layer.derived_from)
        self._hooked = list(hooked.values())
        self._by_module: dict[str, list[LayerInfo]] = {}
        for layer in self._hooked:
            self._by_module.setdefault(layer.module, []).append(layer)
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self._input_hw: tuple[int, int] = (0, 0)
        #: whether this capture's pass is under way: its hooks act only then, so hooks left on a
        #: module by a capture that was never closed (a pass interrupted, a task abandoned) cannot
        #: stop another capture's pass before its layers
        self._active = False

    def __getstate__(self) -> dict:
        """A copy is at rest: a model serialised during a pass (Dask copying a worker's model to
        another worker) carries this capture's hooks, which must not act in the copy's passes."""
        state = dict(self.__dict__)
        state.update(_active=False, _outputs={}, _tapped={}, _handles=[])
        return state

    def __enter__(self) -> LayerCapture:
        for layer in self.taps:  # before the layer hooks: a tap may replace the module's output
            module = self.backbone.submodule(layer.linear)
            self._handles.append(module.register_forward_hook(self._tap(layer)))
        for path, layers in self._by_module.items():
            module = self.backbone.submodule(path)
            self._handles.append(module.register_forward_hook(self._hook(layers)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, layers: list[LayerInfo]):
        def hook(_module, _inputs, output):
            if not self._active:
                return None
            todo = [layer for layer in layers if layer.name not in self._outputs]
            if not todo:  # a module called twice in one pass: keep the first
                return None
            if todo[0].layout in ("tokens", "class-token"):
                replaced = self._tokens(todo, output)
            elif todo[0].layout == "nhwc":
                replaced = self._channels_last(todo, output)
            else:
                replaced = None
                for layer in todo:
                    if self._starts_graph(layer.name, output):
                        output = replaced = output.detach().requires_grad_(True)
                    flat = not layer.spatial and output.dim() > 2
                    self._outputs[layer.name] = output.flatten(1) if flat else output
            if self._stop and len(self._outputs) == len(self._hooked):
                raise _Done(self)
            return replaced

        return hook

    def _leaf(self, name: str, t: torch.Tensor) -> torch.Tensor:
        return t.detach().requires_grad_(True) if self._starts_graph(name, t) else t

    def _channels_last(self, layers: list[LayerInfo], output: torch.Tensor) -> torch.Tensor | None:
        """(N, H, W, C) -> (N, C, H, W); the module's output rebuilt from the map when it needs grad."""
        maps = output.permute(0, 3, 1, 2)
        for layer in layers:
            maps = self._outputs[layer.name] = self._leaf(layer.name, maps)
        return maps.permute(0, 2, 3, 1) if maps.requires_grad else None

    def _tokens(self, layers: list[LayerInfo], x: torch.Tensor) -> torch.Tensor | None:
        """A token sequence (N, L, C) -> patch-token map (N, C, H, W) and / or class token (N, C)."""
        if x.dim() != 3:
            raise RuntimeError(f"layer {layers[0].name!r}: expected tokens (N, L, C), got {tuple(x.shape)}")
        n, length, channels = x.shape
        prefix = layers[0].prefix_tokens
        cls = maps = None
        for layer in layers:
            if layer.layout == "class-token":
                cls = x[:, 0] if cls is None else cls
                cls = self._outputs[layer.name] = self._leaf(layer.name, cls)
            else:
                if maps is None:
                    h, w = self._grid(layer, length - prefix)
                    maps = x[:, prefix:].transpose(1, 2).reshape(n, channels, h, w)
                maps = self._outputs[layer.name] = self._leaf(layer.name, maps)
        if not any(t is not None and t.requires_grad for t in (cls, maps)):
            return None
        parts = [x[:, :1] if cls is None else cls[:, None], x[:, 1:prefix]]
        parts.append(x[:, prefix:] if maps is None else maps.flatten(2).transpose(1, 2))
        return torch.cat(parts if prefix else parts[2:], dim=1)

    def _grid(self, layer: LayerInfo, n_patches: int) -> tuple[int, int]:
        """(H, W) of the patch grid of the current input for a layer of stride ``layer.stride``."""
        h_in, w_in = self._input_hw
        s = layer.stride
        for h, w in ((h_in // s, w_in // s), (-(-h_in // s), -(-w_in // s))):
            if h * w == n_patches:
                return h, w
        raise RuntimeError(
            f"layer {layer.name!r}: {n_patches} patch tokens do not form the grid of a {h_in}x{w_in} "
            f"input at stride {s}"
        )

    def _starts_graph(self, name: str, output: torch.Tensor) -> bool:
        """Whether ``output`` of layer ``name`` must become a graph leaf (see the module docstring)."""
        wanted = self.grad_layers is None or name in self.grad_layers
        return wanted and torch.is_grad_enabled() and not output.requires_grad

    def _tap(self, layer: LayerInfo):
        def hook(_module, inputs, output):
            key = f"{layer.name}:out"
            if not self._active or key in self._tapped:
                return None
            replaced = None
            if self._starts_graph(layer.name, output):
                output = replaced = output.detach().requires_grad_(True)
            self._tapped[f"{layer.name}:in"] = inputs[0]
            self._tapped[key] = output
            return replaced

        return hook

    def run(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """One forward pass; returns the outputs of every requested layer (and the taps)."""
        self._outputs = {}
        self._tapped: dict[str, torch.Tensor] = {}
        self._stop = self.stop_early and not torch.is_grad_enabled()
        if self.backbone.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        self._input_hw = (int(batch.shape[-2]), int(batch.shape[-1]))
        self._active = True
        try:
            self.backbone.module(batch)
        except _Done as done:
            if done.args[0] is not self:
                raise RuntimeError(
                    "another capture's pass on the same model ended this one: a model runs one "
                    "capture's pass at a time (give each thread its own copy of the backbone)"
                ) from None
        finally:
            self._active = False
        outputs = dict(self._outputs)
        missing = [layer.name for layer in self._hooked if layer.name not in outputs]
        if missing:
            raise RuntimeError(f"layers {missing} were not reached by the forward pass")
        for layer in self.layers:
            if layer.derived_from is not None:
                outputs[layer.name] = outputs[layer.derived_from].float().softmax(dim=-1)
        missing = [layer.name for layer in self.taps if f"{layer.name}:out" not in self._tapped]
        if missing:
            raise RuntimeError(f"the weight layers of {missing} were not reached by the forward pass")
        return {layer.name: outputs[layer.name] for layer in self.layers} | self._tapped
