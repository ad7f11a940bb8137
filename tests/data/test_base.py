"""The dataset types of deepfeat.data.base: validation of ids and targets, in-memory and file storage,
content fingerprints and the conversion of raw labels to targets."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from deepfeat.data.base import ArrayDataset, FileDataset, labels_to_targets
from deepfeat.errors import DataError


def _array_dataset(n: int = 3, **kw) -> ArrayDataset:
    images = kw.pop("images", np.zeros((n, 4, 5, 3), np.uint8))
    return ArrayDataset(
        name="arr",
        ids=kw.pop("ids", [f"i{k}" for k in range(n)]),
        classes=["a", "b"],
        targets=kw.pop("targets", np.arange(n) % 2),
        images=images,
        **kw,
    )


def test_a_dataset_needs_items_one_target_each_and_unique_ids():
    with pytest.raises(DataError, match="holds no items"):
        _array_dataset(0, images=np.zeros((0, 4, 5), np.uint8))
    with pytest.raises(DataError, match="3 items but 2 targets"):
        _array_dataset(3, targets=np.array([0, 1]))
    # a repeated id names both positions
    with pytest.raises(DataError, match=r"'i0' appears more than once \(items 0 and 2\)"):
        _array_dataset(3, ids=["i0", "i1", "i0"])


def test_array_dataset_checks_its_images_and_loads_rgb():
    with pytest.raises(DataError, match="must be uint8"):
        _array_dataset(2, images=np.zeros((2, 4, 5, 3), np.float32))
    with pytest.raises(DataError, match="must be uint8"):
        _array_dataset(2, images=np.zeros((2, 4), np.uint8))
    with pytest.raises(DataError, match="2 images for 3 ids"):
        _array_dataset(3, images=np.zeros((2, 4, 5), np.uint8))
    gray = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    ds = _array_dataset(2, images=gray)
    assert ds.image_size(1) == (5, 4)  # (width, height)
    img = ds.load(1)
    assert img.mode == "RGB" and img.size == (5, 4)
    np.testing.assert_array_equal(np.asarray(img)[..., 0], gray[1])


def test_array_fingerprint_follows_pixels_labels_and_splits():
    base = _array_dataset(2).fingerprint()
    assert _array_dataset(2).fingerprint() == base
    changed = np.zeros((2, 4, 5, 3), np.uint8)
    changed[1, 0, 0, 0] = 1
    assert _array_dataset(2, images=changed).fingerprint() != base
    assert _array_dataset(2, targets=np.array([1, 0])).fingerprint() != base
    assert _array_dataset(2, splits=["train", "test"]).fingerprint() != base


def _file_dataset(paths) -> FileDataset:
    return FileDataset(
        name="files",
        ids=[p.name for p in paths],
        classes=["a"],
        targets=np.zeros(len(paths), np.int64),
        paths=list(paths),
    )


def test_file_image_size_reads_headers_and_exif_rotations(tmp_path):
    plain, rotated, broken = tmp_path / "plain.jpg", tmp_path / "rotated.jpg", tmp_path / "broken.jpg"
    Image.new("RGB", (30, 20)).save(plain)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: width and height swap
    Image.new("RGB", (30, 20)).save(rotated, exif=exif)
    broken.write_bytes(b"not an image")
    ds = _file_dataset([plain, rotated, broken])
    assert ds.image_size(0) == (30, 20)
    assert ds.image_size(1) == (20, 30)
    assert ds.image_size(2) is None  # reported when it is loaded, not here
    assert ds.source(0).endswith("plain.jpg")


def test_file_fingerprint_changes_when_a_file_changes_or_disappears(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (8, 8)).save(a)
    Image.new("RGB", (8, 8)).save(b)
    ds = _file_dataset([a, b])
    first = ds.fingerprint()
    assert ds.fingerprint() == first
    Image.new("RGB", (9, 8)).save(b)  # another size on disk
    st = b.stat()
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = ds.fingerprint()
    assert second != first
    b.unlink()
    assert ds.fingerprint() not in (first, second)


def test_labels_to_targets_sorts_numbers_numerically_and_builds_indicators():
    classes, targets = labels_to_targets([10, 9, "2", 10])
    assert classes == ["2", "9", "10"]  # not the string order 10, 2, 9
    np.testing.assert_array_equal(targets, [2, 1, 0, 2])
    assert targets.dtype == np.int64
    classes, targets = labels_to_targets(["cat", "ant", "bee"])
    assert classes == ["ant", "bee", "cat"]
    np.testing.assert_array_equal(targets, [2, 0, 1])
    # any list makes the labels multi-label: an indicator matrix, a bare label counting as a list of one
    classes, targets = labels_to_targets([["dog", "cat"], "cat", []])
    assert classes == ["cat", "dog"]
    np.testing.assert_array_equal(targets, [[1, 1], [1, 0], [0, 0]])
    assert targets.dtype == np.uint8
    ds = _array_dataset(3, targets=targets)
    assert ds.multilabel and "multi-label" in ds.summary()
