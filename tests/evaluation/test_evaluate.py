from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from deepfeat.errors import ConfigError, DataError
from deepfeat.evaluation.domain_adaptation import DomainAdaptation
from deepfeat.evaluation.evaluate import evaluate
from deepfeat.evaluation.protocols import KShot, RandomSplit
from deepfeat.evaluation.records import content_hash
from deepfeat.features.featureset import FeatureSet
from deepfeat.probes.linear import LinearProbe


def feature_set(X, y, key="f", difficult=None, classes=None) -> FeatureSet:
    n = len(X)
    n_classes = y.shape[1] if y.ndim == 2 else int(y.max()) + 1
    return FeatureSet(
        key=key,
        features=np.asarray(X, dtype=np.float32),
        ids=[f"i{i}" for i in range(n)],
        targets=y,
        classes=classes or [f"c{i}" for i in range(n_classes)],
        rows=np.arange(n),
        provenance={"key": key, "n": n},
        difficult=difficult,
    )


def blobs(n_per_class=40, n_classes=4, d=20, spread=0.3, seed=0, shift=0.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d)) * 3
    X = np.concatenate([c + shift + spread * rng.normal(size=(n_per_class, d)) for c in centres])
    y = np.repeat(np.arange(n_classes), n_per_class)
    return X, y


FAST = {"svm": LinearProbe(loss="squared_hinge", Cs=(0.01, 1.0)), "logreg": LinearProbe(Cs=(0.01, 1.0))}


def test_separable_reaches_100_and_shuffled_reaches_chance():
    X, y = blobs()
    shuffled = np.random.default_rng(1).permutation(y)
    res = evaluate(
        {"good": feature_set(X, y, "good"), "noise": feature_set(X, shuffled, "noise")},
        KShot(k=10, n_splits=3),
        FAST,
        progress=False,
    )
    rows = {(r["features"], r["probe"]): r for r in res.summary()}
    for probe in FAST:
        assert rows[("good", probe)]["mean_class_accuracy"]["mean"] > 0.99
        assert abs(rows[("noise", probe)]["mean_class_accuracy"]["mean"] - 0.25) < 0.12
        assert rows[("good", probe)]["n_splits"] == 3
    assert len(res.records) == 2 * 2 * 3
    assert res.best()["features"] == "good"


def test_matches_scikit_learn_on_the_same_split():
    X, y = blobs(n_per_class=60, spread=2.5, seed=3)
    res = evaluate(
        {"f": feature_set(X, y)}, KShot(k=20, n_splits=2), {"lr": LinearProbe(C=0.1)}, progress=False
    )
    for rec, split in zip(res.records, res.splits):
        tr, te = split.train["data"], split.test["data"]
        sk = LogisticRegression(C=0.1, max_iter=5000, tol=1e-8).fit(X[tr], y[tr])
        assert abs(rec["metrics"]["accuracy"] - sk.score(X[te], y[te])) <= 0.005
        assert rec["C"] == 0.1 and rec["n_train"] == 80


def test_checkpoint_resumes_without_refitting(tmp_path, monkeypatch):
    X, y = blobs()
    sets = {"f": feature_set(X, y)}
    ckpt = tmp_path / "ckpt.jsonl"
    first = evaluate(sets, KShot(k=5, n_splits=2), FAST, checkpoint=ckpt, progress=False)
    assert len(ckpt.read_text().splitlines()) == 4
    with open(ckpt, "a") as fh:
        fh.write('{"key": "torn')  # an interrupted write

    def no_fit(*args, **kwargs):
        raise AssertionError("refitted a finished record")

    monkeypatch.setattr(LinearProbe, "fit", no_fit)
    again = evaluate(sets, KShot(k=5, n_splits=2), FAST, checkpoint=ckpt, progress=False)
    assert [r["metrics"] for r in again.records] == [r["metrics"] for r in first.records]


def test_a_checkpoint_does_not_serve_records_of_other_feature_values(tmp_path):
    # same name, key, shape and provenance, other values (and other labels): refitted, not read back
    X, y = blobs()
    ckpt = tmp_path / "ckpt.jsonl"
    real = evaluate({"f": feature_set(X, y)}, KShot(k=5, n_splits=2), FAST, checkpoint=ckpt, progress=False)
    noise = np.random.default_rng(1).normal(size=X.shape)
    again = evaluate(
        {"f": feature_set(noise, y)}, KShot(k=5, n_splits=2), FAST, checkpoint=ckpt, progress=False
    )
    fresh = evaluate({"f": feature_set(noise, y)}, KShot(k=5, n_splits=2), FAST, progress=False)
    assert [r["metrics"] for r in again.records] == [r["metrics"] for r in fresh.records]
    assert [r["metrics"] for r in again.records] != [r["metrics"] for r in real.records]
    # object arrays (the CLI's splits) hash by value: their bytes are addresses, other in every process
    a, b = feature_set(X, y), feature_set(X, y)
    a.splits = np.array(["".join(["tr", "ain"]) for _ in y], dtype=object)
    b.splits = np.array(["".join(["tra", "in"]) for _ in y], dtype=object)
    assert a.splits[0] is not b.splits[0] and content_hash(a) == content_hash(b)
    relabelled = evaluate(
        {"f": feature_set(X, y[::-1].copy())}, KShot(k=5, n_splits=2), FAST, checkpoint=ckpt, progress=False
    )
    assert len(ckpt.read_text().splitlines()) == 12 and len(relabelled.records) == 4


