"""deepfeat: transferable image representations from pretrained convnets, and how well they transfer.

Everything below is imported on first use (``deepfeat.LinearProbe`` loads the probes, not torch's vision
models), so ``import deepfeat`` and the command line start fast.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from deepfeat._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from deepfeat._runtime import tune_allocator
    from deepfeat.backbones import Backbone, LayerCatalog, LayerInfo, list_backbones, load_backbone
    from deepfeat.data import (
        Preprocess,
        as_dataset,
        dataset_from_paths,
        digits_dataset,
        folder_dataset,
        hf_dataset,
        manifest_dataset,
        open_dataset,
        tar_dataset,
        torch_dataset,
    )
    from deepfeat.errors import ConfigError, DataError, DeepfeatError
    from deepfeat.evaluation import (
        ActivationsRecipe,
        DomainAdaptation,
        EvaluationJob,
        EvaluationResult,
        ExtractionOptions,
        FisherRecipe,
        FixedSplit,
        GradientRecipe,
        InteractiveRecipe,
        KShot,
        RandomSplit,
        evaluate,
        run,
        write_report,
    )
    from deepfeat.features import (
        Activeness,
        FeatureExtractor,
        FeatureKind,
        FeatureSet,
        FeatureStore,
        FisherEncoder,
        GradientFeatures,
        LayerActivations,
        extract,
    )
    from deepfeat.kernels import FactoredLayout, factored_kernel
    from deepfeat.probes import KernelProbe, LinearProbe, probe_for

#: public name -> the module that defines it, imported when the name is first read
_EXPORTS: dict[str, tuple[str, ...]] = {
    "deepfeat._runtime": ("tune_allocator",),
    "deepfeat.backbones": ("Backbone", "LayerCatalog", "LayerInfo", "list_backbones", "load_backbone"),
    "deepfeat.data": (
        "Preprocess",
        "as_dataset",
        "dataset_from_paths",
        "digits_dataset",
        "folder_dataset",
        "hf_dataset",
        "manifest_dataset",
        "open_dataset",
        "tar_dataset",
        "torch_dataset",
    ),
    "deepfeat.errors": ("ConfigError", "DataError", "DeepfeatError"),
    "deepfeat.evaluation": (
        "ActivationsRecipe",
        "DomainAdaptation",
        "EvaluationJob",
        "EvaluationResult",
        "ExtractionOptions",
        "FisherRecipe",
        "FixedSplit",
        "GradientRecipe",
        "InteractiveRecipe",
        "KShot",
        "RandomSplit",
        "evaluate",
        "run",
        "write_report",
    ),
    "deepfeat.features": (
        "Activeness",
        "FeatureExtractor",
        "FeatureKind",
        "FeatureSet",
        "FeatureStore",
        "FisherEncoder",
        "GradientFeatures",
        "LayerActivations",
        "extract",
    ),
    "deepfeat.kernels": ("FactoredLayout", "factored_kernel"),
    "deepfeat.probes": ("KernelProbe", "LinearProbe", "probe_for"),
}
_ORIGIN = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _ORIGIN.get(name)
    if module is None:
        if not name.startswith("_") and importlib.util.find_spec(f"deepfeat.{name}") is not None:
            return importlib.import_module(f"deepfeat.{name}")  # a subpackage: deepfeat.features...
        raise AttributeError(f"module 'deepfeat' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "ActivationsRecipe",
    "Activeness",
    "Backbone",
    "ConfigError",
    "DataError",
    "DeepfeatError",
    "DomainAdaptation",
    "EvaluationJob",
    "EvaluationResult",
    "ExtractionOptions",
    "FactoredLayout",
    "FeatureExtractor",
    "FeatureKind",
    "FeatureSet",
    "FeatureStore",
    "FisherEncoder",
    "FisherRecipe",
    "FixedSplit",
    "GradientFeatures",
    "GradientRecipe",
    "InteractiveRecipe",
    "KShot",
    "KernelProbe",
    "LayerActivations",
    "LayerCatalog",
    "LayerInfo",
    "LinearProbe",
    "Preprocess",
    "RandomSplit",
    "__version__",
    "as_dataset",
    "dataset_from_paths",
    "digits_dataset",
    "evaluate",
    "extract",
    "factored_kernel",
    "folder_dataset",
    "hf_dataset",
    "list_backbones",
    "load_backbone",
    "manifest_dataset",
    "open_dataset",
    "probe_for",
    "run",
    "tar_dataset",
    "torch_dataset",
    "tune_allocator",
    "write_report",
]
