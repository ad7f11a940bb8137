"""The layer catalog of a backbone: canonical layer names with their kind, channels and stride."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from deepfeat.errors import ConfigError, UnknownNameError
from deepfeat.validation import as_names, check_choice

LAYER_KINDS = ("conv", "pool", "fc", "logits", "prob", "block", "token")

#: How a layer's module output is laid out, and how the capture turns it into the layer:
#: ``nchw`` as it is; ``nhwc`` channels-last maps (e.g. Swin stages) permuted to (N, C, H, W);
#: ``tokens`` a transformer's token sequence (N, L, C) whose patch tokens become an (N, C, H, W) map
#: (the first ``prefix_tokens`` tokens, class and register tokens, left out; the map is what timm's
#: ``forward_intermediates`` returns); ``class-token`` the first token of such a sequence, (N, C).
LAYOUTS = ("nchw", "nhwc", "tokens", "class-token")


@dataclass(frozen=True)
class LayerInfo:
    """One extractable layer.

    ``module`` is the dotted path of the submodule whose output is the layer (after its activation,
    as Caffe's in-place ReLUs leave it), or ``None`` for a layer derived from another one
    (``derived_from``; ``prob`` is the softmax of ``logits``). ``stride`` is the total downsampling
    from the input for spatial layers and ``None`` for vector layers. ``linear`` is the dotted path of
    the weight layer (``nn.Linear`` or 1x1 ``nn.Conv2d``) whose output is the layer's pre-activation
    y_k, for the layers that have one (gradient features need it). ``layout`` says how the module's
    output becomes the layer (see :data:`LAYOUTS`; ``prefix_tokens`` counts the class and register
    tokens ahead of the patch tokens of a token sequence). Kinds: ``conv`` and ``pool`` maps, ``fc``
    vectors, ``logits``, ``prob``, ``block`` (a transformer block's patch tokens as a map) and
    ``token`` (its class token as a vector).
    """

    name: str
    module: str | None
    kind: str
    channels: int
    stride: int | None = None
    derived_from: str | None = None
    linear: str | None = None
    layout: str = "nchw"
    prefix_tokens: int = 0

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise UnknownNameError("layer kind", self.kind, LAYER_KINDS)
        if self.layout not in LAYOUTS:
            raise UnknownNameError("layer layout", self.layout, LAYOUTS)
        if self.layout == "class-token" and self.stride is not None:
            raise ConfigError(f"layer {self.name!r}: a class token is a vector (stride None)")
        if self.layout == "tokens" and self.stride is None:
            raise ConfigError(f"layer {self.name!r}: a token map needs its stride (the patch size)")
        if (self.module is None) == (self.derived_from is None):
            raise ConfigError(f"layer {self.name!r} needs exactly one of module or derived_from")

    @property
    def spatial(self) -> bool:
        """True for layers with a spatial map (conv and spatial pool layers)."""
        return self.stride is not None

    def to_dict(self) -> dict:
        """Plain-JSON description."""
        return {
            "name": self.name,
            "module": self.module,
            "kind": self.kind,
            "channels": self.channels,
            "stride": self.stride,
            "derived_from": self.derived_from,
            "linear": self.linear,
            "layout": self.layout,
            "prefix_tokens": self.prefix_tokens,
        }


class LayerCatalog(Sequence[LayerInfo]):
    """Ordered catalog of a backbone's layers, from the input towards the output."""

    def __init__(self, layers: Iterable[LayerInfo]):
        self._layers = list(layers)
        self._by_name = {layer.name: layer for layer in self._layers}
        if len(self._by_name) != len(self._layers):
            raise ConfigError("layer names in a catalog must be unique")
        for layer in self._layers:
            if layer.derived_from is not None and layer.derived_from not in self._by_name:
                raise ConfigError(f"layer {layer.name!r} derives from unknown {layer.derived_from!r}")

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[LayerInfo]:
        return iter(self._layers)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return self.get(key)
        return self._layers[key]

    def __contains__(self, name: object) -> bool:
        """Whether a layer name, or a LayerInfo (what iterating the catalog yields), is in it."""
        if isinstance(name, LayerInfo):
            return self._by_name.get(name.name) == name
        return isinstance(name, str) and name in self._by_name

    @property
    def names(self) -> list[str]:
        """Layer names in network order."""
        return [layer.name for layer in self._layers]

    def get(self, name: str) -> LayerInfo:
        """The layer called ``name``; an error listing the valid names otherwise."""
        if name not in self._by_name:
            check_choice("layer", name, self.names)
        return self._by_name[name]

    def resolve(self, names: Sequence[str]) -> list[LayerInfo]:
        """Validate layer names (a list, or one name; ``"all"`` for every layer) and return them in
        network order without duplicates."""
        names = as_names(names, "layers")
        if names == ["all"]:
            return list(self._layers)
        wanted = {self.get(n).name for n in names}
        return [layer for layer in self._layers if layer.name in wanted]

    def position(self, name: str) -> int:
        """Index of layer ``name`` in network order."""
        return self.names.index(self.get(name).name)