def test_estimators_without_decision_function_are_scored_by_predict_proba():
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.ensemble import RandomForestClassifier

    X, y = blobs()
    forest = RandomForestClassifier(n_estimators=10, random_state=0)
    res = evaluate({"f": feature_set(X, y)}, KShot(k=5, n_splits=1), {"rf": forest}, progress=False)
    record = res.records[0]
    assert 0.5 < record["metrics"]["accuracy"] <= 1.0

    class OnlyPredict(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            return self

        def predict(self, X):
            return np.zeros(len(X), dtype=int)

    with pytest.raises(ConfigError, match="neither decision_function nor predict_proba"):
        evaluate({"f": feature_set(X, y)}, KShot(k=5, n_splits=1), {"p": OnlyPredict()}, progress=False)


def test_feature_sets_with_the_same_provenance_keep_their_own_records(tmp_path):
    """Hand-built feature sets may share a provenance: each still gets its own fits and summary row,
    in one run and when a checkpoint is resumed."""
    X, y = blobs()
    noise = np.random.default_rng(5).normal(size=X.shape)
    sets = {
        "good": FeatureSet(
            "same",
            X.astype(np.float32),
            [f"i{i}" for i in range(len(y))],
            y,
            ["a", "b", "c", "d"],
            np.arange(len(y)),
            {},
        ),
        "noise": FeatureSet(
            "same",
            noise.astype(np.float32),
            [f"i{i}" for i in range(len(y))],
            y,
            ["a", "b", "c", "d"],
            np.arange(len(y)),
            {},
        ),
    }
    ckpt = tmp_path / "ckpt.jsonl"
    for _ in range(2):  # the second run reads every record from the checkpoint
        res = evaluate(sets, KShot(k=10, n_splits=2), FAST, checkpoint=ckpt, progress=False)
        rows = {(r["features"], r["probe"]): r["mean_class_accuracy"]["mean"] for r in res.summary()}
        assert len(res.records) == 2 * 2 * 2 and len(rows) == 4
        assert all(rows[("good", p)] > 0.99 and rows[("noise", p)] < 0.6 for p in FAST)
    assert len(ckpt.read_text().splitlines()) == 8


def test_nan_features_name_the_feature_set():
    X, y = blobs()
    X[3, 2] = np.nan
    with pytest.raises(DataError, match=r"features 'layer5' hold 1 NaN or infinite values in 1 images"):
        evaluate({"layer5": feature_set(X, y, "layer5")}, KShot(k=5, n_splits=1), FAST, progress=False)


def test_feature_sets_of_different_images_are_refused():
    X, y = blobs()
    a, b = feature_set(X, y), feature_set(X[:-1], y[:-1])
    with pytest.raises(DataError, match="cover different images"):
        evaluate({"a": a, "b": b}, KShot(k=5, n_splits=1), FAST, progress=False)
    with pytest.raises(ConfigError, match="no probe"):
        evaluate({"a": a}, KShot(k=5, n_splits=1), {}, progress=False)


def test_probes_by_name_and_one_feature_set():
    """(A list of names failed with "'list' object has no attribute 'items'".)"""
    X, y = blobs(n_per_class=12, n_classes=3)
    fs = feature_set(X, y, "pool")
    res = evaluate(fs, KShot(k=4, n_splits=1), ["svm", "logreg"], progress=False)
    assert {(r["features"], r["probe"]) for r in res.summary()} == {("pool", "svm"), ("pool", "logreg")}
    assert res.probes["logreg"]["loss"] == "logistic"
    assert evaluate({"f": fs}, KShot(k=4, n_splits=1), "svm", progress=False).probes.keys() == {"svm"}
    with pytest.raises(ConfigError, match=r"unknown probe 'svn'.*svm"):
        evaluate(fs, KShot(k=4, n_splits=1), ["svn"], progress=False)
    with pytest.raises(ConfigError, match="probes must be estimators by name"):
        evaluate(fs, KShot(k=4, n_splits=1), [LinearProbe()], progress=False)
    with pytest.raises(ConfigError, match="features must be feature sets by name"):
        evaluate([fs], KShot(k=4, n_splits=1), ["svm"], progress=False)


def test_domain_adaptation_s_t_st():
    Xs, ys = blobs(n_per_class=30, seed=5)
    Xt, yt = blobs(n_per_class=12, seed=5, shift=1.5, spread=0.8)
    res = evaluate(
        {"f": feature_set(Xs, ys)},
        DomainAdaptation(k_source=20, k_target=3, n_splits=2),
        {"svm": FAST["svm"]},
        target={"f": feature_set(Xt, yt)},
        progress=False,
    )
    modes = {r["mode"]: r for r in res.summary()}
    assert set(modes) == {"S", "T", "ST"}
    n_train = {r["mode"]: r["n_train"] for r in res.records}
    assert n_train == {"S": 80, "T": 12, "ST": 92}
    assert all(r["n_test"] == 36 for r in res.records)
    assert modes["ST"]["mean_class_accuracy"]["mean"] > 0.9


def test_multilabel_map_with_difficult():
    rng = np.random.default_rng(0)
    Y = rng.integers(0, 2, size=(120, 3))
    X = Y * 2.0 + 0.3 * rng.normal(size=(120, 3))
    X = np.hstack([X, rng.normal(size=(120, 5))])
    difficult = np.zeros_like(Y, dtype=bool)
    difficult[:10, 0] = True
    res = evaluate(
        {"f": feature_set(X, Y, difficult=difficult)},
        RandomSplit(0.3, n_splits=2),
        {"lr": LinearProbe(loss="logistic", multi_class="ovr", Cs=(0.1, 1.0))},
        progress=False,
    )
    assert res.multilabel and res.primary_metric == "map"
    row = res.summary()[0]
    assert row["map"]["mean"] > 0.95 and row["map_voc07"]["mean"] > 0.9
    assert len(row["per_class"]) == 3
    json.dumps(res.to_dict(), default=str)
    # a label without training positives is named (the probe could only give its index)
    Y[:, 1] = 0
    Y[-5:, 1] = 1
    fs = feature_set(X, Y, classes=["car", "bus", "cat"])
    fs.splits = np.array(["train"] * 100 + ["test"] * 20, dtype=object)
    from deepfeat.evaluation.protocols import FixedSplit

    with pytest.raises(DataError, match="split 'fixed': labels 'bus' are positive for none"):
        evaluate(
            {"f": fs}, FixedSplit(), {"lr": LinearProbe(multi_class="ovr", Cs=(0.1, 1.0))}, progress=False
        )
    # positives that are all 'difficult' count as none (the probe's message named an index)
    fs.targets, fs.difficult = Y.copy(), np.zeros_like(Y, dtype=bool)
    fs.targets[:100, 1] = Y[:100, 0]
    fs.difficult[:100, 1] = fs.targets[:100, 1] == 1
    with pytest.raises(DataError, match=r"labels 'bus' .* not counting 'difficult' ones"):
        evaluate(
            {"f": fs}, FixedSplit(), {"lr": LinearProbe(multi_class="ovr", Cs=(0.1, 1.0))}, progress=False
        )


def test_multilabel_scikit_learn_estimators_train_without_an_ignore_mask():
    # their fit takes no ignore= (a raw TypeError); difficult entries are then trained as labelled
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    Y = rng.integers(0, 2, size=(120, 3))
    X = np.hstack([Y * 2.0 + 0.3 * rng.normal(size=(120, 3)), rng.normal(size=(120, 5))])
    difficult = np.zeros_like(Y, dtype=bool)
    difficult[:10, 0] = True
    res = evaluate(
        {"f": feature_set(X, Y, difficult=difficult)},
        RandomSplit(0.3, n_splits=1),
        {"knn": KNeighborsClassifier()},
        progress=False,
    )
    record = res.records[0]
    assert record["metrics"]["map"] > 0.9 and record["difficult_in_training"].startswith(
        "trained as labelled"
    )
    # the hinge probe (liblinear) takes no mask either: it was refused after the extraction
    hinge = LinearProbe(loss="hinge", multi_class="ovr", Cs=(0.1, 1.0))
    res = evaluate(
        {"f": feature_set(X, Y, difficult=difficult)},
        RandomSplit(0.3, n_splits=1),
        {"h": hinge},
        progress=False,
    )
    assert res.records[0]["difficult_in_training"].startswith("trained as labelled")


def test_class_weights_by_class_name_reach_the_probe_as_codes():
    """(A dict keyed by the feature set's class names was refused: 'not among the classes 0, 1, 2'.)"""
    X, y = blobs(n_per_class=30, n_classes=3, spread=8.0, seed=5)
    fs = feature_set(X, y, classes=["ant", "bee", "wasp"])
    by_name = evaluate(
        fs, KShot(k=10, n_splits=1), {"lr": LinearProbe(C=0.1, class_weight={"wasp": 50.0})}, progress=False
    )
    by_code = evaluate(
        fs, KShot(k=10, n_splits=1), {"lr": LinearProbe(C=0.1, class_weight={2: 50.0})}, progress=False
    )
    plain = evaluate(fs, KShot(k=10, n_splits=1), {"lr": LinearProbe(C=0.1)}, progress=False)
    assert by_name.records[0]["metrics"] == by_code.records[0]["metrics"]
    assert by_name.records[0]["per_class"] != plain.records[0]["per_class"]


def test_probes_as_a_comma_string_get_the_list_to_pass():
    X, y = blobs()
    with pytest.raises(ConfigError, match=r"probes takes a list of names, e.g. \['svm', 'logreg'\]"):
        evaluate({"f": feature_set(X, y)}, KShot(k=5, n_splits=1), "svm,logreg", progress=False)
