"""Training: fine-tuning backbones (:mod:`.finetune`) and end-to-end Fisher-vector layers
(:mod:`.fisher_e2e`)."""

from deepfeat.training.finetune import FineTuner

__all__ = ["FineTuner"]
