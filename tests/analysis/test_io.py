"""Writing analysis results: JSON with provenance (numpy converted, NaN as null) and plots."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from deepfeat.analysis import filter_entropy, plot_aue_histograms, to_jsonable, write_analysis
from deepfeat.errors import ConfigError


@dataclass
class Small:
    values: np.ndarray
    name: str


def test_to_jsonable_converts_numpy_and_non_finite_numbers():
    obj = {
        "a": np.arange(3),
        "b": np.float32(1.5),
        "c": (np.int64(2), float("nan")),
        "d": Small(np.array([[1.0, np.inf]]), "x"),
        1: {np.bool_(True)},
    }
    assert to_jsonable(obj) == {
        "a": [0, 1, 2],
        "b": 1.5,
        "c": [2, None],
        "d": {"values": [[1.0, None]], "name": "x"},
        "1": [True],
    }
    json.dumps(to_jsonable(obj), allow_nan=False)


def test_write_analysis_json_and_plots(tmp_path):
    y = np.repeat([0, 1], 10)
    res = filter_entropy(np.random.default_rng(0).random((20, 5)), y, thresholds=5)
    provenance = {"backbone": "efficientnet_lite0", "weights_id": "abc", "layer": "head", "seed": np.int64(0)}
    paths = write_analysis(
        tmp_path / "out",
        "entropy_head",
        {"label": res},
        provenance=provenance,
        plots={"aue": lambda p: plot_aue_histograms({"head": {"net": res}}, p)},
    )
    assert paths["aue"].name == "entropy_head_aue.png" and paths["aue"].stat().st_size > 0
    payload = json.loads(paths["json"].read_text())
    assert payload["analysis"] == "entropy_head"
    assert payload["provenance"] == {
        "backbone": "efficientnet_lite0",
        "weights_id": "abc",
        "layer": "head",
        "seed": 0,
    }
    assert payload["plots"] == {"aue": "entropy_head_aue.png"}
    assert payload["result"]["label"]["aue"] == pytest.approx(res.aue.tolist())
    assert "deepfeat" in payload["versions"]
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_write_analysis_validation(tmp_path):
    with pytest.raises(ConfigError, match="file stem"):
        write_analysis(tmp_path, "../x", {})
    with pytest.raises(ConfigError, match="plots"):
        write_analysis(tmp_path, "x", {}, plots={"a": "not callable"})
