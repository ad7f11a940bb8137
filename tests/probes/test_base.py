"""Shared probe checks: C, folds, device, scores of one-column decisions, target preparation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch

from deepfeat.errors import ConfigError, DataError
from deepfeat.probes.base import (
    DEFAULT_CS,
    WORK_PER_THREAD,
    check_C,
    check_cv,
    check_features,
    dense_threads,
    prepare_targets,
    resolve_device,
    thread_budget,
)


def test_default_grid():
    assert tuple(float(c) for c in np.logspace(-4, 2, 7)) == DEFAULT_CS


@pytest.mark.parametrize(
    ("C", "Cs", "match"),
    [
        ("best", DEFAULT_CS, "positive number or 'cv'"),
        ("cv", [], "non-empty list"),
        ("cv", [1.0, np.nan], "non-empty list"),
        ("cv", ["a"], "non-empty list"),
        (0, (), "positive"),
        (np.inf, (), "positive"),
        (None, (), "positive number or 'cv'"),
    ],
)
def test_check_C(C, Cs, match):
    with pytest.raises(ConfigError, match=match):
        check_C(C, Cs)


def test_check_cv_and_features():
    assert check_cv(np.int64(4)) == 4
    for bad in (1, 2.5, True, "3"):
        with pytest.raises(ConfigError, match="cv must be at least 2"):
            check_cv(bad)
    with pytest.raises(DataError, match="non-empty"):
        check_features(np.zeros((0, 3)))
    assert check_features([[1, 2]]).dtype == np.float32


def test_features_that_are_sparse_complex_or_one_dimensional_are_refused_with_the_way_out():
    X = np.eye(4, dtype=np.float32)
    for sparse in (scipy.sparse.csr_matrix(X), torch.from_numpy(X).to_sparse()):
        with pytest.raises(DataError, match=r"sparse input is not supported.*toarray\(\)"):
            check_features(sparse)
    # (np.asarray(..., float32) would drop the imaginary part with only a warning)
    with pytest.raises(DataError, match="X has complex values: Complex data not supported"):
        check_features(X + 1j)
    with pytest.raises(DataError, match=r"1-D one of shape \(4,\); Reshape your data: X.reshape\(-1, 1\)"):
        check_features(X[0])
    assert check_features(torch.from_numpy(X)).dtype == np.float32  # a dense CPU tensor is an array
    with pytest.raises(DataError, match=r"0 feature\(s\) \(shape=\(3, 0\)\) while a minimum of 1"):
        check_features(np.zeros((3, 0)))
    with pytest.raises(DataError, match=r"a single class \(4\); .* not one class"):
        prepare_targets(np.array([4]))  # the label as written, not NumPy's repr np.int64(4)
    with pytest.raises(DataError, match=r"a single class \('ants'\)"):
        prepare_targets(np.array(["ants", "ants"]))


def test_labels_that_are_missing_continuous_or_absent_are_refused():
    with pytest.raises(DataError, match="requires y to be passed, but the target y is None"):
        prepare_targets(None)
    with pytest.raises(DataError, match="one label per sample, got the single value 3"):
        prepare_targets(3)
    with pytest.raises(DataError, match="X has 4 samples but y has 3"):
        prepare_targets([0, 1, 0], n_samples=4)
    with pytest.raises(DataError, match=r"1 missing labels \(NaN or None; first rows: \[2\]\)"):
        prepare_targets(np.array([0.0, 1.0, np.nan, 1.0]))
    with pytest.raises(DataError, match=r"first rows: \[0\]"):
        prepare_targets(np.array([None, "a", "b"], dtype=object))
    # a regression target would otherwise become one class per distinct value
    with pytest.raises(DataError, match=r"continuous numbers \(e.g. 0.25\).*not a regression target"):
        prepare_targets(np.array([0.0, 1.0, 0.25, 1.0]))
    codes, _, classes, _ = prepare_targets(np.array([2.0, 1.0, 2.0]))  # whole numbers as floats: labels
    assert codes.tolist() == [1, 0, 1] and classes.tolist() == [1.0, 2.0]


def test_a_column_of_class_labels_is_refused_with_the_ravel_to_use():
    # an (n, 1) 0/1 column stays a one-label indicator matrix (one-vs-rest analyses fit those)
    codes, _, classes, multilabel = prepare_targets(np.array([[0], [1], [1]]))
    assert multilabel and classes.tolist() == [0] and codes.shape == (3, 1)
    with pytest.raises(DataError, match=r"got shape \(3, 1\); for class labels pass a 1-D y \(y.ravel\(\)\)"):
        prepare_targets(np.array([[0], [1], [2]]))


def test_devices():
    """resolve_device is deepfeat.validation.check_device (tested in tests/test_validation.py)."""
    assert resolve_device(None) == resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="got 'gpu0'"):
        resolve_device("gpu0")


def test_prepare_targets_binary_and_multilabel():
    codes, mask, classes, multilabel = prepare_targets(np.array(["b", "a", "b"]))
    assert codes.tolist() == [1, 0, 1] and list(classes) == ["a", "b"] and mask is None and not multilabel
    Y = np.array([[1, 0], [0, 1], [1, 1]])
    codes, mask, classes, multilabel = prepare_targets(Y, ignore=np.zeros_like(Y, bool))
    assert multilabel and mask.all() and classes.tolist() == [0, 1]


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_thread_budget_holds_small_problems_to_fewer_threads_and_restores(two_threads):
    with thread_budget(WORK_PER_THREAD // 2) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == 2
    with thread_budget(10 * WORK_PER_THREAD) as n:
        assert n == 2 == torch.get_num_threads()


def test_dense_threads_give_a_large_operation_the_threads_the_budget_held_back(two_threads):
    with dense_threads(10**12) as n:  # outside any budget: as it is
        assert n == 2
    with thread_budget(1):
        with dense_threads(10**4) as n:  # too small to pay a second thread
            assert n == 1 == torch.get_num_threads()
        with dense_threads(10**12) as n:
            assert n == 2 == torch.get_num_threads()
            with thread_budget(1):  # a nested budget's outside is this block's 2 threads
                with dense_threads(10**12) as inner:
                    assert inner == 2
                assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("make", ["linear", "kernel"])
def test_dataframe_columns_are_checked_as_scikit_learn_does(make):
    """(Reordered columns were accepted silently: training accuracy fell to chance, no warning.)"""
    pd = pytest.importorskip("pandas")
    from deepfeat.probes import KernelProbe, LinearProbe

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    probe = (LinearProbe(C=1.0) if make == "linear" else KernelProbe(C=1.0)).fit(frame, y)
    assert probe.feature_names_in_.tolist() == ["a", "b", "c", "d"]
    assert probe.score(frame, y) > 0.9
    with pytest.raises(DataError, match="feature names should match those that were passed during fit"):
        probe.predict(frame[["d", "c", "b", "a"]])
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        probe.predict(X)
    assert not hasattr(type(probe)(C=1.0).fit(X, y), "feature_names_in_")


def test_values_beyond_float32_are_named_as_such():
    with pytest.raises(DataError, match="beyond float32's range"):
        check_features(np.full((3, 2), 1e40))


def test_probe_parameters_of_the_wrong_kind_are_refused_by_name():
    from deepfeat.probes import KernelProbe, LinearProbe

    X = np.random.default_rng(0).normal(size=(20, 3))
    y = np.arange(20) % 2
    with pytest.raises(ConfigError, match="normalize must be True or False, got 'yes'"):
        LinearProbe(normalize="yes").fit(X, y)
    with pytest.raises(ConfigError, match="tol must be"):
        KernelProbe(tol=-1.0).fit(X, y)
    with pytest.raises(ConfigError, match=r"C must be"):
        KernelProbe(fallback_C=-1).fit(X, y)  # (scikit-learn's SVC named its own 'C')
