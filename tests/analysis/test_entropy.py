"""Filter entropy, AuE, MCAuE and percent decrease: hand-computed cases and the plain-loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepfeat.analysis import (
    filter_entropy,
    layer_entropy,
    mcaue,
    mcaue_fractions,
    percent_decrease,
    percent_decrease_table,
    plot_aue_histograms,
    plot_mcaue_curves,
)
from deepfeat.analysis._inputs import as_maps
from deepfeat.analysis.entropy import _loop_entropy_curves, n_top_filters
from deepfeat.errors import ConfigError, DataError

PNG = b"\x89PNG\r\n\x1a\n"


def balanced_labels(k: int, per_class: int) -> np.ndarray:
    return np.repeat(np.arange(k), per_class)


# -- hand-made filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["label", "weighted", "spmax"])
@pytest.mark.parametrize("spacing", ["linear", "quantile"])
def test_filter_firing_for_one_class_has_zero_entropy_above_the_lowest_threshold(method, spacing):
    k, per = 4, 10
    y = balanced_labels(k, per)
    rng = np.random.default_rng(0)
    maps = np.zeros((len(y), 3, 2, 2), dtype=np.float32)
    maps[y == 2, 1] = rng.uniform(1, 2, size=(per, 2, 2))  # filter 1 fires for class 2 only
    maps[:, 0] = rng.uniform(0, 1, size=(len(y), 2, 2))  # filter 0 fires for everything
    res = filter_entropy(maps, y, method=method, thresholds=11, spacing=spacing)
    if method == "weighted":  # zero responses weigh nothing: only class 2 has mass at any threshold
        assert np.all(res.entropy[1] == 0.0)
        assert res.aue[1] == 0.0
    elif spacing == "linear":
        # the lowest threshold keeps every response: the class prior, uniform here
        assert res.entropy[1, 0] == pytest.approx(math.log(k))
        assert np.all(res.entropy[1, 1:] == 0.0)
        assert res.aue[1] == pytest.approx(math.log(k) * 0.1 / 2)  # trapezoid of the first step only
    else:  # quantile levels up to 3/4 still include zeros of the other classes; above, only class 2
        assert res.entropy[1, 0] == pytest.approx(math.log(k))
        assert np.all(res.entropy[1, res.levels > 0.76] == 0.0)
    assert res.aue[1] < res.aue[0]
    assert res.max_entropy == pytest.approx(math.log(k))


@pytest.mark.parametrize("method", ["label", "weighted", "spmax"])
def test_filter_firing_uniformly_over_classes_has_maximal_entropy(method):
    k, m = 5, 7
    values = np.tile(np.arange(1, m + 1, dtype=np.float32), k)  # every class: the same responses 1..m
    y = np.repeat(np.arange(k), m)
    res = filter_entropy(values[:, None], y, method=method, thresholds=9)
    np.testing.assert_allclose(res.entropy[0], math.log(k), rtol=1e-12)
    assert res.aue[0] == pytest.approx(math.log(k))
    bits = filter_entropy(values[:, None], y, method=method, thresholds=9, base=2)
    assert bits.aue[0] == pytest.approx(math.log2(k))
    numpy_base = filter_entropy(values[:, None], y, method=method, thresholds=9, base=np.int64(2))
    assert numpy_base.aue[0] == pytest.approx(math.log2(k))


def test_weighted_and_label_entropy_by_hand():
    x = np.array([[1.0], [2.0], [3.0], [0.0]])
    y = np.array([0, 0, 1, 1])
    label = filter_entropy(x, y, method="label", thresholds=3)  # thresholds 0, 1.5, 3
    weighted = filter_entropy(x, y, method="weighted", thresholds=3)
    np.testing.assert_allclose(label.thresholds[0], [0.0, 1.5, 3.0])
    ln2 = math.log(2)
    h46 = -(0.4 * math.log(0.4) + 0.6 * math.log(0.6))
    np.testing.assert_allclose(label.entropy[0], [ln2, ln2, 0.0])  # counts (2,2), (1,1), (0,1)
    np.testing.assert_allclose(weighted.entropy[0], [ln2, h46, 0.0])  # weights (3,3), (2,3), (0,3)
    assert weighted.aue[0] == pytest.approx(0.5 * (ln2 + h46) / 2 + 0.5 * h46 / 2)


def test_spmax_differs_from_label_entropy_on_maps():
    # class 0 images: one strong position; class 1 images: every position moderately strong
    y = np.array([0, 0, 1, 1])
    maps = np.zeros((4, 1, 2, 2))
    maps[:2, 0, 0, 0] = 4.0
    maps[2:, 0] = 3.0
    label = filter_entropy(maps, y, method="label", thresholds=[0.0, 0.7])
    spmax = filter_entropy(maps, y, method="spmax", thresholds=[0.0, 0.7])
    # label: thresholds 0 and 2.8 over the 16 positions; at 2.8, 2 positions of class 0 and 8 of class 1
    np.testing.assert_allclose(label.thresholds[0], [0.0, 2.8])
    p = np.array([0.2, 0.8])
    assert label.entropy[0, 0] == pytest.approx(math.log(2))
    assert label.entropy[0, 1] == pytest.approx(-(p * np.log(p)).sum())
    # spmax: one value per image (4, 4, 3, 3): thresholds 3 and 3.7; at 3.7 only class 0 is left
    np.testing.assert_allclose(spmax.thresholds[0], [3.0, 3.7])
    np.testing.assert_allclose(spmax.entropy[0], [math.log(2), 0.0])


def test_weighted_filter_zero_everywhere_gets_the_prior_entropy():
    y = np.array([0, 0, 0, 1])
    x = np.zeros((4, 2))
    x[:, 1] = [1, 2, 3, 4]
    res = filter_entropy(x, y, method="weighted", thresholds=5)
    prior = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    np.testing.assert_allclose(res.entropy[0], prior)


# -- vectorised == plain loops -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["label", "weighted", "spmax"])
@pytest.mark.parametrize("spacing", ["linear", "quantile"])
def test_vectorised_equals_loop_reference(seed, method, spacing):
    rng = np.random.default_rng(seed)
    k = 3 + seed
    y = rng.integers(0, k, 37)
    y[:k] = np.arange(k)
    # rounded ReLU outputs: many ties and exact zeros, the awkward cases for thresholds
    maps = np.maximum(np.round(rng.normal(size=(37, 6, 3, 2)), 1), 0).astype(np.float32)
    maps[:, 4] = 0.0  # a dead filter
    levels = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(0, 1, 10)]))
    res = filter_entropy(maps, y, method=method, thresholds=levels, spacing=spacing, chunk_size=4)
    thr, ent, aue = _loop_entropy_curves(as_maps(maps), y, k, method, levels, spacing)
    np.testing.assert_array_equal(res.thresholds, thr)
    np.testing.assert_allclose(res.entropy, ent, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.aue, aue, rtol=1e-12, atol=1e-12)


def test_input_layouts_agree():
    rng = np.random.default_rng(3)
    maps = rng.random((20, 4, 3, 3)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    y[:3] = [0, 1, 2]
    a = filter_entropy(maps, y, thresholds=6)
    b = filter_entropy(maps.reshape(20, -1), y, layer_shape=(4, 3, 3), thresholds=6)
    c = filter_entropy(torch.from_numpy(maps), torch.from_numpy(y), thresholds=6)
    np.testing.assert_array_equal(a.entropy, b.entropy)
    np.testing.assert_array_equal(a.entropy, c.entropy)
    # vectors: label and spmax entropy coincide (as relu-6/7 in the report's Table 2.1)
    vec = maps.max(axis=(2, 3))
    np.testing.assert_array_equal(
        filter_entropy(vec, y, method="label").aue, filter_entropy(vec, y, method="spmax").aue
    )
    assert set(layer_entropy(maps, y, thresholds=4)) == {"label", "weighted", "spmax"}


def test_label_values_need_not_be_contiguous():
    x = np.array([[1.0], [2.0], [3.0], [4.0]])
    a = filter_entropy(x, np.array([7, 7, 42, 42]), thresholds=4)
    b = filter_entropy(x, np.array([0, 0, 1, 1]), thresholds=4)
    np.testing.assert_array_equal(a.entropy, b.entropy)
    assert a.classes.tolist() == [7, 42]


# -- MCAuE and percent decrease ------------------------------------------------------------------------


def test_mcaue_by_hand():
    aue = np.array([3.0, 1.0, 2.0, 4.0])  # sorted 1, 2, 3, 4: running means 1, 1.5, 2, 2.5
    np.testing.assert_allclose(mcaue(aue, [0.25, 0.5, 0.75, 1.0]), [1.0, 1.5, 2.0, 2.5])
    np.testing.assert_allclose(mcaue(aue, [0.1, 0.3]), [1.0, 1.5])  # ceil(0.4) = 1, ceil(1.2) = 2
    curve = mcaue(aue)
    assert curve.shape == (30,)
    assert curve[-1] == pytest.approx(2.5)
    assert np.all(np.diff(curve) >= 0)
    np.testing.assert_allclose(mcaue_fractions(), np.arange(1, 31) / 30)
    assert n_top_filters(0.1, 30) == 3  # 0.1 * 30 is 3.0000000000000004 in floating point
    assert n_top_filters(1 / 30, 256) == 9


def test_percent_decrease_by_hand():
    before = np.array([1.0, 2.0, 3.0, 4.0])
    after = np.array([0.5, 2.0, 3.0, 4.0])
    # fraction 0.1 and 0.25: 1 filter, 1 -> 0.5; 0.5: 2 filters, 1.5 -> 1.25; 1.0: 2.5 -> 2.375
    np.testing.assert_allclose(percent_decrease(before, after), [50.0, 50.0, 100 / 6, 5.0])
    np.testing.assert_allclose(percent_decrease(after, before), [-100.0, -100.0, -20.0, -100 / 19])
    assert np.isnan(percent_decrease(np.zeros(4), after, [1.0])[0])
    table = percent_decrease_table({"pool5": {"label": before}}, {"pool5": {"label": after}})
    assert table == {"pool5": {"label": pytest.approx({"0.1": 50.0, "0.25": 50.0, "0.5": 100 / 6, "1": 5.0})}}
    with pytest.raises(ConfigError, match="fc6"):
        percent_decrease_table({"fc6": {"label": before}}, {"pool5": {"label": after}})


def test_percent_decrease_from_curves():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    x = rng.random((40, 8))
    tuned = x.copy()
    tuned[y == 1, :4] += 2.0  # half the filters become class-specific
    before, after = filter_entropy(x, y), filter_entropy(tuned, y)
    dec = percent_decrease(before, after)
    assert np.all(dec > 0)
    assert dec[0] > dec[-1]  # the most selective filters gained the most


# -- validation ----------------------------------------------------------------------------------------


def test_errors_name_the_problem():
    x = np.random.default_rng(0).random((6, 3))
    y = np.array([0, 1, 0, 1, 0, 1])
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match=r"NaN or infinite.*filters"):
        filter_entropy(bad, y)
    with pytest.raises(DataError, match="single class"):
        filter_entropy(x, np.zeros(6, dtype=int))
    with pytest.raises(DataError, match="5 entries but there are 6"):
        filter_entropy(x, y[:5])
    with pytest.raises(DataError, match=r"classes \[2\] have no image"):
        filter_entropy(x, y, n_classes=3)
    with pytest.raises(ConfigError, match="at least 2"):
        filter_entropy(x, y, thresholds=1)
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        filter_entropy(x, y, thresholds=[0.0, 1.5])
    with pytest.raises(ConfigError, match="increasing"):
        filter_entropy(x, y, thresholds=[0.5, 0.2])
    with pytest.raises(ConfigError, match="valid: label, weighted, spmax"):
        filter_entropy(x, y, method="gini")
    with pytest.raises(ConfigError, match="spacing"):
        filter_entropy(x, y, spacing="log")
    with pytest.raises(DataError, match="negative"):
        filter_entropy(x - 0.5, y, method="weighted")
    with pytest.raises(DataError, match="layer_shape"):
        filter_entropy(x, y, layer_shape=(2, 2, 2))
    with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
        mcaue(np.ones(3), [0.0, 0.5])
    with pytest.raises(ConfigError, match="base"):
        filter_entropy(x, y, base=1)
    for bad in (True, float("inf"), "2"):
        with pytest.raises(ConfigError, match="base must be a positive number"):
            filter_entropy(x, y, base=bad)


# -- plots ---------------------------------------------------------------------------------------------


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    before = filter_entropy(rng.random((30, 12)), y, thresholds=10)
    after = filter_entropy(rng.random((30, 12)), y, thresholds=10)
    series = {"pool5": {"alexnet": before, "ft": after.aue}, "fc6": {"alexnet": before, "ft": after}}
    for path in (
        plot_aue_histograms(series, tmp_path / "hist.png"),
        plot_mcaue_curves(series, tmp_path / "sub" / "mcaue.png"),
    ):
        assert path.read_bytes().startswith(PNG)
    with pytest.raises(ConfigError, match="empty"):
        plot_mcaue_curves({}, tmp_path / "none.png")


def test_chunks_bound_responses_and_outputs():
    from deepfeat.analysis._inputs import BLOCK_ELEMENTS, filter_chunks

    chunks = filter_chunks(100_000, 10, None, 101 * 1000)  # few responses, many thresholds x classes
    assert max(b - a for a, b in chunks) * 101 * 1000 <= BLOCK_ELEMENTS
    assert chunks[0] == (0, BLOCK_ELEMENTS // (101 * 1000)) and chunks[-1][1] == 100_000
    assert filter_chunks(10, 5, 3) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    with pytest.raises(ConfigError, match="chunk_size"):
        filter_chunks(10, 5, 0)


def test_the_top_threshold_keeps_the_highest_response_in_float64():
    """lo + 1.0 * (hi - lo) rounds above hi here (-1 + 1.3 = 0.30000000000000004 > 0.3): the top
    level kept nothing, and the curves and areas were NaN for float64 input."""
    X = np.array([[-1.0], [0.3], [0.0], [0.2]])
    y = np.array([0, 1, 0, 1])
    curves = filter_entropy(X, y, thresholds=5)
    assert np.isfinite(curves.entropy).all() and curves.entropy[0, -1] == 0.0  # one image: class 1
    assert curves.aue == pytest.approx(filter_entropy(X.astype(np.float32), y, thresholds=5).aue)
    from deepfeat.analysis import precision_curves

    precision = precision_curves(X, y, thresholds=5)
    assert precision.n_above[0, -1] == 1 and precision.precision[0, -1].tolist() == [0.0, 1.0]
    assert np.isfinite(precision.area).all()
