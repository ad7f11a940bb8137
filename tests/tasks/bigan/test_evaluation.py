"""1-NN accuracy against scikit-learn, the reconstruction baseline, the evaluation of a run and its
report files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from deepfeat.errors import ConfigError
from deepfeat.tasks.bigan import evaluate_run, load_run, open_training_data, train, write_report
from deepfeat.tasks.bigan.evaluation import (
    nearest_neighbor_predict,
    reconstruction_error,
    split_rows,
)
from tests.tasks.bigan.conftest import tiny


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_nearest_neighbor_matches_scikit_learn(metric):
    rng = np.random.default_rng(0)
    train_x, test_x = rng.normal(size=(300, 12)), rng.normal(size=(80, 12))
    train_y = rng.integers(0, 5, 300)
    ref = KNeighborsClassifier(1, algorithm="brute", metric="euclidean" if metric == "l2" else "cosine")
    expected = ref.fit(train_x, train_y).predict(test_x)
    np.testing.assert_array_equal(
        nearest_neighbor_predict(train_x, train_y, test_x, metric, batch=7), expected
    )


def test_split_rows_is_stratified_or_follows_the_data():
    labels = np.repeat([0, 1, 2], 10)
    train_rows, test_rows = split_rows(labels, None, test_fraction=0.3, seed=1)
    assert sorted(np.bincount(labels[test_rows])) == [3, 3, 3]
    assert not set(train_rows) & set(test_rows) and len(train_rows) + len(test_rows) == 30
    splits = np.array(["train"] * 20 + ["val"] * 10, dtype=object)
    train_rows, test_rows = split_rows(labels, splits)
    assert list(test_rows) == list(range(20, 30))


@pytest.fixture
def mlp_run(mnist_file, tmp_path):
    data = open_training_data(f"mnist:{mnist_file}", "mlp")
    train(tiny(epochs=2), data, tmp_path / "run", progress=False)
    return tmp_path / "run"


def test_reconstruction_baseline_pairs_every_image_with_another(mlp_run, mnist_file):
    run = load_run(mlp_run)
    data = open_training_data(f"mnist:{mnist_file}", "mlp")
    rows = np.arange(40)
    rec = reconstruction_error(run, data, rows, seed=5)
    x = data.batch(rows)
    with torch.no_grad():
        recon = run.networks.generator(2 * torch.sigmoid(run.networks.encoder(x)) - 1)
    own = (recon - x).norm(dim=1).mean()
    assert rec["error"] == pytest.approx(float(own), rel=1e-5)
    # the random pairing: a permutation without fixed points
    all_pairs = torch.cdist(recon, x)
    off_diagonal = (all_pairs.sum() - all_pairs.diagonal().sum()) / (40 * 39)
    assert rec["random_pairing"] == pytest.approx(float(off_diagonal), rel=0.15)
    assert rec["n_images"] == 40


def test_evaluate_run_reports_table_5_1_rows(mlp_run, mnist_file, tmp_path):
    ev = evaluate_run(mlp_run, data=f"mnist:{mnist_file}")
    keys = {(r["key"], r["metric"]) for r in ev.nearest_neighbor}
    assert keys == {(k, m) for k in ("last_hidden", "output", "latent", "pixels") for m in ("l2", "cosine")}
    assert all(r["n_train"] == 256 and r["n_test"] == 64 for r in ev.nearest_neighbor)
    pixels = next(r for r in ev.nearest_neighbor if r["key"] == "pixels" and r["metric"] == "l2")
    assert pixels["accuracy"] == 1.0  # the bars are far apart in pixel space
    assert ev.reconstruction["n_images"] == 64
    assert ev.run["network"] == "encoder" and ev.run["epochs"] == 2
    paths = write_report(ev, tmp_path / "report")
    doc = json.loads(paths["results"].read_text())
    assert doc["schema"] == 1 and doc["kind"] == "bigan" and doc["plots"] == {"losses": "losses.png"}
    assert len(doc["result"]["nearest_neighbor"]) == 8
    md = paths["report"].read_text()
    assert "1-nearest-neighbour accuracy" in md and "E: last hidden layer" in md
    assert "![generator samples](samples/epoch-2-samples.png)" in md
    assert (tmp_path / "report" / "losses.png").is_file()


def test_discriminator_features_of_a_latent_regressor_run(mnist_file, tmp_path):
    data = open_training_data(f"mnist:{mnist_file}", "mlp")
    train(tiny(method="lr"), data, tmp_path, progress=False)
    ev = evaluate_run(tmp_path, network="discriminator", pixels=False, metrics=("l2",))
    assert [r["features"] for r in ev.nearest_neighbor] == ["D: last hidden layer"]
    with pytest.raises(ConfigError, match="network"):
        evaluate_run(tmp_path, network="generator")


def test_conv_run_is_evaluated_on_its_folder(image_tree, tmp_path):
    data = open_training_data(image_tree, "conv", 32)
    train(tiny(arch="conv", batch_size=4), data, tmp_path, progress=False)
    ev = evaluate_run(tmp_path, metrics=("cosine",), pixels=False)
    assert [r["features"] for r in ev.nearest_neighbor] == [
        "E: conv5",
        "E: output (logits)",
        "E: E(x) = 2 sigmoid - 1",
    ]
    assert ev.nearest_neighbor[0]["n_train"] + ev.nearest_neighbor[0]["n_test"] == 12
    assert ev.reconstruction["pixel_range"] == [-1, 1]
