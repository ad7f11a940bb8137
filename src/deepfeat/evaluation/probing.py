"""Which probe can read which features, and a fresh probe set up for a feature set.

Probes declare the feature kinds they read in ``feature_kinds`` (default: vectors only). Factored
gradients (:class:`~deepfeat.features.featureset.FeatureKind` ``FACTORED``) need a probe that reads
them through the factored trace kernel, set up with the rows' layout; unrolled maps are read as flat
vectors (Agrawal's "unroll" features) or through a per-split encoder (Fisher vectors).
"""

from __future__ import annotations

from collections.abc import Mapping

from sklearn.base import clone

from deepfeat.errors import ConfigError
from deepfeat.features.featureset import FeatureKind, FeatureSet


def feature_kinds(probe) -> tuple[str, ...]:
    """Kinds of features ``probe`` can be trained on (its ``feature_kinds``; vectors by default)."""
    return tuple(getattr(probe, "feature_kinds", ("vector",)))


def _kind_seen(features: FeatureSet, encoded: bool) -> FeatureKind:
    """What a probe sees: encoded rows and flattened maps are vectors."""
    return FeatureKind.VECTOR if encoded or features.kind is FeatureKind.MAPS else features.kind


def accepts(probe, features: FeatureSet, *, encoded: bool = False) -> bool:
    """Whether ``probe`` can be trained on ``features`` (after their per-split encoder, if ``encoded``)."""
    return _kind_seen(features, encoded).value in feature_kinds(probe)


def prepare_probe(template, features: FeatureSet, *, encoded: bool = False):
    """A fresh copy of ``template`` set up for ``features``; a clear error when it cannot read them."""
    kind = _kind_seen(features, encoded)
    if kind.value not in feature_kinds(template):
        if kind is FeatureKind.FACTORED:
            raise ConfigError(
                f"features {features.key!r} are factored gradients: evaluate them with the kernel probe "
                "'ksvm', or extract the explicit form (forms=['explicit'], --forms explicit) for linear "
                "probes"
            )
        raise ConfigError(
            f"features {features.key!r} are {kind.value} features; probe {type(template).__name__} reads "
            f"{', '.join(feature_kinds(template))}"
        )
    probe = clone(template)
    if kind is FeatureKind.FACTORED:
        probe.set_params(kernel="factored", layout=features.factored_layout)
    weights = probe.get_params().get("class_weight")
    if isinstance(weights, Mapping) and features.classes:  # by class name: the probes see class codes
        names = list(features.classes)
        probe.set_params(class_weight={names.index(k) if k in names else k: v for k, v in weights.items()})
    return probe
