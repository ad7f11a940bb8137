"""Deep Fishing: gradient features dE/dW_k = x_{k-1} [dE/dy_k]^T of any weight layer, kept factored.

E is the cross-entropy between the network's own softmax output and the uniform target 1/P (P its
number of outputs), the paper's choice at test time when the label is unknown:

    E = -(1/P) sum_c log softmax(y_out)_c,        dE/dy_out = softmax(y_out) - 1/P.

For a fully connected layer k, y_k = W_k x_{k-1} + b_k, the gradient of E w.r.t. W_k is the outer
product of the forward factor x_{k-1} (the layer's input) and the backward factor dE/dy_k (the
gradient w.r.t. the layer's output before its non-linearity). A 1x1 convolution applies the same
matrix at every position p of its input map, so its gradient is a sum of outer products,
dE/dW_k = sum_p x_p [dE/dy_p]^T. Both factors of every requested layer come from one forward and one
backward pass per batch (per-image factors: E is summed over the batch, and every layer acts on each
image separately in inference mode).

Forms (``forms``), each stored as its own output:

- ``factored`` (key ``<layer>/grad``): x_p stacked over dE/dy_p, a (d_in + d_out, P) array per image
  (P = 1 for a fully connected layer). Compare images with :func:`deepfeat.kernels.factored_kernel`.
- ``explicit`` (key ``<layer>/grad-explicit``): the materialised (d_in, d_out) gradient, flattened,
  optionally power-normalised (sign(z)|z|^power); only for small layers (``max_explicit_dim``).
- ``input`` (key ``<layer>/x_in``): the forward factor x_{k-1} (averaged over positions).
- ``output`` (key ``<layer>/x_out``): the catalog layer's own output x_k, after its non-linearity
  (averaged over positions); for the network's output layer, which has none, this is y_k.
- ``preact`` (key ``<layer>/y``): the weight layer's output before any non-linearity, y_k (averaged
  over positions).

The forward baselines of the paper's Table 1 are the layers' outputs and the concatenations of
consecutive ones: x_{k-1};x_k for a hidden layer k (post-ReLU activations of both, e.g. x5;x6 and
x6;x7) and x_{k-1};y_k for the output layer (x7;y8): ``input`` and ``output`` give both factors of
that concatenation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deepfeat.backbones.backbone import Backbone
from deepfeat.backbones.layers import LayerInfo
from deepfeat.errors import ConfigError
from deepfeat.features.base import FeatureMethod, OutputSpec
from deepfeat.features.featureset import FeatureKind
from deepfeat.validation import as_names, check_choice

FORMS = ("factored", "explicit", "input", "output", "preact")
_SUFFIX = {"factored": "grad", "explicit": "grad-explicit", "input": "x_in", "output": "x_out", "preact": "y"}


def weight_layer_dims(backbone: Backbone, layer: LayerInfo) -> tuple[int, int]:
    """(d_in, d_out) of the weight layer of ``layer``; an error when it has none we support."""
    if layer.linear is None:
        valid = [info.name for info in backbone.catalog if info.linear is not None]
        raise ConfigError(
            f"layer {layer.name!r} of {backbone.name} has no weight layer for gradient features; "
            f"valid: {', '.join(valid) or 'none'}"
        )
    module = backbone.submodule(layer.linear)
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.groups == 1
        and module.padding in ((0, 0), "valid")
    ):
        return module.in_channels, module.out_channels
    raise ConfigError(
        f"the weight layer {layer.linear!r} of {layer.name!r} is a {type(module).__name__}; gradient "
        "features support nn.Linear and 1x1, stride-1, ungrouped nn.Conv2d layers"
    )


def output_layer(backbone: Backbone) -> LayerInfo:
    """The network's output layer (kind ``logits``) whose softmax E is computed from."""
    for layer in backbone.catalog:
        if layer.kind == "logits":
            return layer
    raise ConfigError(f"{backbone.name} has no logits layer; gradient features need the network's output")


