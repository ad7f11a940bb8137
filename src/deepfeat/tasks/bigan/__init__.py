"""BiGAN (thesis chapter 5): generator, encoder and joint discriminator trained adversarially, the
baselines of Section 5.3.1, and the evaluation of the learned features (1-NN, reconstructions). The
convolutional encoder is a backbone: ``load_backbone("bigan:RUN/last.pt")``.

    from deepfeat.tasks.bigan import TrainOptions, open_training_data, train, evaluate_run, write_report

    run = train(TrainOptions(method="bigan", arch="mlp", epochs=10), open_training_data("mnist", "mlp"),
                out="runs/bigan")
    write_report(evaluate_run("runs/bigan"), "runs/bigan")
"""

from deepfeat.backbones.bigan import ConvEncoder, fold_batchnorm, load_bigan
from deepfeat.tasks.bigan.data import TrainingData, load_mnist, open_training_data
from deepfeat.tasks.bigan.evaluation import (
    BiganEvaluation,
    evaluate_run,
    nearest_neighbor_accuracy,
    reconstruction_error,
)
from deepfeat.tasks.bigan.models import Networks, build_networks
from deepfeat.tasks.bigan.options import ARCHS, METHODS, TrainOptions
from deepfeat.tasks.bigan.report import write_report
from deepfeat.tasks.bigan.runs import Run, load_run
from deepfeat.tasks.bigan.training import TrainResult, train

__all__ = [
    "ARCHS",
    "METHODS",
    "BiganEvaluation",
    "ConvEncoder",
    "Networks",
    "Run",
    "TrainOptions",
    "TrainResult",
    "TrainingData",
    "build_networks",
    "evaluate_run",
    "fold_batchnorm",
    "load_bigan",
    "load_mnist",
    "load_run",
    "nearest_neighbor_accuracy",
    "open_training_data",
    "reconstruction_error",
    "train",
    "write_report",
]
