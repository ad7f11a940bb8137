"""LRCN activity recognition on video (thesis chapter 4, Section 4.3): per-frame CNN features of RGB
frames or optical-flow images, the single-frame baseline and LRCN (an LSTM over the frames), late
fusion of RGB and flow, evaluation per video, and a moving-digit dataset to try it on.

    from deepfeat.tasks import video

    video.make_moving_digits("digits-videos/")                       # 12 classes of moving MNIST digits
    rgb = video.train(video.TrainJob("digits-videos/", video.TrainOptions(model="lrcn", stream="rgb"),
                                     out="models/lrcn-rgb"))
    result = video.evaluate(video.EvaluateJob("digits-videos/", ["models/lrcn-rgb", "models/lrcn-flow"]))
    video.write_report(result, "eval/")
"""

from deepfeat.tasks.video.evaluation import EvaluateJob, VideoEvaluation, evaluate, score
from deepfeat.tasks.video.features import FrameFeatures, GridPooled, StreamFeatures, stream_features
from deepfeat.tasks.video.models import LRCN, SingleFrame, TopStages, VideoClassifier, build_net
from deepfeat.tasks.video.moving_digits import MOTIONS, MovingDigits, make_moving_digits
from deepfeat.tasks.video.predict import Prediction, predict_videos
from deepfeat.tasks.video.report import write_report
from deepfeat.tasks.video.training import (
    TrainJob,
    TrainOptions,
    TrainResult,
    load_classifier,
    save_classifier,
    train,
)

__all__ = [
    "LRCN",
    "MOTIONS",
    "EvaluateJob",
    "FrameFeatures",
    "GridPooled",
    "MovingDigits",
    "Prediction",
    "SingleFrame",
    "StreamFeatures",
    "TopStages",
    "TrainJob",
    "TrainOptions",
    "TrainResult",
    "VideoClassifier",
    "VideoEvaluation",
    "build_net",
    "evaluate",
    "load_classifier",
    "make_moving_digits",
    "predict_videos",
    "save_classifier",
    "score",
    "stream_features",
    "train",
    "write_report",
]
