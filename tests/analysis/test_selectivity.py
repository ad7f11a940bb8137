"""Grandmother-cell precision curves and per-filter AP against hand cases, loops and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from deepfeat.analysis import filter_average_precision, plot_precision_curves, precision_curves, top_filters
from deepfeat.errors import ConfigError, DataError
from deepfeat.metrics import average_precision

PNG = b"\x89PNG\r\n\x1a\n"


def one_class_filters(k: int = 3, per: int = 8, seed: int = 0):
    """Filter c fires (1..2) only on images of class c; filter k fires on everything."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), per)
    x = np.zeros((len(y), k + 1))
    for c in range(k):
        x[y == c, c] = rng.uniform(1, 2, per)
    x[:, k] = rng.uniform(0, 1, len(y))
    return x, y


def test_filter_firing_for_one_class_has_precision_one():
    x, y = one_class_filters()
    res = precision_curves(x, y, thresholds=11)
    for c in range(3):
        np.testing.assert_array_equal(res.precision[c, 1:, c], 1.0)  # above the lowest threshold
        assert res.precision[c, 0, c] == pytest.approx(1 / 3)  # lowest threshold: the class prior
        np.testing.assert_array_equal(res.precision[c, 1:, [k for k in range(3) if k != c]], 0.0)
        assert res.area[c, c] == pytest.approx(1 - (2 / 3) * 0.1 / 2)
    np.testing.assert_array_equal(res.top_filters(1)[:, 0], [0, 1, 2])
    assert np.all(res.n_above[:, 0] == len(y))
    assert np.all(np.diff(res.n_above, axis=1) <= 0)


def test_filter_firing_uniformly_has_the_class_prior_as_precision():
    k, m = 4, 6
    x = np.tile(np.arange(1.0, m + 1), k)[:, None]
    y = np.repeat(np.arange(k), m)
    res = precision_curves(x, y, thresholds=7)
    np.testing.assert_allclose(res.precision[0], 1 / k)
    np.testing.assert_allclose(res.area[0], 1 / k)


def loop_precision(maps, indicator, levels, spatial):
    """Plain loops: thresholds on a linear grid, precision per class."""
    _, f_count, s = maps.shape
    out = np.zeros((f_count, len(levels), indicator.shape[1]))
    for f in range(f_count):
        if spatial == "max":
            v, ind = maps[:, f].max(axis=1), indicator
        elif spatial == "mean":
            v, ind = maps[:, f].mean(axis=1), indicator
        else:
            v, ind = maps[:, f].reshape(-1), np.repeat(indicator, s, axis=0)
        for j, u in enumerate(levels):
            keep = v >= v.min() + u * (v.max() - v.min())
            for c in range(indicator.shape[1]):
                out[f, j, c] = ind[keep, c].sum() / keep.sum()
    return out


@pytest.mark.parametrize("spatial", ["max", "mean", "positions"])
@pytest.mark.parametrize("multilabel", [False, True])
def test_vectorised_equals_loop(spatial, multilabel):
    rng = np.random.default_rng(1)
    maps = np.round(rng.random((25, 5, 2, 3)), 1)
    if multilabel:
        labels = (rng.random((25, 3)) < 0.4).astype(int)
        labels[0] = 1
        indicator = labels.astype(bool)
    else:
        labels = rng.integers(0, 3, 25)
        labels[:3] = [0, 1, 2]
        indicator = labels[:, None] == np.arange(3)
    levels = np.linspace(0, 1, 9)
    res = precision_curves(maps, labels, spatial=spatial, thresholds=9, chunk_size=2)
    np.testing.assert_allclose(
        res.precision, loop_precision(maps.reshape(25, 5, 6), indicator, levels, spatial)
    )


@pytest.mark.parametrize("multilabel", [False, True])
def test_filter_ap_matches_sklearn_and_voc(multilabel):
    rng = np.random.default_rng(2)
    n = 60
    maps = np.maximum(np.round(rng.normal(size=(n, 7, 2, 2)), 1), 0)  # ties in the spatial max
    if multilabel:
        y = (rng.random((n, 4)) < 0.3).astype(int)
        y[0] = 1
        ind = y.astype(bool)
    else:
        y = rng.integers(0, 4, n)
        ind = y[:, None] == np.arange(4)
    scores = maps.max(axis=(2, 3))
    step = filter_average_precision(maps, y)
    area = filter_average_precision(maps, y, method="area")
    voc = filter_average_precision(maps, y, method="voc07")
    for f in range(7):
        for c in range(4):
            assert step[f, c] == pytest.approx(average_precision_score(ind[:, c], scores[:, f]), abs=1e-12)
            assert area[f, c] == pytest.approx(average_precision(ind[:, c], scores[:, f]), abs=1e-12)
            assert voc[f, c] == pytest.approx(average_precision(ind[:, c], scores[:, f], method="voc07"))
    assert np.all(area >= step - 1e-12)  # the envelope never lowers precision


def test_filter_ap_of_a_perfect_filter_is_one():
    x, y = one_class_filters()
    ap = filter_average_precision(x, y)
    np.testing.assert_allclose(np.diag(ap[:3]), 1.0)


def test_top_filters_and_errors():
    scores = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, np.nan]])
    np.testing.assert_array_equal(top_filters(scores, 2), [[1, 2], [0, 1]])
    with pytest.raises(ConfigError, match="from 1 to the number of filters"):
        top_filters(scores, 4)
    x, y = one_class_filters()
    with pytest.raises(ConfigError, match="spatial"):
        precision_curves(x, y, spatial="sum")
    with pytest.raises(ConfigError, match="AP method"):
        filter_average_precision(x, y, method="roc")
    with pytest.raises(DataError, match="indicator"):
        precision_curves(x, np.full((len(y), 2), 2))
    with pytest.raises(DataError, match=r"classes \[1\] have no positive"):
        precision_curves(x, np.column_stack([np.ones(len(y)), np.zeros(len(y))]).astype(int))
    bad = x.copy()
    bad[0, 0] = np.inf
    with pytest.raises(DataError, match="infinite"):
        filter_average_precision(bad, y)


def test_plot_and_dict(tmp_path):
    x, y = one_class_filters()
    res = precision_curves(x, y, thresholds=6)
    path = plot_precision_curves(
        {"alexnet": res, "ft": res}, tmp_path / "p.png", top=2, class_names=["a", "b", "c"]
    )
    assert path.read_bytes().startswith(PNG)
    assert plot_precision_curves(res, tmp_path / "q.png", x="level").exists()
    d = res.to_dict(top=2)
    assert [e["filter"] for e in d["top_filters"]["0"]] == [0, 3]
    with pytest.raises(ConfigError, match="class_names"):
        plot_precision_curves(res, tmp_path / "r.png", class_names=["a"])
