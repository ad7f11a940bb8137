"""Webdataset-style tar shards as a dataset: real shards written with tarfile, bad samples reported."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import open_dataset
from deepfeat.data.webdataset import expand_shards, tar_dataset
from deepfeat.errors import DataError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import extract
from tests.conftest import SMALL, photo, truncated_jpeg


def encoded(seed: int, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo(seed)).save(buf, format=fmt)
    return buf.getvalue()


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """shard-000: 4 good samples (.jpg + .cls); shard-001: 2 good (.png + .json), one without a label,
    one label without an image, one corrupt image; shard-002: truncated in its second sample."""
    first = []
    for i in range(4):
        first += [(f"s{i}.jpg", encoded(i)), (f"s{i}.cls", b"ants" if i % 2 == 0 else b"bees")]
    write_shard(tmp_path / "shard-000.tar", first)
    second = [
        ("sub/s4.png", encoded(4, "PNG")),
        ("sub/s4.json", json.dumps({"label": "bees"}).encode()),
        ("sub/s5.png", encoded(5, "PNG")),
        ("sub/s5.json", json.dumps({"label": "ants", "extra": 1}).encode()),
        ("s6.jpg", encoded(6)),
        ("s7.cls", b"ants"),
        ("s8.jpg", truncated_jpeg(8)),
        ("s8.cls", b"bees"),
    ]
    write_shard(tmp_path / "shard-001.tar", second)
    third = write_shard(
        tmp_path / "shard-002.tar",
        [("s9.jpg", encoded(9)), ("s9.cls", b"ants"), ("s10.jpg", encoded(10) * 3), ("s10.cls", b"bees")],
    )
    data = third.read_bytes()
    third.write_bytes(data[: 512 * 3 + len(encoded(9)) + 2048])  # cut inside s10.jpg
    return tmp_path


def test_samples_labels_and_bad_input_reported(shards):
    ds = tar_dataset(str(shards / "shard-{000..002}.tar"))
    assert ds.ids == ["s0", "s1", "s2", "s3", "sub/s4", "sub/s5", "s8", "s9"]
    assert ds.classes == ["ants", "bees"]
    assert ds.targets.tolist() == [0, 1, 0, 1, 1, 0, 1, 0]
    reasons = dict(ds.ignored)
    assert "no label" in reasons[f"{shards / 'shard-001.tar'}:s6"]
    assert "no image member" in reasons[f"{shards / 'shard-001.tar'}:s7"]
    assert any(
        "shard-002.tar" in where and ("truncated" in why or "cut off" in why) for where, why in ds.ignored
    )
    # an image read from a shard is the same image as the file it was written from
    assert np.array_equal(
        np.asarray(ds.load(4)), np.asarray(Image.open(io.BytesIO(encoded(4, "PNG"))).convert("RGB"))
    )
    assert ds.source(4).endswith("shard-001.tar:sub/s4.png")
    assert ds.image_size(0) == (96, 80)


def test_shard_spellings(shards):
    brace = expand_shards(str(shards / "shard-{000..001}.tar"))
    assert [p.name for p in brace] == ["shard-000.tar", "shard-001.tar"]
    assert [p.name for p in expand_shards(str(shards / "shard-*.tar"))] == [
        "shard-000.tar",
        "shard-001.tar",
        "shard-002.tar",
    ]
    folder = open_dataset(shards)  # a folder holding only shards
    assert len(folder) == 8
    with pytest.raises(DataError, match=r"shard-008\.tar: shard not found"):
        expand_shards(str(shards / "shard-{008..009}.tar"))
    with pytest.raises(DataError, match="not a readable tar"):
        (shards / "fake.tar").write_bytes(b"not a tar archive at all" * 40)
        tar_dataset(shards / "fake.tar")


def test_extraction_reports_bad_images_by_shard_and_member(shards):
    ds = open_dataset(str(shards / "shard-00[01].tar"))
    bb = load_backbone("efficientnet_lite0", weights="random")
    res = extract(ds, bb, [LayerActivations(["pool"])], preprocess=SMALL, progress=False, workers=0)
    assert [path for path, _ in res.failures] == [f"{shards / 'shard-001.tar'}:s8.jpg"]
    fs = res["pool"]
    assert fs.ids == ["s0", "s1", "s2", "s3", "sub/s4", "sub/s5"] and fs.features.shape == (6, 1280)
    fingerprint = ds.fingerprint()
    assert open_dataset(str(shards / "shard-00[01].tar")).fingerprint() == fingerprint
    write_shard(shards / "shard-000.tar", [("s0.jpg", encoded(40)), ("s0.cls", b"ants")])
    assert open_dataset(str(shards / "shard-00[01].tar")).fingerprint() != fingerprint


def test_labels_mixing_class_indexes_and_names_are_refused(tmp_path):
    """(shards labelled 0, 1, 2 beside shards labelled c0, c1, c2 became 6 classes)"""
    write_shard(
        tmp_path / "a-000.tar",
        [("x0.jpg", encoded(0)), ("x0.cls", b"0"), ("x1.jpg", encoded(1)), ("x1.cls", b"1")],
    )
    write_shard(
        tmp_path / "a-001.tar",
        [("y0.jpg", encoded(2)), ("y0.cls", b"c0"), ("y1.jpg", encoded(3)), ("y1.cls", b"c1")],
    )
    with pytest.raises(DataError, match=r"mix class indexes and class names: 'x0' in .*a-000.tar has '0'"):
        tar_dataset(str(tmp_path / "a-{000..001}.tar"))


def test_a_shard_cut_between_members_is_reported_not_silently_short(tmp_path):
    members = []
    for i in range(6):
        members += [(f"s{i}.png", encoded(i, "PNG")), (f"s{i}.cls", b"ants" if i % 2 else b"bees")]
    whole = write_shard(tmp_path / "whole.tar", members)
    with tarfile.open(whole) as tar:  # where the fourth sample's first header starts
        cut = next(m.offset for m in tar.getmembers() if m.name == "s3.png")
    cut_path = tmp_path / "cut.tar"
    cut_path.write_bytes(whole.read_bytes()[:cut])  # a 512-byte boundary: tarfile sees an end
    ds = tar_dataset(cut_path)
    assert ds.ids == ["s0", "s1", "s2"]
    assert any("without tar's end-of-archive blocks" in why for _, why in ds.ignored), ds.ignored
    assert not tar_dataset(whole).ignored  # an intact shard ends cleanly


def test_a_key_again_after_other_samples_is_refused_and_two_images_are_reported(tmp_path):
    again = write_shard(
        tmp_path / "again.tar",
        [
            ("a.jpg", encoded(1)),
            ("a.cls", b"cat"),
            ("b.jpg", encoded(2)),
            ("b.cls", b"dog"),
            ("a.jpg", encoded(3)),
        ],
    )
    with pytest.raises(DataError, match=r"again\.tar:a\.jpg: key 'a' appears again after other samples"):
        tar_dataset(again)
    two = write_shard(
        tmp_path / "two.tar",
        [
            ("c.jpg", encoded(1)),
            ("c.png", encoded(2, "PNG")),
            ("c.cls", b"cat"),
            ("d.left.jpg", encoded(4)),  # webdataset: key d, field left.jpg
            ("d.cls", b"dog"),
        ],
    )
    ds = tar_dataset(two)
    assert ds.ids == ["d"]
    assert "two image members (c.jpg, c.png)" in dict(ds.ignored)[f"{two}:c"]


def test_compressed_shards_are_named_as_such(tmp_path):
    (tmp_path / "x.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match="compressed tar shards are not read"):
        open_dataset(tmp_path / "x.tar.gz")


def test_a_compressed_shard_named_tar_is_named_as_compressed(tmp_path):
    import gzip

    plain = write_shard(tmp_path / "plain.tar", [("a.jpg", encoded(1)), ("a.cls", b"cat")])
    (tmp_path / "packed.tar").write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(DataError, match=r"packed\.tar: a compressed tar .* decompress it to a plain \.tar"):
        tar_dataset(tmp_path / "packed.tar")
