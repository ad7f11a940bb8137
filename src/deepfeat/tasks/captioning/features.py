"""Image features for captioning, through deepfeat's extraction pipeline and store (computed once, then
read): the activations of any backbone layer, average-pooled when spatial (the thesis feeds CaffeNet's
fc8 or VGGNet's fc7 to the LSTMs).

Fine-tuning the top stages of the CNN (``finetune_from``): the store keeps the unrolled maps of the
layer below them, and the stages from there up to the feature layer become a trainable module (cut
out of the network's traced graph), trained with the LSTMs end to end; the lower layers stay frozen
and are never run again. BatchNorm statistics stay frozen, as in deepfeat's fine-tuning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from deepfeat.backbones import DEFAULT_BACKBONE, Backbone, load_backbone
from deepfeat.data.transforms import Preprocess, preset
from deepfeat.errors import ConfigError, DataError
from deepfeat.evaluation.job import ExtractionOptions
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import extract, load_features
from deepfeat.features.store import FeatureStore
from deepfeat.tasks.captioning.data import CaptionData

log = logging.getLogger(__name__)


@dataclass
class FeatureSpec:
    """Which features condition the captions: a backbone layer (pooled by averaging when spatial),
    its preprocessing (a preset name or a :class:`Preprocess`), and optionally the layer below the
    stages fine-tuned with the LSTMs."""

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    layer: str = "pool"
    preprocess: str | Preprocess = "backbone"
    finetune_from: str | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        if isinstance(self.preprocess, Preprocess):
            out["preprocess"] = self.preprocess.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if isinstance(values.get("preprocess"), dict):
            prep = dict(values["preprocess"])
            for key in ("mean", "std"):
                if key in prep:
                    prep[key] = tuple(prep[key])
            values["preprocess"] = Preprocess(**prep)
        return cls(**values)

    def resolve_preprocess(self, backbone: Backbone) -> Preprocess:
        if isinstance(self.preprocess, Preprocess):
            return self.preprocess
        return preset(self.preprocess, backbone.preprocess)

    def load(self) -> Backbone:
        return load_backbone(self.backbone, weights=self.weights)

    def check(self, backbone: Backbone) -> None:
        """Layer names exist, and the fine-tuned stages lie below the feature layer."""
        layer = backbone.catalog.get(self.layer)
        if self.finetune_from is not None:
            low = backbone.catalog.get(self.finetune_from)
            if not low.spatial or low.module is None:
                raise ConfigError(f"finetune_from names a convolutional stage, not {self.finetune_from!r}")
            if backbone.catalog.position(low.name) >= backbone.catalog.position(layer.name):
                raise ConfigError(
                    f"finetune_from ({low.name}) must lie below the feature layer ({layer.name}); "
                    f"the stages between them are fine-tuned"
                )


@dataclass
class ImageFeatures:
    """Per-image inputs of the captioner, in the order of ``ids`` (images that decoded): pooled feature
    vectors, or (fine-tuning) the unrolled maps of the layer below the fine-tuned stages."""

    ids: list[str]
    values: np.ndarray
    shape: tuple[int, ...]
    failures: list[tuple[str, str]] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)


def image_features(
    data: CaptionData,
    spec: FeatureSpec,
    backbone: Backbone,
    *,
    store: FeatureStore | None = None,
    extraction: ExtractionOptions | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> ImageFeatures:
    """The features of every image of ``data`` (from the store when there, else extracted into it)."""
    extraction = extraction or ExtractionOptions()
    extraction.validate()
    echo = echo or log.info
    spec.check(backbone)
    layer = spec.finetune_from or spec.layer
    pool = "unroll" if spec.finetune_from else "avg"
    method = LayerActivations([layer], pool=pool)
    dataset = data.image_dataset()
    prep = spec.resolve_preprocess(backbone)
    if not extraction.extract:
        if store is None:
            raise ConfigError("extract=False reads features from a store; give one")
        features, failures = load_features(dataset, backbone, [method], store, preprocess=prep), []
    else:
        result = extract(
            dataset,
            backbone,
            [method],
            store=store,
            preprocess=prep,
            batch_size=extraction.batch_size,
            workers=extraction.workers,
            on_error=extraction.on_bad_image,
            max_pixels=extraction.max_pixels,
            progress=progress,
        )
        echo(result.describe())
        features, failures = result.features, result.failures
    fs = next(iter(features.values()))
    if len(fs) == 0:
        first = "".join(f"; {path}: {reason}" for path, reason in failures[:3])
        more = f"; ... {len(failures) - 3} more" if len(failures) > 3 else ""
        raise DataError(f"{data.name}: no image could be used ({len(failures)} failed{first}{more})")
    shape = tuple(fs.layer_shape) if spec.finetune_from else (fs.dim,)
    return ImageFeatures(
        ids=list(fs.ids),
        values=np.asarray(fs.features, dtype=np.float32),
        shape=shape,
        failures=list(failures),
        provenance=dict(fs.provenance),
    )


# -- conditioners: from stored features to the decoder's conditioning vector ------------------------
class Standardize(nn.Module):
    """(x - mean) / std per dimension, with the training images' statistics (kept in the model)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float().clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class FrozenBatchNorm(nn.Module):
    """Wraps a module so that its BatchNorm layers stay in evaluation mode when it trains."""

    def __init__(self, module: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.module = module
        self.shape = tuple(int(s) for s in shape)

    def train(self, mode: bool = True) -> FrozenBatchNorm:
        super().train(mode)
        for m in self.module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x.reshape(len(x), *self.shape))
        return out.flatten(1)


