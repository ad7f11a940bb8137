"""DeCAF features: the activations of any layers, pooled or unrolled, with Agrawal's ablations."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deepfeat.backbones.backbone import Backbone
from deepfeat.features.base import Derivation, FeatureMethod, OutputSpec
from deepfeat.features.featureset import FeatureKind
from deepfeat.features.pooling import NEEDS_SEED, canonical_pool, derivable_from, derive, pool_maps
from deepfeat.validation import as_names, check_int


class LayerActivations(FeatureMethod):
    """Activations of ``layers``, each pooled by every pooling in ``pool``.

    Parameters
    ----------
    layers: layer names (a list, or one name; ``"all"`` for every layer).
    pool: one pooling or a list of them (see :mod:`deepfeat.features.pooling`): avg, max (= sp-max),
        unroll, sp-shuffle, bin, sp-max-bin.
    random_state: seed of the ``sp-shuffle`` permutations (combined with each image's id).
    """

    name = "activations"
    needs_backward = False

    def __init__(self, layers: Sequence[str], pool: Sequence[str] = "avg", random_state: int = 0):
        self.layers = layers
        self.pool = pool
        self.random_state = random_state

    def _pools(self) -> list[str]:
        return as_names(self.pool, "pool")

    def outputs(self, backbone: Backbone) -> list[OutputSpec]:
        specs: dict[str, OutputSpec] = {}
        pools = self._pools()
        seed = check_int("random_state (seed of sp-shuffle)", self.random_state, 0, 2**32 - 1)
        for layer in backbone.catalog.resolve(self.layers):
            for pool in pools:
                name = canonical_pool(pool, layer.spatial)
                params = {"method": self.name, "layer": layer.name, "pool": name}
                if name in NEEDS_SEED:
                    params["random_state"] = seed
                identity = not layer.spatial and name == "unroll"
                key = layer.name if identity else f"{layer.name}/{name}"
                kind = FeatureKind.MAPS if layer.spatial and name == "unroll" else FeatureKind.VECTOR
                specs.setdefault(key, OutputSpec(key=key, layer=layer, params=params, kind=kind))
        return list(specs.values())

    def encode(
        self,
        captured: dict[str, torch.Tensor],
        specs: Sequence[OutputSpec],
        item_ids: Sequence[str],
    ) -> dict[str, torch.Tensor]:
        return {
            spec.key: pool_maps(
                captured[spec.layer.name].float(),  # no copy in float32; after a mixed-precision pass
                spec.params["pool"],
                item_ids=item_ids,
                random_state=spec.params.get("random_state", 0),
            )
            for spec in specs
        }

    def derivations(self, spec: OutputSpec) -> list[tuple[dict, Derivation]]:
        out = []
        pool = spec.params["pool"]
        for source_pool in derivable_from(pool):
            if not spec.layer.spatial and source_pool != "unroll":
                continue
            source = {"method": self.name, "layer": spec.layer.name, "pool": source_pool}

            def fn(stored, shape, ids, _source_pool=source_pool):
                return derive(
                    stored,
                    _source_pool,
                    pool,
                    shape,
                    item_ids=ids,
                    random_state=spec.params.get("random_state", 0),
                )

            out.append((source, fn))
        return out
