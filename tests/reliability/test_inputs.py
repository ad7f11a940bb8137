"""Trials 6 to 9 (library side): hostile file names, manifests and folders, images past Pillow's
pixel limit, and on_error='fail' keeping the good images of the failing batch."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from deepfeat.data.datasets import folder_dataset, manifest_dataset, open_dataset
from deepfeat.errors import ConfigError, DataError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import extract
from deepfeat.features.store import FeatureStore
from tests.conftest import png_header_only
from tests.reliability.conftest import TINY, make_tree


def run(ds, effnet, **kw):
    kw = {"preprocess": TINY, "batch_size": 4, "workers": 0, "progress": False, **kw}
    return extract(ds, effnet, [LayerActivations("stage6", "avg")], **kw)


def test_file_names_that_are_not_utf8(tmp_path, effnet):
    tree = make_tree(tmp_path / "tree")
    Image.open(tree / "cat" / "000.png").save(tree / "cat" / os.fsdecode(b"caf\xe9.png"))
    (tree / "dog" / os.fsdecode(b"r\xe9sum\xe9.jpg")).write_bytes(b"")
    ds = open_dataset(tree)
    assert "cat/caf\\xe9.png" in ds.ids and len(ds) == 8
    res = run(ds, effnet, store=tmp_path / "store")
    assert len(res["stage6/avg"]) == 7
    ((path, reason),) = res.failures
    assert path.endswith("r\\xe9sum\\xe9.jpg") and "empty file" in reason
    f"{path}: {reason}".encode()  # printable: no lone surrogates left


def test_latin1_manifest_is_one_line_naming_the_line(tmp_path):
    (tmp_path / "m.csv").write_bytes(
        "path,label\ncat/000.png,chat\ncat/001.png,chat tigr\xe9\n".encode("latin-1")
    )
    with pytest.raises(DataError) as info:
        open_dataset(tmp_path / "m.csv")
    assert "m.csv, line 3: not valid UTF-8" in str(info.value) and "\n" not in str(info.value)


def test_the_same_image_three_ways_is_refused_with_line_numbers(tmp_path):
    make_tree(tmp_path / "small")
    lists = tmp_path / "lists"
    lists.mkdir()
    absolute = tmp_path / "small" / "cat" / "000.png"
    rows = [
        "../small/cat/000.png,cat",
        "../small/dog/000.png,dog",
        "../small/./cat/000.png,cat",
        f"{absolute},cat",
    ]
    (lists / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(
        DataError,
        match=r"line 4: '\.\./small/\./cat/000\.png' is the same file as "
        r"'\.\./small/cat/000\.png' on line 2",
    ):
        manifest_dataset(lists / "m.csv")
    (lists / "m.csv").write_text("path,label\n" + "\n".join(rows[:2] + rows[3:]) + "\n")
    with pytest.raises(
        DataError, match=r"line 4: .* is the same file as '\.\./small/cat/000\.png' on line 2"
    ):
        manifest_dataset(lists / "m.csv")
    (lists / "m.csv").write_text("path,label\n" + "\n".join(rows[:2] + rows[:1]) + "\n")
    with pytest.raises(DataError, match=r"line 4: .* same file .* on line 2"):  # plain duplicate
        manifest_dataset(lists / "m.csv")


def test_unquoted_comma_in_a_label_is_refused(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "m.csv").write_text("path,label\ncat/000.png,cat\ndog/000.png,dog, spotted\n")
    with pytest.raises(DataError, match=r"line 3: 3 fields, but the header names 2 \(path, label\); quote"):
        manifest_dataset(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text('path,label\ncat/000.png,cat\ndog/000.png,"dog, spotted"\n')
    assert manifest_dataset(tmp_path / "m.csv").classes == ["cat", "dog, spotted"]


def test_link_loops_and_empty_folders_are_listed_as_ignored(tmp_path, effnet):
    tree = make_tree(tmp_path / "tree")
    os.symlink("loop.jpg", tree / "cat" / "loop.jpg")
    os.symlink("..", tree / "cat" / "up")
    (tree / "dog" / "004.jpg").mkdir()
    res = run(folder_dataset(tree), effnet)
    reasons = {os.path.basename(p): r for p, r in res.ignored}
    assert reasons == {
        "loop.jpg": "symbolic link loop",
        "up": "symbolic link to a folder, not followed",
        "004.jpg": "empty folder",
    }
    assert res.n_items == 6 and not res.failures


def test_max_pixels_goes_past_pillows_limit(tmp_path, effnet):
    tree = make_tree(tmp_path / "tree", per_class=1)
    (tree / "cat" / "huge.png").write_bytes(png_header_only(10000, 10000))  # 1e8 pixels
    limit = Image.MAX_IMAGE_PIXELS
    ds = folder_dataset(tree)
    default = dict(run(ds, effnet).failures)
    raised = dict(run(ds, effnet, max_pixels=500_000_000).failures)
    (path,) = default
    assert "exceeds the limit of 89478485" in default[path] and "raise max_pixels" in default[path]
    assert "truncated or corrupt" in raised[path]  # accepted by the size checks: only its body is fake
    assert limit == Image.MAX_IMAGE_PIXELS


def test_on_error_fail_keeps_the_images_before_the_bad_one(tmp_path, effnet):
    tree = make_tree(tmp_path / "tree", per_class=4)
    (tree / "dog" / "001.png").write_bytes(b"")  # row 5: the second image of the second batch
    ds = folder_dataset(tree)
    with pytest.raises(
        DataError, match=r"dog/001\.png: empty file .*the features of the images before it are kept"
    ):
        run(ds, effnet, store=tmp_path / "store", on_error="fail")
    (meta,) = FeatureStore(tmp_path / "store").entries()
    status = FeatureStore(tmp_path / "store").find(meta["provenance"], len(ds)).status()
    assert status.done.tolist() == [True] * 5 + [False] * 3
    res = run(ds, effnet, store=tmp_path / "store")  # a rerun that skips computes only the rest
    assert res.n_forward == 2 and len(res.failures) == 1
    fresh = run(ds, effnet)
    np.testing.assert_allclose(
        np.asarray(res["stage6/avg"].features), np.asarray(fresh["stage6/avg"].features), rtol=1e-4, atol=1e-5
    )


def test_bad_settings_are_refused_before_any_store_entry(tmp_path, effnet):
    ds = folder_dataset(make_tree(tmp_path / "tree", per_class=1))
    for kw in ({"batch_size": 0}, {"max_pixels": 0}, {"workers": -1}):
        with pytest.raises(ConfigError, match=f"{next(iter(kw))} must be at least"):
            run(ds, effnet, store=tmp_path / "store", **kw)
    assert not (tmp_path / "store").exists()
