"""One short BiGAN epoch on the real MNIST digits (skipped when ../shared/datasets is absent; set
DEEPFEAT_DATASETS to point elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from deepfeat.tasks.bigan import TrainOptions, load_mnist, load_run, open_training_data, train
from deepfeat.tasks.bigan.data import TrainingData
from deepfeat.tasks.bigan.evaluation import extract, nearest_neighbor_accuracy
from tests.conftest import SHARED_DATASETS

pytestmark = pytest.mark.realdata
ROOT = Path(os.environ.get("DEEPFEAT_DATASETS", SHARED_DATASETS))
MNIST = ROOT / "mnist" / "mnist.npz"


@pytest.mark.skipif(not MNIST.is_file(), reason="../shared/datasets/mnist absent")
def test_one_short_mnist_epoch_learns_usable_features(tmp_path):
    data = open_training_data(f"mnist:{MNIST}", "mlp")
    assert len(data) == 60_000 and data.in_features == 784
    opts = TrainOptions(method="bigan", arch="mlp", epochs=1, max_images=3200, bn_batches=5)
    result = train(opts, data, tmp_path, progress=False)  # the thesis' networks, 25 steps of 128
    losses = result.history[0]["losses"]
    assert set(losses) == {"D", "G", "E"} and all(np.isfinite(v) for v in losses.values())
    assert (tmp_path / "samples" / "epoch-1-samples.png").is_file()
    run = load_run(tmp_path)
    mnist = load_mnist(f"mnist:{MNIST}")
    reference = TrainingData("train", "vectors", mnist.x_train[:3000], mnist.y_train[:3000])
    queries = TrainingData("test", "vectors", mnist.x_test[:1000], mnist.y_test[:1000])
    ref, test = extract(run, reference), extract(run, queries)
    acc = nearest_neighbor_accuracy(ref["last_hidden"], reference.labels, test["last_hidden"], queries.labels)
    assert acc > 0.85  # 1-NN on E's last hidden layer, 3,000 references (raw pixels: 0.89)
