"""Reading captioned images (CSV, COCO JSON), their errors, and splits."""

from __future__ import annotations

import pytest

from deepfeat.errors import ConfigError, DataError
from deepfeat.tasks.captioning.data import read_captions, read_split, seeded_split, write_split


def test_csv_folder_and_file_read_alike(shapes_csv):
    a = read_captions(shapes_csv.parent)
    b = read_captions(shapes_csv)
    assert a.ids == b.ids and len(a) == 12 and all(len(c) == 3 for c in a.captions)
    assert all(p.is_file() for p in a.paths)  # found in images/
    assert a.tokens()[0][0] == ["a", "red", "square"]


def test_a_csv_saved_with_a_byte_order_mark_reads_as_without(shapes_csv, tmp_path):
    text = shapes_csv.read_text(encoding="utf-8")
    bom = tmp_path / "captions.csv"
    bom.write_text(text, encoding="utf-8-sig")  # as Excel saves CSV
    data = read_captions(bom, images=shapes_csv.parent / "images")
    assert data.ids == read_captions(shapes_csv).ids


def test_coco_json_finds_its_images_and_reports_uncaptioned_ones(coco_json):
    data = read_captions(coco_json)
    assert data.ids == ["100", "101", "102"] and all(p.is_file() for p in data.paths)
    assert data.ignored == [("uncaptioned.jpg", "no caption")]
    with pytest.raises(DataError, match="listed twice"):
        read_captions([coco_json, coco_json])


def test_bad_inputs_name_the_file_and_line(tmp_path):
    bad = tmp_path / "c.csv"
    bad.write_text("image,text\na.jpg,hello\n")
    with pytest.raises(DataError, match="image,caption"):
        read_captions(bad)
    bad.write_text("image,caption\na.jpg,hello\nb.jpg, . , \n")
    with pytest.raises(DataError, match="line 3: empty caption"):
        read_captions(bad)
    with pytest.raises(DataError, match="not found"):
        read_captions(tmp_path / "missing.csv")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DataError, match="unknown caption file type"):
        read_captions(tmp_path / "x.txt")
    js = tmp_path / "c.json"
    js.write_text('{"images": [], "annotations": [{"image_id": 3, "caption": "x"}]}')
    with pytest.raises(DataError, match="image id 3"):
        read_captions(js)


def test_seeded_split_is_disjoint_reproducible_and_round_trips(shapes_csv, tmp_path):
    data = read_captions(shapes_csv)
    split = seeded_split(data.ids, (8, 2, 2), seed=5)
    assert sorted(i for part in split.values() for i in part) == sorted(data.ids)
    assert split == seeded_split(data.ids, (8, 2, 2), seed=5) != seeded_split(data.ids, (8, 2, 2), seed=6)
    path = write_split(tmp_path / "s.json", split, seed=5)
    assert read_split(path, data) == split
    with pytest.raises(ConfigError, match="need 13 images"):
        seeded_split(data.ids, (10, 2, 1))
    path.write_text('{"train": ["a"], "val": ["a"], "test": []}')
    with pytest.raises(DataError, match="both train and val"):
        read_split(path)
