"""Checks of user-given arguments (deepfeat.validation): every refusal a ConfigError naming the
argument and what would be valid."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from deepfeat.errors import ConfigError, DataError, UnknownNameError
from deepfeat.probes import LinearProbe
from deepfeat.validation import (
    as_names,
    check_choice,
    check_device,
    check_float,
    check_int,
    check_n_features,
    close_matches,
    refuse_complex,
    refuse_sparse,
)


@pytest.mark.parametrize("value", [3, 3.0, np.int64(3), np.int32(3), np.uint8(3), np.float32(3.0)])
def test_whole_numbers_of_any_type_are_taken(value):
    out = check_int("n_components", value, minimum=1)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize(
    "value", [2.5, np.float64(2.5), float("nan"), float("inf"), "3", None, True, np.True_, [3]]
)
def test_anything_else_is_refused_as_not_a_whole_number(value):
    # (NaN and infinity used to escape as ValueError / OverflowError from int())
    with pytest.raises(ConfigError, match=r"n_components must be a whole number, got "):
        check_int("n_components", value)


def test_whole_numbers_outside_the_range_name_the_bound():
    with pytest.raises(ConfigError, match="at least 1, got 0"):
        check_int("max_iter", np.int64(0), minimum=1)
    with pytest.raises(ConfigError, match="at most 10, got 11"):
        check_int("k", 11, maximum=10)


def test_numbers_in_open_and_closed_intervals():
    assert check_float("dropout", np.float32(0.5), 0.0, 1.0, high_open=True) == 0.5
    assert check_float("dropout", 0, 0.0, 1.0, high_open=True) == 0.0
    with pytest.raises(ConfigError, match=r"dropout must be in \[0, 1\), got 1"):
        check_float("dropout", 1, 0.0, 1.0, high_open=True)
    with pytest.raises(ConfigError, match=r"tol must be in \(0, inf\], got 0.0"):
        check_float("tol", 0.0, 0.0, low_open=True)
    with pytest.raises(ConfigError, match="must be a finite number"):
        check_float("tol", float("nan"))
    for value in (None, "x", True, np.True_):  # a boolean is not a number here
        with pytest.raises(ConfigError, match=r"tol must be a number, got "):
            check_float("tol", value)


def test_unknown_names_list_the_valid_ones_closest_first():
    valid = ["stage6", "stage7", "pool", "logits"]
    assert check_choice("layer", "pool", valid) == "pool"
    with pytest.raises(UnknownNameError) as err:
        check_choice("layer", "Stage6", valid)
    message = str(err.value)
    assert "'Stage6'" in message
    assert message.index("stage6") < message.index("pool")  # the close match comes first
    assert close_matches("POOL", valid) == ["pool"]
    assert sorted(close_matches("stage", valid)[:2]) == ["stage6", "stage7"]


def test_lists_of_names():
    assert as_names("pool", "layers") == ["pool"]
    assert as_names(["stage6", " pool ", ""], "layers") == ["stage6", "pool"]
    with pytest.raises(ConfigError, match=r"layers takes a list of names, e.g. \['stage6', 'pool'\]"):
        as_names("stage6,pool", "layers")
    with pytest.raises(ConfigError, match="layers names nothing"):
        as_names(["", " "], "layers")
    with pytest.raises(ConfigError, match="must be a name or a list of names"):
        as_names(3, "layers")


def test_a_parameter_grid_of_numpy_integers_reaches_the_estimators():
    """scikit-learn's searches set parameters from arrays (np.arange grids hold NumPy integers)."""
    X, y = load_digits(return_X_y=True)
    X, y = X[y < 3][:150].astype(np.float32), y[y < 3][:150]
    grid = {"max_iter": np.array([20, 40]), "C": np.array([0.1, 1.0])}
    search = GridSearchCV(LinearProbe(loss="logistic"), grid, cv=2).fit(X, y)
    assert search.best_params_["max_iter"] in (20, 40)
    assert search.best_score_ > 0.9


def test_array_inputs_that_are_sparse_complex_or_of_another_width():
    dense = np.eye(3, dtype=np.float32)
    for ok in (dense, torch.from_numpy(dense)):
        refuse_sparse(ok, "X", "dense arrays")
        refuse_complex(ok, "X", "real values")
    for sparse in (scipy.sparse.csr_matrix(dense), torch.from_numpy(dense).to_sparse()):
        with pytest.raises(DataError, match=r"X is a sparse matrix.*: dense arrays \(X.toarray\(\)"):
            refuse_sparse(sparse, "X", "dense arrays")
    for complex_values in (dense + 1j, torch.from_numpy(dense) + 1j):
        with pytest.raises(DataError, match=r"Complex data not supported \(real values\)"):
            refuse_complex(complex_values, "X", "real values")
    check_n_features(3, 3, object())
    with pytest.raises(DataError, match=r"X has 2 features, but object is expecting 3 .*\(the number it"):
        check_n_features(2, 3, object())


def test_devices_are_checked_with_the_argument_named():
    assert check_device(None) == torch.device("cpu")
    assert check_device("cpu") == check_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^device must be 'cpu', 'cuda' or 'cuda:<index>', got 'gpu'$"):
        check_device("gpu")
    with pytest.raises(ConfigError, match=r"^--device must be .* got 'meta'$"):
        check_device("meta", "--device")
    with pytest.raises(ConfigError, match=r"got 3\.5"):
        check_device(3.5)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="'cuda' asked for, but CUDA is not available here; use 'cpu'"):
            check_device("cuda")
    else:
        assert check_device("cuda").type == "cuda"
        with pytest.raises(ConfigError, match="CUDA device"):
            check_device(f"cuda:{torch.cuda.device_count()}")
