"""What every feature method shares: the outputs it declares and the batch step that encodes them.

A method (DeCAF activations, InterActive activeness, Deep Fishing gradients, Fisher vectors) declares
the layers it reads and whether it needs a backward pass; the extraction pipeline plans one pass per
batch for all requested methods and hands each method the captured tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from deepfeat.backbones.backbone import Backbone
from deepfeat.backbones.layers import LayerInfo
from deepfeat.features.featureset import FeatureKind

#: Computes an output from a stored source output: (stored rows, per-item layer shape, item ids).
Derivation = Callable[[torch.Tensor, tuple[int, ...], Sequence[str]], torch.Tensor]


@dataclass(frozen=True)
class OutputSpec:
    """One feature array a method produces: its display key, the layer it reads and its parameters
    (which, with the dataset, backbone and preprocessing, form the store key)."""

    key: str
    layer: LayerInfo
    params: dict = field(hash=False)
    needs: tuple[LayerInfo, ...] = ()  # other layers the output is computed from (e.g. logits)
    tap: bool = False  # needs the input and output of the layer's weight layer (LayerInfo.linear)
    kind: FeatureKind = FeatureKind.VECTOR  # what the stored rows hold


class FeatureMethod:
    """Base class of feature methods; subclasses set ``name`` and implement the three steps."""

    name: str = "method"
    needs_backward: bool = False

    def outputs(self, backbone: Backbone) -> list[OutputSpec]:
        """Validate the method's parameters against ``backbone`` and list its outputs."""
        raise NotImplementedError

    def encode(
        self,
        captured: dict[str, torch.Tensor],
        specs: Sequence[OutputSpec],
        item_ids: Sequence[str],
    ) -> dict[str, torch.Tensor]:
        """Compute the outputs ``specs`` (keyed by ``spec.key``) from one batch of captured layers.

        An output of shape (N, D) is stored with the captured layer's shape as its row shape; an
        output with more dimensions (N, *shape) is stored flattened with that shape.
        """
        raise NotImplementedError

    def derivations(self, spec: OutputSpec) -> list[tuple[dict, Derivation]]:
        """Ways to compute ``spec`` from another stored output without the network (params of the
        source output, function); empty when there are none."""
        return []
