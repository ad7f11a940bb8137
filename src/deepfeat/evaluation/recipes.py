"""Recipes: what an evaluation extracts and how it feeds the probes, one class per kind of feature.

A recipe knows its feature methods, the probes that suit its features by default, the preprocessing
it expects, whether its features need a per-split encoder before the probes, which extra feature sets
it derives (concatenations) and at which input scales it extracts. :func:`~deepfeat.evaluation.job.run`
asks the recipe instead of switching on a method name, so a new kind of feature is a new recipe.

- :class:`ActivationsRecipe`: DeCAF layer activations, pooled or ablated (Agrawal), optionally the
  concatenation of all layers;
- :class:`GradientRecipe`: Deep Fishing gradients, factored (kernel probe) and the forward baselines
  with their concatenation (Table 1);
- :class:`InteractiveRecipe`: InterActive's average and max pooling of the responses and the
  activeness-weighted averages per configuration and norm (the poster's rows);
- :class:`FisherRecipe`: Fisher vectors of unrolled conv maps, the encoder fitted per split, over one
  or several input scales.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from deepfeat.data.transforms import Preprocess
from deepfeat.errors import ConfigError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.activeness import COLLECTIONS, CONFIGS, NORMS, Activeness
from deepfeat.features.base import FeatureMethod, OutputSpec
from deepfeat.features.featureset import FeatureKind, FeatureSet, concat_features, pool_positions
from deepfeat.features.fisher import FisherEncoder
from deepfeat.features.gradients import FORMS, GradientFeatures
from deepfeat.kernels import NORMALIZATIONS
from deepfeat.validation import as_names, check_choice, check_int


class Recipe:
    """Base class; subclasses are dataclasses whose fields are the recipe's parameters."""

    name: str = "recipe"
    default_probes: tuple[str, ...] = ("svm", "logreg")
    default_preprocess: str = "backbone"

    def methods(self) -> list[FeatureMethod]:
        """The feature methods to extract (validated against a backbone by the pipeline)."""
        raise NotImplementedError

    def probe_params(self) -> dict:
        """Parameters this recipe passes to probes built by name (e.g. the kernel normalisation)."""
        return {}

    def check_outputs(self, outputs: Sequence[OutputSpec]) -> None:
        """A clear error, before any extraction, for outputs this recipe cannot use (none by default)."""

    def encoders(self, features: Mapping[str, FeatureSet]) -> dict[str, object]:
        """Per feature set name, a transformer fitted on each split's training rows (none by default)."""
        return {}

    def rename(self, key: str) -> str:
        """The name of a stored feature set in results (e.g. ``stage6/unroll`` -> ``stage6/fv32``)."""
        return key

    def combine(self, features: dict[str, FeatureSet]) -> dict[str, FeatureSet]:
        """The feature sets to evaluate: the extracted ones plus any derived from them."""
        return dict(features)

    def preprocesses(self, base: Preprocess) -> list[Preprocess]:
        """Input preprocessings to extract with; several are merged by :meth:`merge_scales`."""
        return [base]

    def merge_scales(self, per_scale: list[dict[str, FeatureSet]]) -> dict[str, FeatureSet]:
        """One feature set per key from the extractions at every scale (one scale: itself)."""
        if len(per_scale) != 1:
            raise ConfigError(f"the {self.name} recipe extracts at one scale only")
        return per_scale[0]

    def to_dict(self) -> dict:
        """Plain JSON: the recipe's name and parameters."""
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}


def _concat_by_kind(features: dict[str, FeatureSet]) -> dict[str, FeatureSet]:
    """``concat/<kind>``: every layer's features of one kind (pooling, configuration) side by side;
    vector layers (fc, pool: no pooling of their own) join every kind."""
    groups: dict[str, list[FeatureSet]] = {}
    vectors: list[FeatureSet] = []
    for key, fs in features.items():
        if fs.kind is FeatureKind.FACTORED:
            continue
        _, _, kind = key.partition("/")
        if kind:
            groups.setdefault(kind, []).append(fs)
        else:
            vectors.append(fs)
    if not groups:
        groups = {"unroll": []}
    out = {}
    for kind, sets in groups.items():
        sets = sets + vectors
        if len(sets) > 1:
            out[f"concat/{kind}"] = concat_features(sets, f"concat/{kind}")
    return out


@dataclass
class ActivationsRecipe(Recipe):
    """DeCAF layer activations of ``layers``, each pooled by every pooling in ``pool``; with
    ``concat``, also the concatenation of all layers per pooling."""

    layers: Sequence[str] = ("pool",)
    pool: Sequence[str] = ("avg",)
    concat: bool = False
    random_state: int = 0
    name = "activations"

    def __post_init__(self) -> None:
        self.layers = as_names(self.layers, "layers")
        self.pool = as_names(self.pool, "pool")

    def methods(self) -> list[FeatureMethod]:
        return [LayerActivations(self.layers, self.pool, random_state=self.random_state)]

    def combine(self, features: dict[str, FeatureSet]) -> dict[str, FeatureSet]:
        return {**features, **(_concat_by_kind(features) if self.concat else {})}


