"""LRCN image description (thesis chapter 4.4): CNN features from any backbone layer (through the
feature store) into LSTMs (Figure 4.4's LRCN_1u / 2u / 2f, or vanilla RNNs), trained with teacher
forcing; captions by beam search or the thesis' sampling; retrieval by caption likelihood; COCO
caption metrics with constant, nearest-neighbour and human baselines."""

from deepfeat.tasks.captioning.data import CaptionData, read_captions, read_split, seeded_split, write_split
from deepfeat.tasks.captioning.evaluate import CaptionEvalJob, CaptionEvaluation, evaluate
from deepfeat.tasks.captioning.features import FeatureSpec
from deepfeat.tasks.captioning.generate import caption_images
from deepfeat.tasks.captioning.model import CaptionModel
from deepfeat.tasks.captioning.report import write_report
from deepfeat.tasks.captioning.train import CaptionTrainJob, CaptionTrainResult, SequenceOptions, train
from deepfeat.tasks.text.decoding import Strategy
from deepfeat.tasks.text.training import TrainingOptions

__all__ = [
    "CaptionData",
    "CaptionEvalJob",
    "CaptionEvaluation",
    "CaptionModel",
    "CaptionTrainJob",
    "CaptionTrainResult",
    "FeatureSpec",
    "SequenceOptions",
    "Strategy",
    "TrainingOptions",
    "caption_images",
    "evaluate",
    "read_captions",
    "read_split",
    "seeded_split",
    "train",
    "write_report",
    "write_split",
]