def backbone_tail(backbone: Backbone, from_layer: str, to_layer: str) -> nn.Module:
    """The network from the output of ``from_layer`` to the output of ``to_layer``, as a module of its
    own (a copy, trainable; cut from the traced graph of the backbone)."""
    import copy

    from timm.models._features_fx import create_feature_extractor

    low, high = backbone.catalog.get(from_layer), backbone.catalog.get(to_layer)
    if low.module is None or high.module is None:
        raise ConfigError(f"cannot cut the network at {from_layer!r} / {to_layer!r} (derived layers)")
    module = copy.deepcopy(backbone.module)
    try:
        graph_module = create_feature_extractor(module, return_nodes={low.module: "low", high.module: "high"})
    except Exception as exc:  # tracing failures come in many types
        raise ConfigError(
            f"{backbone.name}: its graph cannot be traced to fine-tune the stages above {from_layer} "
            f"({type(exc).__name__}); train on frozen features instead"
        ) from None
    # torchvision's extractor keeps one graph per mode (train / eval): cut both
    graphs = [getattr(graph_module, "train_graph", None), getattr(graph_module, "eval_graph", None)]
    for graph in {id(g): g for g in [*graphs, graph_module.graph] if g is not None}.values():
        _cut(graph)
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    for p in graph_module.parameters():
        p.requires_grad_(True)
    return graph_module


def _cut(graph) -> None:
    """Make the graph start at the output named "low" (a new input) and end at the one named "high"."""
    output = next(n for n in graph.nodes if n.op == "output")
    low_node, high_node = output.args[0]["low"], output.args[0]["high"]
    first = next(n for n in graph.nodes if n.op == "placeholder")
    with graph.inserting_before(first):
        maps = graph.placeholder("maps")
    low_node.replace_all_uses_with(maps)
    output.args = (high_node,)
    graph.eliminate_dead_code()
    graph.erase_node(first)
    graph.lint()


def conditioner(
    spec: FeatureSpec,
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    backbone: Backbone | None = None,
    map_shape: tuple[int, ...] | None = None,
) -> nn.Module:
    """The module from stored features to conditioning vectors: standardisation, preceded by the
    fine-tuned stages when ``spec.finetune_from`` is set (then ``backbone`` and ``map_shape`` are needed)."""
    if spec.finetune_from is None:
        return Standardize(mean, std)
    if backbone is None or map_shape is None:
        raise ConfigError("fine-tuning needs the backbone and the shape of the stored maps")
    for m in backbone.module.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    tail = FrozenBatchNorm(backbone_tail(backbone, spec.finetune_from, spec.layer), map_shape)
    return nn.Sequential(tail, Standardize(mean, std))
