"""Transfer evaluation: protocols, recipes, the evaluation job, its result and report."""

from deepfeat.evaluation.domain_adaptation import OFFICE31_SOURCE_COUNTS, DomainAdaptation
from deepfeat.evaluation.evaluate import evaluate
from deepfeat.evaluation.job import EvaluationJob, ExtractionOptions, run
from deepfeat.evaluation.protocols import (
    FixedSplit,
    KShot,
    Protocol,
    RandomSplit,
    Split,
)
from deepfeat.evaluation.recipes import (
    ActivationsRecipe,
    FisherRecipe,
    GradientRecipe,
    InteractiveRecipe,
    Recipe,
)
from deepfeat.evaluation.report import write_report
from deepfeat.evaluation.result import EvaluationResult

__all__ = [
    "OFFICE31_SOURCE_COUNTS",
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
    "Protocol",
    "RandomSplit",
    "Recipe",
    "Split",
    "evaluate",
    "run",
    "write_report",
]
