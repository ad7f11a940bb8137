"""Transfer evaluation: metrics, protocols and the evaluation of probes on feature sets."""

from deepfeat.evaluation.evaluate import EvaluationResult, evaluate
from deepfeat.evaluation.protocols import DomainAdaptation, FixedSplit, KShot, RandomSplit, parse_protocol

__all__ = [
    "DomainAdaptation",
    "EvaluationResult",
    "FixedSplit",
    "KShot",
    "RandomSplit",
    "evaluate",
    "parse_protocol",
]
