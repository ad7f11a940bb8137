"""Hugging Face datasets as inputs: save_to_disk folders, the local caches by name, dataset objects."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import open_dataset
from deepfeat.data.hf import hf_dataset, parse_hf_spec
from deepfeat.data.source import as_dataset
from deepfeat.errors import DataError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import extract
from tests.conftest import SMALL, photo

datasets = pytest.importorskip("datasets")


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo(seed)).save(buf, format="PNG")
    return buf.getvalue()


def make(n: int, offset: int = 0, bad: int | None = None, unlabelled: int | None = None):
    images = [
        {"bytes": b"garbage, not an image" if i == bad else png(offset + i), "path": None} for i in range(n)
    ]
    labels = [-1 if i == unlabelled else i % 2 for i in range(n)]
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])}
    )
    return datasets.Dataset.from_dict({"img": images, "label": labels}, features=features)


@pytest.fixture
def hf_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    return home


def test_spec_parsing():
    assert parse_hf_spec("hf:user/tiny:train") == ("user/tiny", "train")
    assert parse_hf_spec("hf:user/tiny") == ("user/tiny", None)
    assert parse_hf_spec("hf:/data/saved:test") == ("/data/saved", "test")


def test_saved_to_disk_with_splits_and_bad_rows(tmp_path):
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": make(6, bad=3), "test": make(4, offset=10, unlabelled=1)}).save_to_disk(
        folder
    )
    both = open_dataset(f"hf:{folder}")
    assert both.classes == ["cat", "dog"] and len(both) == 9
    assert both.splits.tolist() == ["train"] * 6 + ["test"] * 3
    assert both.ignored == [(f"{folder.name}[test/1]", "no label")]
    test = open_dataset(f"hf:{folder}:test")
    assert test.ids == ["test/0", "test/2", "test/3"] and test.splits is None
    assert np.array_equal(np.asarray(test.load(1)), photo(12))
    with pytest.raises(DataError, match="no split 'val'; valid: train, test"):
        open_dataset(f"hf:{folder}:val")
    bb = load_backbone("efficientnet_lite0", weights="random")
    res = extract(both, bb, [LayerActivations(["pool"])], preprocess=SMALL, progress=False, workers=0)
    assert [p for p, _ in res.failures] == [f"{folder.name}[train/3]"]
    assert len(res["pool"]) == 8


def test_dataset_object_and_column_choice():
    ds = make(4).rename_column("label", "target")
    wrapped = as_dataset(ds)
    assert wrapped.classes == ["cat", "dog"] and wrapped.targets.tolist() == [0, 1, 0, 1]
    with pytest.raises(DataError, match="no image column 'pixels'"):
        hf_dataset(ds, image_column="pixels")


def test_by_name_from_the_hub_cache(hf_home):
    snapshot = hf_home / "hub" / "datasets--user--tiny" / "snapshots" / "abc123"
    (snapshot / "data").mkdir(parents=True)
    make(4).to_parquet(str(snapshot / "data" / "train-00000-of-00001.parquet"))
    make(2, offset=20).to_parquet(str(snapshot / "data" / "test-00000-of-00001.parquet"))
    (hf_home / "hub" / "datasets--user--tiny" / "refs").mkdir()
    (hf_home / "hub" / "datasets--user--tiny" / "refs" / "main").write_text("abc123")
    ds = open_dataset("hf:user/tiny:test")
    assert len(ds) == 2 and np.array_equal(np.asarray(ds.load(0)), photo(20))
    assert sorted(set(open_dataset("hf:user/tiny").splits)) == ["test", "train"]


def test_by_name_from_the_datasets_cache(hf_home, tmp_path):
    saved = tmp_path / "tmp-save"
    make(3, offset=30).save_to_disk(saved)
    folder = hf_home / "datasets" / "user___tiny2" / "default" / "0.0.0" / "f00d"
    folder.mkdir(parents=True)
    arrow = next(saved.glob("*.arrow"))
    (folder / "tiny2-train.arrow").write_bytes(arrow.read_bytes())
    (folder / "dataset_info.json").write_text((saved / "dataset_info.json").read_text())
    ds = hf_dataset("user/tiny2", "train")
    assert len(ds) == 3 and np.array_equal(np.asarray(ds.load(2)), photo(32))


def test_missing_name_names_the_caches(hf_home):
    with pytest.raises(DataError, match="not in the local caches") as info:
        open_dataset("hf:user/absent")
    assert str(hf_home) in str(info.value)