@dataclass
class GradientRecipe(Recipe):
    """Deep Fishing gradient features of the weight layers of ``layers`` in the given ``forms``; the
    factored gradient goes to the kernel probe, normalised by ``kernel_normalize`` (default: the
    L2-normalised gradient, as the paper compares gradients); the forward baselines of Table 1, x_in
    (x_{k-1}), x_out (x_k after the non-linearity; y_k at the output layer) and their concatenation
    ``x_in;x_out``, to every probe."""

    layers: Sequence[str] = ("logits",)
    forms: Sequence[str] = ("factored", "input", "output")
    kernel_normalize: str = "gradient"
    name = "gradient"
    default_probes = ("ksvm",)

    def __post_init__(self) -> None:
        self.layers = as_names(self.layers, "layers")
        self.forms = [check_choice("gradient feature form", f, FORMS) for f in as_names(self.forms, "forms")]
        check_choice("kernel normalisation", self.kernel_normalize, NORMALIZATIONS)

    def methods(self) -> list[FeatureMethod]:
        return [GradientFeatures(self.layers, forms=self.forms)]

    def probe_params(self) -> dict:
        return {"kernel_normalize": self.kernel_normalize}

    def combine(self, features: dict[str, FeatureSet]) -> dict[str, FeatureSet]:
        out: dict[str, FeatureSet] = {}
        for key, fs in features.items():
            out[key] = fs
            layer, _, kind = key.partition("/")
            if kind == "x_out" and f"{layer}/x_in" in features:
                pair = f"{layer}/x_in;x_out"
                out[pair] = concat_features([features[f"{layer}/x_in"], fs], pair)
        return out


@dataclass
class InteractiveRecipe(Recipe):
    """InterActive rows of ``layers``: average and max pooling of the responses and the
    activeness-weighted averages for every configuration in ``configs``, norm in ``norms`` and
    collection in ``collections`` (``weighted``: the default reading; ``unweighted``: the poster's
    other possible reading, see :mod:`deepfeat.features.activeness`); with ``concat``, the
    concatenation of all layers per row. ``normalize`` (default True) L2-normalises every row before
    the probe: activeness rescales gamma image by image, and the baselines are normalised alike so
    the rows stay comparable."""

    layers: Sequence[str] = ("pool",)
    configs: Sequence[str] = CONFIGS
    norms: Sequence[int] = NORMS
    collections: Sequence[str] = ("weighted",)
    concat: bool = False
    normalize: bool = True
    name = "interactive"
    default_preprocess = "interactive"

    def __post_init__(self) -> None:
        self.layers = as_names(self.layers, "layers")
        self.configs = [
            check_choice("activeness configuration", c, CONFIGS) for c in as_names(self.configs, "configs")
        ]
        self.collections = [
            check_choice("activeness collection", c, COLLECTIONS)
            for c in as_names(self.collections, "collections")
        ]
        if isinstance(self.norms, numbers.Integral):
            self.norms = [self.norms]
        self.norms = [int(check_choice("score norm p", str(p), [str(n) for n in NORMS])) for p in self.norms]
        if not self.norms:
            raise ConfigError("norms names no score norm; valid: 1, 2")

    def methods(self) -> list[FeatureMethod]:
        methods: list[FeatureMethod] = [LayerActivations(self.layers, ["avg", "max"])]
        methods += [
            Activeness(self.layers, config=c, p=p, collect=k)
            for k in self.collections
            for c in self.configs
            for p in self.norms
        ]
        return methods

    def probe_params(self) -> dict:
        return {"normalize": True} if self.normalize else {}

    def combine(self, features: dict[str, FeatureSet]) -> dict[str, FeatureSet]:
        return {**features, **(_concat_by_kind(features) if self.concat else {})}


@dataclass
class FisherRecipe(Recipe):
    """Fisher vectors of the local descriptors of conv ``layers`` (their unrolled maps, kept in the
    store): PCA to ``pca_dim`` and a ``components``-Gaussian GMM fitted on each split's training images;
    with several ``scales`` (input sides in pixels), the descriptors of every scale pooled per image."""

    layers: Sequence[str] = ("stage6",)
    components: int = 32
    pca_dim: int | None = 64
    scales: Sequence[int] | None = None
    random_state: int = 0
    encoder_params: dict = field(default_factory=dict)
    name = "fisher"

    def __post_init__(self) -> None:
        self.layers = as_names(self.layers, "layers")
        check_int("components (GMM components)", self.components, 1)
        if self.pca_dim is not None:
            check_int("pca_dim", self.pca_dim, 1)
        if self.scales is not None:
            self.scales = [check_int("scales (input sides in pixels)", int(s), 32) for s in self.scales]
            if not self.scales:
                raise ConfigError("scales names no input side; give e.g. [224, 320] or None")

    def methods(self) -> list[FeatureMethod]:
        return [LayerActivations(self.layers, ["unroll"])]

    def check_outputs(self, outputs: Sequence[OutputSpec]) -> None:
        flat = [spec.layer.name for spec in outputs if spec.kind is not FeatureKind.MAPS]
        if flat:
            raise ConfigError(
                f"Fisher vectors encode the local descriptors of conv layers (one per position); "
                f"layer {', '.join(map(repr, flat))} has no spatial map: choose a conv layer (e.g. stage6)"
            )

    def encoder(self) -> FisherEncoder:
        """The unfitted encoder every split starts from."""
        params = {"progress": False, **self.encoder_params}
        return FisherEncoder(
            n_components=self.components, pca_dim=self.pca_dim, random_state=self.random_state, **params
        )

    def rename(self, key: str) -> str:
        return f"{key.partition('/')[0]}/fv{self.components}"

    def encoders(self, features: Mapping[str, FeatureSet]) -> dict[str, object]:
        return {key: self.encoder() for key in features}

    def preprocesses(self, base: Preprocess) -> list[Preprocess]:
        if not self.scales:
            return [base]
        out = []
        for side in self.scales:
            if base.crop is not None:
                out.append(replace(base, size=max(side, round(base.size * side / base.crop)), crop=side))
            else:
                out.append(replace(base, size=side))
        return out

    def merge_scales(self, per_scale: list[dict[str, FeatureSet]]) -> dict[str, FeatureSet]:
        if len(per_scale) == 1:
            return per_scale[0]
        return {key: pool_positions([f[key] for f in per_scale], key) for key in per_scale[0]}
