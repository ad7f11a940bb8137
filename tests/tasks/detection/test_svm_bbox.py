"""Class SVMs with hard-negative mining, and the box regressors, on synthetic region features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.svm import LinearSVC

from deepfeat.data.detection import BoxTable, DetectionDataset
from deepfeat.probes import LinearProbe
from deepfeat.tasks.detection.bbox import BBoxOptions, ridge, train_regressors
from deepfeat.tasks.detection.boxes import iou, regression_targets
from deepfeat.tasks.detection.extract import RegionFeatures, RegionSet
from deepfeat.tasks.detection.svm import SVMOptions, class_overlaps, fit_svm, linear_weights, train_svms


def _scene(seed: int = 0, n_images: int = 30, dim: int = 12, per_image: int = 60):
    """Images with one object each (class 0 or 1); region features: class signal for regions that
    overlap an object by IoU >= 0.5, noise otherwise."""
    rng = np.random.default_rng(seed)
    tables, boxes, n_gt, feats = [], [], [], []
    means = rng.normal(0, 3, (2, dim))
    for i in range(n_images):
        c = i % 2
        x, y = rng.uniform(0, 100, 2)
        gt = np.array([[x, y, x + 40, y + 40]], np.float32)
        tables.append(BoxTable(f"i{i}", Path(f"i{i}.jpg"), gt, [c], [False], size=(200, 200)))
        jitter = gt + rng.normal(0, 12, (per_image // 3, 4)).astype(np.float32)
        jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + 5)
        far = rng.uniform(0, 150, (per_image - len(jitter), 2))
        far = np.concatenate([far, far + rng.uniform(10, 50, (len(far), 2))], axis=1).astype(np.float32)
        b = np.concatenate([gt, jitter, far])
        ov = iou(b, gt)[:, 0]
        f = rng.normal(0, 1, (len(b), dim)).astype(np.float32)
        f += (ov[:, None] >= 0.5) * means[c] * ov[:, None]
        boxes.append(b)
        n_gt.append(1)
        feats.append(f)
    ds = DetectionDataset("synthetic", ["a", "b"], tables)
    regions = RegionSet(ds.ids, boxes, n_gt)
    data = np.concatenate(feats)
    rf = RegionFeatures("f", data, np.ones(len(data), bool), regions.offsets, {"test": seed})
    return ds, regions, rf


def test_linear_weights_read_back_through_decision_function():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=80) > 0).astype(int)[:, None]
    probe = LinearProbe(loss="hinge", C=0.5).fit(X, y)
    w, b = linear_weights(probe, 6, chunk=4)
    np.testing.assert_allclose(X @ w + b, probe.decision_function(X)[:, 0], atol=1e-5)


def test_repeating_positives_is_weighting_them():
    # the reference weights positives by 2 (liblinear -w1 2); fit_svm repeats them instead: same objective
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, (20, 5)), rng.normal(-1, 1, (60, 5))
    X = np.concatenate([pos, neg])
    y = np.r_[np.ones(20), -np.ones(60)]
    weighted = LinearSVC(loss="hinge", C=0.05, class_weight={1: 2}, tol=1e-8, max_iter=100000).fit(X, y)
    repeated = LinearSVC(loss="hinge", C=0.05, tol=1e-8, max_iter=100000).fit(
        np.concatenate([pos, X]), np.r_[np.ones(20), y]
    )
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-4)
    w, b = fit_svm(pos.astype(np.float32), neg.astype(np.float32), SVMOptions(C=0.05))
    assert ((pos @ w + b) > 0).mean() > 0.8 and ((neg @ w + b) < 0).mean() > 0.8


def test_first_pass_caches_every_negative_of_the_first_image_and_no_grey_zone():
    ds, regions, rf = _scene()
    result = train_svms(ds, regions, rf, SVMOptions(retrain_limit=50), progress=False)
    for c in range(2):
        ov = class_overlaps(ds.images[0], regions.boxes[0], 2)[:, c]
        first = result.history[ds.classes[c]][0]
        assert first["image"] == 1
        assert first["n_neg"] == int((ov < 0.3).sum())  # IoU < 0.3 only: positives and grey zone left out
        assert first["n_pos"] == sum(1 for t in ds.images if t.labels[0] == c)
    assert result.trained.all() and result.scale == pytest.approx(
        20 / np.linalg.norm(np.asarray(rf.data, np.float64), axis=1).mean(), rel=0.05
    )


def test_mining_reaches_the_svm_trained_on_every_negative():
    ds, regions, rf = _scene(seed=3)
    opts = SVMOptions(retrain_limit=40, C=0.01)
    one = train_svms(ds, regions, rf, opts, progress=False)
    three = train_svms(ds, regions, rf, SVMOptions(retrain_limit=40, C=0.01, epochs=3), progress=False)
    X = np.asarray(rf.data) * one.scale
    for c in range(2):
        pos, neg = [], []
        for i, t in enumerate(ds.images):
            rows = X[rf.offsets[i] : rf.offsets[i + 1]]
            if t.labels[0] == c:
                pos.append(rows[:1])
            neg.append(rows[class_overlaps(t, regions.boxes[i], 2)[:, c] < 0.3])
        pos, neg = np.concatenate(pos), np.concatenate(neg)
        w_full, _ = fit_svm(pos, neg, opts)
        for mined in (one, three):
            w, b = mined.weights[:, c], mined.biases[c]
            # the SVM of the cache points where the SVM of all the data does, and leaves almost no
            # negative of all the data inside its margin
            assert w @ w_full / np.linalg.norm(w) / np.linalg.norm(w_full) > 0.95
            assert ((neg @ w + b) > -1).mean() < 0.01
            assert ((pos @ w + b) > 0).all()


def test_ridge_primal_dual_and_sklearn():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(30, 8)), rng.normal(size=(30, 4))
    ref = Ridge(alpha=3.0, fit_intercept=False).fit(X, Y).coef_.T
    np.testing.assert_allclose(ridge(X, Y, 3.0), ref, atol=1e-8)
    wide = rng.normal(size=(10, 40))
    ref_wide = Ridge(alpha=3.0, fit_intercept=False, solver="cholesky").fit(wide, Y[:10]).coef_.T
    np.testing.assert_allclose(ridge(wide, Y[:10], 3.0), ref_wide, atol=1e-8)  # solved in the dual


def test_whitening_the_targets_changes_nothing_for_ridge():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(50, 6)), rng.normal(size=(50, 4)) @ rng.normal(size=(4, 4))
    mu = Y.mean(0)
    S = (Y - mu).T @ (Y - mu) / len(Y)
    vals, vecs = np.linalg.eigh(S)
    T = vecs @ np.diag(1 / np.sqrt(vals + 1e-3)) @ vecs.T
    T_inv = vecs @ np.diag(np.sqrt(vals + 1e-3)) @ vecs.T
    whitened = X @ ridge(X, (Y - mu) @ T, 1000.0) @ T_inv
    np.testing.assert_allclose(whitened, X @ ridge(X, Y - mu, 1000.0), atol=1e-8)


def test_regressors_learn_the_targets_from_pairs_above_0_6():
    ds, regions, _ = _scene(seed=4)
    rng = np.random.default_rng(5)
    feats, expected = [], np.zeros(2, int)
    for t, b in zip(ds.images, regions.boxes):
        targets = regression_targets(b, np.repeat(t.boxes, len(b), axis=0))
        feats.append(np.concatenate([targets, rng.normal(size=(len(b), 3))], axis=1).astype(np.float32))
        expected[t.labels[0]] += int((iou(b, t.boxes)[:, 0] > 0.6).sum())
    data = np.concatenate(feats)
    rf = RegionFeatures("f", data, np.ones(len(data), bool), regions.offsets, {})
    reg = train_regressors(ds, regions, rf, BBoxOptions(lam=1e-6), scale=1.0, progress=False)
    assert reg.counts.tolist() == expected.tolist()
    i = 0
    predicted = reg.predict(regions.boxes[i], feats[i])[:, ds.images[i].labels[0]]
    close = iou(regions.boxes[i], ds.images[i].boxes)[:, 0] > 0.6
    np.testing.assert_allclose(predicted[close], np.repeat(ds.images[i].boxes, close.sum(), 0), atol=1e-2)


def _interrupting(after: int):
    """fit_svm that raises KeyboardInterrupt (Ctrl-C) on its call number ``after`` + 1."""
    calls = {"n": 0}

    def fit(pos, neg, options):
        calls["n"] += 1
        if calls["n"] > after:
            raise KeyboardInterrupt
        return fit_svm(pos, neg, options)

    return fit


@pytest.mark.parametrize("after", [0, 1, 5])
def test_mining_interrupted_and_resumed_equals_an_uninterrupted_run(after, monkeypatch):
    from deepfeat.tasks.detection import svm

    ds, regions, rf = _scene(seed=5)
    opts = SVMOptions(retrain_limit=40, C=0.01, epochs=2)
    whole = train_svms(ds, regions, rf, opts, progress=False)
    saved = []
    monkeypatch.setattr(svm, "fit_svm", _interrupting(after))
    with pytest.raises(KeyboardInterrupt):
        train_svms(ds, regions, rf, opts, progress=False, on_state=saved.append, save_every=1e9)
    monkeypatch.setattr(svm, "fit_svm", fit_svm)
    state = saved[-1]  # on the interrupt: the state before the interrupted image
    resumed = train_svms(ds, regions, rf, opts, progress=False, resume=state)
    np.testing.assert_array_equal(resumed.weights, whole.weights)
    np.testing.assert_array_equal(resumed.biases, whole.biases)
    assert resumed.history == whole.history
    # states saved along the way resume exactly too
    periodic = []
    train_svms(ds, regions, rf, opts, progress=False, on_state=periodic.append, save_every=0)
    middle = periodic[len(periodic) // 2]
    assert 0 < middle.step < 2 * len(ds)
    again = train_svms(ds, regions, rf, opts, progress=False, resume=middle)
    np.testing.assert_array_equal(again.weights, whole.weights)
    assert again.history == whole.history
    twice = train_svms(ds, regions, rf, opts, progress=False, resume=middle)  # the state is not used up
    np.testing.assert_array_equal(twice.weights, whole.weights)


def test_the_detection_job_resumes_its_svm_stage_after_ctrl_c(tmp_path, monkeypatch):
    from deepfeat.tasks.detection import svm
    from deepfeat.tasks.detection.job import DetectionOptions, _svms

    ds, regions, rf = _scene(seed=6)
    options = DetectionOptions(svm=SVMOptions(retrain_limit=40, C=0.01))
    whole = train_svms(ds, regions, rf, options.svm, progress=False)
    monkeypatch.setattr(svm, "fit_svm", _interrupting(3))
    with pytest.raises(KeyboardInterrupt):
        _svms(ds, regions, rf, options, tmp_path, progress=False)
    assert (tmp_path / "work" / "svms-mining.pt").is_file() and not (tmp_path / "work" / "svms.pt").exists()
    monkeypatch.setattr(svm, "fit_svm", fit_svm)
    resumed = _svms(ds, regions, rf, options, tmp_path, progress=False)
    np.testing.assert_array_equal(resumed.weights, whole.weights)
    assert resumed.history == whole.history
    assert (tmp_path / "work" / "svms.pt").is_file() and not (tmp_path / "work" / "svms-mining.pt").exists()
    # a relabelled box (same coordinates, so the same region features) is not served the saved SVMs
    ds.images[0].labels[0] = 1 - ds.images[0].labels[0]
    relabelled = _svms(ds, regions, rf, options, tmp_path, progress=False)
    assert not np.array_equal(relabelled.weights, whole.weights)
