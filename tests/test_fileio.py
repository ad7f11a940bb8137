"""Files written atomically, strict JSON (numpy converted, NaN as null), result files with plots."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest

from deepfeat.analysis import filter_entropy, plot_aue_histograms
from deepfeat.errors import ConfigError
from deepfeat.fileio import atomic_write_text, atomic_write_with, check_output_dir, to_jsonable, write_json
from deepfeat.report.writer import write_result


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


def test_write_result_json_and_plots(tmp_path):
    y = np.repeat([0, 1], 10)
    res = filter_entropy(np.random.default_rng(0).random((20, 5)), y, thresholds=5)
    provenance = {"backbone": "efficientnet_lite0", "weights_id": "abc", "layer": "head", "seed": np.int64(0)}
    paths = write_result(
        tmp_path / "out",
        "entropy_head",
        {"label": res},
        provenance=provenance,
        plots={"aue": lambda p: plot_aue_histograms({"head": {"net": res}}, p)},
    )
    assert paths["aue"].name == "entropy_head_aue.png" and paths["aue"].stat().st_size > 0
    payload = json.loads(paths["json"].read_text())
    assert payload["name"] == "entropy_head" and payload["kind"] == "analysis" and payload["schema"] == 1
    assert payload["provenance"] == {
        "backbone": "efficientnet_lite0",
        "weights_id": "abc",
        "layer": "head",
        "seed": 0,
    }
    assert payload["plots"] == {"aue": "entropy_head_aue.png"}
    assert payload["result"]["label"]["aue"] == pytest.approx(res.aue.tolist())
    assert "deepfeat" in payload["versions"] and "torch" in payload["versions"]
    assert {"command", "torch_threads", "allocator", "device"} <= set(payload["environment"])
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_write_result_validation(tmp_path):
    with pytest.raises(ConfigError, match="file stem"):
        write_result(tmp_path, "../x", {})
    with pytest.raises(ConfigError, match="plots"):
        write_result(tmp_path, "x", {}, plots={"a": "not callable"})


def test_strict_json_and_atomic_writes(tmp_path):
    path = write_json(tmp_path / "a.json", {"x": float("nan"), "y": np.float32(2.5)})
    assert json.loads(path.read_text()) == {"x": None, "y": 2.5}
    atomic_write_text(tmp_path / "a.json", "new")
    assert (tmp_path / "a.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")

    def half_then_fail(fh):
        fh.write(b"new, but only half")
        raise KeyboardInterrupt  # also an interruption, not only an error

    with pytest.raises(KeyboardInterrupt):
        atomic_write_with(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_to_jsonable_writes_paths_and_unknown_objects_as_text(tmp_path):
    class Opaque:
        def __str__(self):
            return "opaque"

    assert to_jsonable({"p": tmp_path / "x", 3: Opaque(), "s": {2}}) == {
        "p": str(tmp_path / "x"),
        "3": "opaque",
        "s": [2],
    }


def test_output_folder_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "file", "--out")
    assert check_output_dir(tmp_path / "new" / "deep").is_dir()
    # a folder that cannot be made (its parent is a file): refused for any user, root included
    with pytest.raises(ConfigError, match=r"--out .*file.sub: cannot write there"):
        check_output_dir(tmp_path / "file" / "sub", "--out")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root ignores permissions
            with pytest.raises(ConfigError, match="cannot write there"):
                check_output_dir(locked / "sub")
    finally:
        locked.chmod(0o700)
