"""R-CNN object detection (Donahue's thesis, chapter 3) on deepfeat's backbones, capture, store and
probes: selective-search proposals, warped (or shared-map) region features, class SVMs with hard
negatives, bounding-box regression, greedy NMS, VOC / COCO average precision.

    from deepfeat.data.detection import open_detection
    from deepfeat.tasks import detection as det

    trained = det.train(open_detection(voc_root, split="trainval"), det.DetectionOptions(), out="model/")
    result = det.evaluate("model/", open_detection(voc_root, split="test"))
    det.write_report(result, "eval/")
"""

from deepfeat.tasks.detection import report
from deepfeat.tasks.detection.bbox import BBoxOptions, BoxRegressor, train_regressors
from deepfeat.tasks.detection.evaluate import DetectionResult, evaluate, predict
from deepfeat.tasks.detection.extract import RegionSet, extract_regions
from deepfeat.tasks.detection.finetune import FinetuneOptions, finetune_detector
from deepfeat.tasks.detection.job import DetectionOptions, TrainResult, train
from deepfeat.tasks.detection.model import DetectorModel, TestOptions
from deepfeat.tasks.detection.proposals import ProposalOptions, compute_proposals, proposal_recall
from deepfeat.tasks.detection.regions import RegionEncoder, RegionOptions, warp_regions
from deepfeat.tasks.detection.report import write_predictions, write_report
from deepfeat.tasks.detection.svm import SVMOptions, train_svms
from deepfeat.tasks.detection.voc_eval import Detections, coco_ap, voc_ap

__all__ = [
    "BBoxOptions",
    "BoxRegressor",
    "DetectionOptions",
    "DetectionResult",
    "Detections",
    "DetectorModel",
    "FinetuneOptions",
    "ProposalOptions",
    "RegionEncoder",
    "RegionOptions",
    "RegionSet",
    "SVMOptions",
    "TestOptions",
    "TrainResult",
    "coco_ap",
    "compute_proposals",
    "evaluate",
    "extract_regions",
    "finetune_detector",
    "predict",
    "proposal_recall",
    "report",
    "train",
    "train_regressors",
    "train_svms",
    "voc_ap",
    "warp_regions",
    "write_predictions",
    "write_report",
]
