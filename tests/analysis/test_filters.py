"""Filters needed per class: a constructed problem with known answers, overlap and ranking by hand."""

from __future__ import annotations

import numpy as np
import pytest

from deepfeat.analysis import (
    filter_overlap,
    filters_needed,
    plot_filter_overlap,
    plot_filters_needed,
    rank_filters,
    spatial_max,
)
from deepfeat.errors import ConfigError, DataError

PNG = b"\x89PNG\r\n\x1a\n"


def one_filter_per_class(k: int = 4, f: int = 20, n: int = 240, seed: int = 0, maps: bool = False):
    """Class c is told apart by filter c alone: it fires ~3 on class c and ~0 elsewhere; every other
    filter is noise. Returns train and test splits."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = rng.uniform(0, 1, (n, f))
    x[np.arange(n), y] += 3.0
    if maps:  # the same spatial max, hidden at a random position of a 2x2 map over lower values
        m = rng.uniform(0, 0.5, (n, f, 2, 2)) * x[:, :, None, None]
        pos = rng.integers(0, 4, (n, f))
        m.reshape(n, f, 4)[np.arange(n)[:, None], np.arange(f)[None, :], pos] = x
        x = m
    half = n // 2
    return x[:half], y[:half], x[half:], y[half:]


@pytest.mark.parametrize("maps", [False, True])
def test_class_depending_on_one_filter_needs_one(maps):
    Xtr, ytr, Xte, yte = one_filter_per_class(maps=maps)
    res = filters_needed(Xtr, ytr, Xte, yte, overlap_top=5)
    assert res.ks == [1, 2, 3, 5, 10, 15, 20]
    np.testing.assert_array_equal(res.ranking[:, 0], np.arange(4))
    assert res.needed[0.5] == [1, 1, 1, 1]
    assert res.needed[0.9] == [1, 1, 1, 1]
    np.testing.assert_allclose(res.full_ap, 1.0)
    np.testing.assert_allclose(res.ap[:, 0], 1.0)
    assert res.ap.shape == (4, 7)
    assert res.overlap.shape == (4, 4)
    np.testing.assert_allclose(np.diag(res.overlap), 1.0)
    rows = res.table()
    assert rows[2] == {"class": 2, "full_ap": pytest.approx(1.0), "k_0.5": 1, "k_0.9": 1}


def test_harder_class_needs_more_filters():
    # class 0: one strong filter; class 1: the sum of 6 weak filters (1..6); class 2: neither
    rng = np.random.default_rng(1)
    n, f = 600, 12
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, f))
    x[:, 0] += 4.0 * (y == 0)
    x[:, 1:7] += 1.0 * (y == 1)[:, None]
    res = filters_needed(x[:300], y[:300], x[300:], y[300:], ks=[1, 3, 6], fractions=[0.95], overlap_top=3)
    assert res.ks == [1, 3, 6, 12]
    assert res.needed[0.95][0] == 1
    assert res.needed[0.95][1] == 6
    assert set(res.ranking[1, :6]) == {1, 2, 3, 4, 5, 6}
    assert np.all(np.diff(res.ap[1]) > 0)  # more of the weak filters, better AP


def test_multilabel_targets():
    rng = np.random.default_rng(2)
    n = 200
    y = (rng.random((n, 3)) < 0.4).astype(int)
    x = rng.uniform(0, 1, (n, 10)) + 3.0 * np.pad(y, ((0, 0), (0, 7)))
    res = filters_needed(x[:100], y[:100], x[100:], y[100:], ks=[1, 2])
    np.testing.assert_array_equal(res.ranking[:, 0], [0, 1, 2])
    assert res.needed[0.9] == [1, 1, 1]
    assert res.overlap_top == 10  # capped at the number of filters


def test_overlap_and_ranking_by_hand():
    ranking = np.array([[0, 1, 2, 3], [1, 0, 4, 5], [6, 7, 8, 9]])
    o2 = filter_overlap(ranking, top=2)
    np.testing.assert_allclose(o2, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    o3 = filter_overlap(ranking, top=3)
    assert o3[0, 1] == pytest.approx(2 / 3)
    assert o3[0, 2] == 0.0
    w = np.array([[0.1, -3.0, 2.0, 0.0], [1.0, 1.0, -1.0, 0.5]])
    np.testing.assert_array_equal(rank_filters(w), [[1, 2, 0, 3], [0, 1, 2, 3]])
    with pytest.raises(ConfigError, match="top"):
        filter_overlap(ranking, top=5)


def test_spatial_max_layouts():
    m = np.random.default_rng(0).random((3, 4, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(spatial_max(m), m.max(axis=(2, 3)))
    np.testing.assert_array_equal(spatial_max(m.reshape(3, -1), (4, 2, 2)), m.max(axis=(2, 3)))


def test_validation():
    Xtr, ytr, Xte, yte = one_filter_per_class(k=2, f=4, n=40)
    with pytest.raises(ConfigError, match="ks"):
        filters_needed(Xtr, ytr, Xte, yte, ks=[0, 2])
    with pytest.raises(ConfigError, match="ks"):
        filters_needed(Xtr, ytr, Xte, yte, ks=[2, 9])
    with pytest.raises(ConfigError, match="loss"):
        filters_needed(Xtr, ytr, Xte, yte, loss="logistic")
    with pytest.raises(DataError, match="absent from y_train"):
        filters_needed(Xtr, ytr, Xte, yte + 5)
    with pytest.raises(DataError, match="X_test has 3"):
        filters_needed(Xtr, ytr, Xte[:, :3], yte)
    with pytest.raises(DataError, match="single class"):
        filters_needed(Xtr, np.zeros_like(ytr), Xte, yte)
    with pytest.raises(DataError, match="19 entries"):
        filters_needed(Xtr, ytr[:19], Xte, yte)
    with pytest.raises(ConfigError, match="probe_params"):
        filters_needed(Xtr, ytr, Xte, yte, probe_params={"kernel": "rbf"})
    with pytest.raises(ConfigError, match="fractions"):
        filters_needed(Xtr, ytr, Xte, yte, fractions=[1.5])
    nan = Xtr.copy()
    nan[0, 0] = np.nan
    with pytest.raises(DataError, match="X_train hold NaN"):
        filters_needed(nan, ytr, Xte, yte)


def test_plots(tmp_path):
    Xtr, ytr, Xte, yte = one_filter_per_class(k=3, f=6, n=60)
    res = filters_needed(Xtr, ytr, Xte, yte, ks=[1, 2], overlap_top=2)
    assert plot_filters_needed({"alexnet": res, "ft": res}, tmp_path / "k.png").read_bytes().startswith(PNG)
    path = plot_filter_overlap(res, tmp_path / "o.png", class_names=["a", "b", "c"])
    assert path.read_bytes().startswith(PNG)
    d = res.to_dict()
    assert d["needed"]["0.5"] == [1, 1, 1] and d["ks"] == [1, 2, 6]
