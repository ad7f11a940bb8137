"""LRCN video description (thesis Section 4.5): sentences from a video's predicted semantic slots,
with the three architectures of Figure 4.5 ((a) encoder-decoder over the max labels, (b) decoder
with the max labels at every step, (c) decoder with the slot probabilities), on the shared text
pieces of :mod:`deepfeat.tasks.text`; slots predicted by the video task's clip classifiers or read
from a file; a described moving-digit set to try it on.

    from deepfeat.tasks import video, video_description as vd

    vd.make_described_digits("described/")
    for slot in vd.SLOTS:   # one clip classifier per slot, trained on the 'slots' clips
        video.train(video.TrainJob(f"described/slot_{slot}.csv", out=f"slot-models/{slot}"))
    preds = vd.predict_slots(...)          # or vd.read_slots("crf_outputs.json")
    model = vd.train(vd.DescribeTrainJob("described/", vd.DescribeOptions(arch="c"), slots=preds)).model
    result = vd.evaluate(vd.DescribeEvalJob("described/", preds, [model]))
"""

from deepfeat.tasks.video_description.data import DescriptionSet, read_descriptions
from deepfeat.tasks.video_description.digits import SLOTS, DescribedDigits, make_described_digits
from deepfeat.tasks.video_description.evaluation import DescribeEvalJob, DescribeEvaluation, evaluate
from deepfeat.tasks.video_description.models import ARCHS, DescriptionModel, InitialStateDecoder, SlotEncoder
from deepfeat.tasks.video_description.report import write_report
from deepfeat.tasks.video_description.slots import SlotPredictions, predict_slots, read_slots, slots_from_dict
from deepfeat.tasks.video_description.training import (
    DescribeOptions,
    DescribeTrainJob,
    DescribeTrainResult,
    train,
)

__all__ = [
    "ARCHS",
    "SLOTS",
    "DescribeEvalJob",
    "DescribeEvaluation",
    "DescribeOptions",
    "DescribeTrainJob",
    "DescribeTrainResult",
    "DescribedDigits",
    "DescriptionModel",
    "DescriptionSet",
    "InitialStateDecoder",
    "SlotEncoder",
    "SlotPredictions",
    "evaluate",
    "make_described_digits",
    "predict_slots",
    "read_descriptions",
    "read_slots",
    "slots_from_dict",
    "train",
    "write_report",
]