def uniform_target_loss(logits: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of the cross-entropy to the uniform target 1/P.

    Computed in float64: dE/dy = softmax - 1/P cancels badly in float32 when the softmax is nearly
    uniform (untrained or poorly matched networks).
    """
    return -F.log_softmax(logits.double(), dim=1).mean(dim=1).sum()


def _positions(t: torch.Tensor) -> torch.Tensor:
    """(N, C) or (N, C, H, W) -> (N, C, P)."""
    return t.unsqueeze(-1) if t.dim() == 2 else t.flatten(2)


class GradientFeatures(FeatureMethod):
    """Deep Fishing gradient features of the weight layers of ``layers``.

    Parameters
    ----------
    layers: catalog layers with a weight layer (``fc6``, ``fc7``, ``fc8`` on AlexNet / VGG16; ``head``
        (a 1x1 convolution) and ``logits`` on EfficientNet-Lite0); a list or one name.
    forms: which outputs to produce (see the module docstring): any of factored, explicit, input,
        output, preact; default the factored gradient with the two forward baselines of Table 1.
    power: power normalisation exponent of the explicit form (None: none).
    max_explicit_dim: the largest d_in * d_out for which the explicit form may be materialised.
    """

    name = "gradients"

    def __init__(
        self,
        layers: Sequence[str],
        forms: Sequence[str] = ("factored", "input", "output"),
        *,
        power: float | None = None,
        max_explicit_dim: int = 1 << 22,
    ):
        self.layers = layers
        self.forms = forms
        self.power = power
        self.max_explicit_dim = max_explicit_dim

    @property
    def needs_backward(self) -> bool:  # type: ignore[override]
        """True unless only the forward baselines are asked for."""
        return any(f in ("factored", "explicit") for f in self._forms())

    def _forms(self) -> list[str]:
        forms = [check_choice("gradient feature form", f, FORMS) for f in as_names(self.forms, "forms")]
        return list(dict.fromkeys(forms))

    def outputs(self, backbone: Backbone) -> list[OutputSpec]:
        forms = self._forms()
        if self.power is not None and not self.power > 0:
            raise ConfigError(f"power must be positive or None, got {self.power}")
        if self.power is not None and "explicit" not in forms:
            raise ConfigError(
                f"power normalises the explicit form only, and the forms are {forms}; add 'explicit' "
                "or leave power out"
            )
        logits = output_layer(backbone)
        specs = []
        for layer in backbone.catalog.resolve(self.layers):
            d_in, d_out = weight_layer_dims(backbone, layer)
            for form in forms:
                params = {
                    "method": self.name,
                    "layer": layer.name,
                    "form": form,
                    "d_in": d_in,
                    "d_out": d_out,
                }
                if form in ("factored", "explicit"):
                    params["target"] = "uniform"
                if form == "explicit":
                    if d_in * d_out > self.max_explicit_dim:
                        raise ConfigError(
                            f"the explicit gradient of {layer.name!r} has {d_in} x {d_out} = {d_in * d_out} "
                            f"dims (max_explicit_dim={self.max_explicit_dim}); use the factored form"
                        )
                    params["power"] = self.power
                needs = (logits,) if form in ("factored", "explicit") else ()
                if form == "output":
                    needs = (layer,)
                key = f"{layer.name}/{_SUFFIX[form]}"
                kind = FeatureKind.FACTORED if form == "factored" else FeatureKind.VECTOR
                specs.append(
                    OutputSpec(key=key, layer=layer, params=params, needs=needs, tap=True, kind=kind)
                )
        return specs

    def encode(
        self,
        captured: dict[str, torch.Tensor],
        specs: Sequence[OutputSpec],
        item_ids: Sequence[str],
    ) -> dict[str, torch.Tensor]:
        backward = [s for s in specs if s.params["form"] in ("factored", "explicit")]
        grads: dict[str, torch.Tensor] = {}
        if backward:
            names = list(dict.fromkeys(s.layer.name for s in backward))
            loss = uniform_target_loss(captured[backward[0].needs[0].name])
            outs = [captured[f"{name}:out"] for name in names]
            grads = dict(zip(names, torch.autograd.grad(loss, outs, retain_graph=True)))
        result = {}
        for spec in specs:
            name, form = spec.layer.name, spec.params["form"]
            with torch.no_grad():
                x = _positions(captured[f"{name}:in"].detach().float())
                if form == "input":
                    result[spec.key] = x.mean(dim=2)
                elif form == "preact":
                    result[spec.key] = _positions(captured[f"{name}:out"].detach().float()).mean(dim=2)
                elif form == "output":
                    result[spec.key] = _positions(captured[name].detach().float()).mean(dim=2)
                else:
                    g = _positions(grads[name].float())
                    if form == "factored":
                        result[spec.key] = torch.cat([x, g], dim=1).contiguous()
                    else:
                        explicit = torch.einsum("nip,nop->nio", x, g).flatten(1)
                        power = spec.params.get("power")
                        if power is not None:
                            explicit = explicit.sign() * explicit.abs().pow(power)
                        result[spec.key] = explicit
        return result
