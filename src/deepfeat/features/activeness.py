"""InterActive: neuron activeness propagated down from a higher layer, as weights of lower-layer responses.

Notation. X^(t) is the response cube of layer t (D_t channels over W_t x H_t positions, after its
non-linearity), x^(t) its average over positions. The score function at a top layer T models the
responses as f(x^(T)) = C_p exp(-||x^(T)||_p^p), so up to a constant

    ln f = -||x^(T)||_p^p,        p in {1, 2}.

Derivation of the neuron weights gamma. A connection c joins a neuron n = (w, h, d) of layer t to a
unit m of the next weight layer (the units that read X^(t)), with weight theta_c, so that unit m
receives sum_c theta_c X_n. Its activeness is the gradient of the score w.r.t. its weight:

    a_c = d ln f / d theta_c = (d ln f / d Z_m) * X_n,

Z_m being the unit's input sum (the layer score times the inter-layer activeness, as the poster writes
it). A neuron collects the activeness of its outgoing connections. Collected in proportion to the
connection weights (the first-order change of ln f when all of neuron n's outgoing connections are
strengthened by the same factor (1 + e): d ln f / d e = sum_c theta_c a_c), this gives

    x~_n = sum_c theta_c a_c = X_n * sum_m theta_c (d ln f / d Z_m) = X_n * d ln f / d X_n,

i.e. gamma_n = d ln f / d X_n: the neuron's weight is the gradient of the score w.r.t. its response,
and x~ = X * gamma is "gradient times input". One backward pass gives gamma for every layer below T.
This weighted collection is the default (``collect="weighted"``).

The poster does not say how a neuron collects the activeness of its connections, and a second
reading fits its abstract ("spatially weighted neuron responses") as well: summing the a_c / X_n of
the outgoing connections without their weights, gamma_n = sum_m d ln f / d Z_m over the units m that
neuron n feeds (``collect="unweighted"``). For a reader that mixes all channels (a 1x1 or k x k
convolution, a densely applied fc layer), that sum is the same for every channel at a position: a
per-position weight. It is computed exactly as the transposed convolution of d ln f / dZ with an
all-ones kernel of the reader's shape, summed over every weight layer that reads layer t
(:func:`deepfeat.backbones.readers.weight_readers`). Where the reader is a fully connected layer over
a flattened map (AlexNet / VGG16 run at 224), the sum is the same for every neuron and the
unweighted features equal the plain average; in the fully convolutional setting (fc6 applied at
several positions of a large image) it weights the positions.

We flip the sign, gamma = -d ln f / d X = d ||x^(T)||_p^p / d X (likewise for d ln f / dZ), so that the
weights of active paths are positive; probes are unaffected by a global sign, heatmaps read
naturally. C_p is additive in ln f and vanishes from every gradient; gamma is still defined only up to
a positive factor per image (the 1/(W_T H_T) of the average and the overall scale of the responses
above t multiply it), so it is rescaled per image and layer to a mean |gamma| of 1: x~ keeps the scale
of x. That rescaling changes single-layer features image by image, so probes should L2-normalise
them: the evaluation recipe does so by default for the activeness rows.
The feature of layer t is the spatial average of X^(t) * gamma^(t).

Configurations: ``last`` takes T = the last hidden layer before the classifier (``pool`` on
EfficientNet-Lite0, ``fc7`` on AlexNet / VGG16) for every t: one backward pass per batch, shared by all
requested layers. ``next`` takes T = the layer after t in the catalog, a different score per t: one
backward per requested layer, each running only from t+1 down to t, so together they cost at most one
backward pass over the span of the requested layers (plus the forward pass, which all share).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deepfeat.backbones.backbone import Backbone
from deepfeat.backbones.layers import LayerInfo
from deepfeat.backbones.readers import weight_readers
from deepfeat.errors import ConfigError
from deepfeat.features.base import FeatureMethod, OutputSpec
from deepfeat.validation import check_choice

CONFIGS = ("last", "next")
NORMS = (1, 2)
COLLECTIONS = ("weighted", "unweighted")


def last_hidden_layer(backbone: Backbone) -> LayerInfo:
    """The layer feeding the classifier: the catalog layer just before the logits layer."""
    names = backbone.catalog.names
    for i, layer in enumerate(backbone.catalog):
        if layer.kind == "logits" and i > 0:
            return backbone.catalog.get(names[i - 1])
    raise ConfigError(f"{backbone.name} has no logits layer; give the top layer explicitly (top=..., --top)")


def next_layer(backbone: Backbone, layer: LayerInfo) -> LayerInfo:
    """The catalog layer after ``layer`` computed by another module (derived layers such as prob, and
    other readings of the same module such as a transformer block's class token, excluded)."""
    layers = [info for info in backbone.catalog if info.derived_from is None]
    names = [info.name for info in layers]
    i = names.index(layer.name)
    above = [info for info in layers[i + 1 :] if info.module != layer.module]
    if not above:
        raise ConfigError(
            f"layer {layer.name!r} is the last layer of {backbone.name}; 'next' needs one above it"
        )
    return above[0]


def score_energy(top: torch.Tensor, p: int) -> torch.Tensor:
    """sum over the batch of ||x^(T)||_p^p, x^(T) the spatial average of ``top`` (= -ln f + const)."""
    x = top.flatten(2).mean(dim=2) if top.dim() > 2 else top
    return x.abs().pow(p).sum() if p == 1 else x.pow(2).sum()


def weighted_average(response: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Spatial average of response * gamma, (N, C), gamma rescaled per image to mean |gamma| = 1."""
    scale = gamma.flatten(1).abs().mean(dim=1).clamp_min(torch.finfo(gamma.dtype).tiny)
    gamma = gamma / scale.view(-1, *([1] * (gamma.dim() - 1)))
    weighted = response * gamma
    return weighted.flatten(2).mean(dim=2) if weighted.dim() > 2 else weighted


class Activeness(FeatureMethod):
    """InterActive features of ``layers``: responses weighted by activeness, then averaged over space.

    Parameters
    ----------
    layers: catalog layers (a list, or one name).
    config: ``"last"`` (score at the last hidden layer, or ``top``) or ``"next"`` (score at the layer
        after each layer).
    p: norm of the score function, 1 or 2.
    top: top layer T for ``"last"`` (default: the layer feeding the classifier).
    collect: ``"weighted"`` (gamma = d ln f / dX, the default) or ``"unweighted"`` (the summed
        d ln f / dZ of the units each neuron feeds; see the module docstring).
    """

    name = "activeness"
    needs_backward = True

    def __init__(
        self,
        layers: Sequence[str],
        config: str = "last",
        p: int = 2,
        top: str | None = None,
        collect: str = "weighted",
    ):
        self.layers = layers
        self.config = config
        self.p = p
        self.top = top
        self.collect = collect

    def _validate(self) -> None:
        check_choice("activeness configuration", self.config, CONFIGS)
        check_choice("activeness collection", self.collect, COLLECTIONS)
        if isinstance(self.p, bool) or self.p not in NORMS:  # (True == 1 passed as p = 1)
            raise ConfigError(f"p must be 1 or 2 (the norm of the score), got {self.p!r}")
        if self.top is not None and self.config != "last":
            raise ConfigError("top applies to config='last' only")

    def top_layer(self, backbone: Backbone, layer: LayerInfo) -> LayerInfo:
        """The layer T whose score weights ``layer``."""
        if self.config == "next":
            return next_layer(backbone, layer)
        return backbone.catalog.get(self.top) if self.top is not None else last_hidden_layer(backbone)

    def outputs(self, backbone: Backbone) -> list[OutputSpec]:
        self._validate()
        order = {name: i for i, name in enumerate(backbone.catalog.names)}
        specs = []
        for layer in backbone.catalog.resolve(self.layers):
            if layer.derived_from is not None:
                raise ConfigError(
                    f"layer {layer.name!r} is computed from another layer; activeness needs a module"
                )
            top = self.top_layer(backbone, layer)
            if order[top.name] < order[layer.name]:
                raise ConfigError(
                    f"the top layer {top.name!r} is below {layer.name!r}; activeness flows from above"
                )
            params = {
                "method": self.name,
                "layer": layer.name,
                "config": self.config,
                "p": int(self.p),
                "top": top.name,
                "gamma_scale": "mean_abs_1",
                "pool": "avg",
            }
            needs: tuple[LayerInfo, ...] = (top,)
            key = f"{layer.name}/{self.config}-p{int(self.p)}"
            if self.collect == "unweighted":
                params["collect"] = "unweighted"
                needs += self._readers(backbone, layer)
                key += "-u"
            specs.append(OutputSpec(key=key, layer=layer, params=params, needs=needs))
        return specs

    def _readers(self, backbone: Backbone, layer: LayerInfo) -> tuple[LayerInfo, ...]:
        """The weight layers reading ``layer``, as capture entries (unweighted collection)."""
        paths = weight_readers(backbone, layer)
        if not paths:
            raise ConfigError(
                f"no weight layer reads {layer.name!r} of {backbone.name} directly; the unweighted "
                "collection sums over the weight connections a neuron feeds: use collect='weighted'"
            )
        self._reader_modules = getattr(self, "_reader_modules", {})
        out = []
        for path in paths:
            module = backbone.submodule(path)
            self._reader_modules[path] = module
            spatial = isinstance(module, nn.Conv2d)
            channels = module.out_channels if spatial else module.out_features
            out.append(LayerInfo(f"{layer.name}>{path}", path, "conv", channels, 1 if spatial else None))
        return tuple(out)

    def gammas(
        self, captured: dict[str, torch.Tensor], specs: Sequence[OutputSpec]
    ) -> dict[str, torch.Tensor]:
        """gamma of every spec's layer: one backward pass (``last``) or one per layer (``next``)."""
        gammas: dict[str, torch.Tensor] = {}
        by_top: dict[str, list[OutputSpec]] = {}
        for spec in specs:
            group = by_top.setdefault(spec.params["top"], [])
            if spec.layer.name not in [s.layer.name for s in group]:
                group.append(spec)
        for top, group in by_top.items():
            energy = score_energy(captured[top].float(), self.p)
            targets = [
                n.name for s in group for n in (s.needs[1:] if self.collect == "unweighted" else [s.layer])
            ]
            grads = dict(
                zip(targets, torch.autograd.grad(energy, [captured[t] for t in targets], retain_graph=True))
            )
            for spec in group:
                if self.collect == "weighted":
                    gammas[spec.layer.name] = grads[spec.layer.name]
                    continue
                shape = captured[spec.layer.name].shape
                gammas[spec.layer.name] = sum(
                    _ones_transpose(self._reader_modules[n.module], grads[n.name], shape)
                    for n in spec.needs[1:]
                )
        return gammas

    def encode(
        self,
        captured: dict[str, torch.Tensor],
        specs: Sequence[OutputSpec],
        item_ids: Sequence[str],
    ) -> dict[str, torch.Tensor]:
        gammas = self.gammas(captured, specs)
        with torch.no_grad():
            return {
                spec.key: weighted_average(
                    captured[spec.layer.name].detach().float(), gammas[spec.layer.name].float()
                )
                for spec in specs
            }


def _ones_transpose(reader: nn.Module, grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """sum over the units m each input neuron feeds of grad_m: the reader's transpose with all-ones
    weights applied to ``grad`` (its output gradient), in the shape of its input."""
    with torch.no_grad():
        if isinstance(reader, nn.Linear):
            total = grad.float().sum(dim=1, keepdim=True)  # every input feeds every unit
            return total.expand(shape[0], int(torch.tensor(shape[1:]).prod())).reshape(shape)
        ones = torch.ones_like(reader.weight, dtype=torch.float32)
        return torch.nn.grad.conv2d_input(
            shape,
            ones,
            grad.float(),
            stride=reader.stride,
            padding=reader.padding,
            dilation=reader.dilation,
            groups=reader.groups,
        )


def activeness_maps(
    backbone: Backbone,
    batch: torch.Tensor,
    layers: Sequence[str],
    config: str = "last",
    p: int = 2,
    top: str | None = None,
    collect: str = "weighted",
) -> dict[str, torch.Tensor]:
    """The 2D heatmaps sum_d gamma_{w,h,d} (N, H_t, W_t) of spatial ``layers`` for a preprocessed batch."""
    from deepfeat.features.capture import LayerCapture

    method = Activeness(layers, config=config, p=p, top=top, collect=collect)
    for layer in backbone.catalog.resolve(method.layers):  # (before the checks of the top layer)
        if not layer.spatial:
            spatial = [info.name for info in backbone.catalog if info.spatial]
            raise ConfigError(
                f"layer {layer.name!r} is a vector, with no spatial map to draw; choose a layer with one: "
                f"{', '.join(spatial)}"
            )
    specs = method.outputs(backbone)
    wanted = {s.layer.name: s.layer for s in specs} | {n.name: n for s in specs for n in s.needs}
    ordered = [layer for layer in backbone.catalog if layer.name in wanted]
    ordered += [layer for name, layer in wanted.items() if name not in backbone.catalog]
    grad_layers = {spec.layer.name for spec in specs}
    with (
        LayerCapture(backbone, ordered, stop_early=False, grad_layers=grad_layers) as capture,
        torch.enable_grad(),
    ):
        captured = capture.run(batch)
        gammas = method.gammas(captured, specs)
    return {spec.layer.name: gammas[spec.layer.name].detach().float().sum(dim=1) for spec in specs}
