"""Readers of detection data: VOC folders and COCO instances files, box tables, reported problems."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfeat.data.coco import coco_dataset
from deepfeat.data.detection import VOC_CLASSES, open_detection, voc_dataset
from deepfeat.errors import ConfigError, DataError
from tests.conftest import SHARED_DATASETS

DATASETS = Path(os.environ.get("DEEPFEAT_DATASETS", SHARED_DATASETS))

XML = """<annotation><size><width>{w}</width><height>{h}</height></size>{objects}</annotation>"""
OBJ = (
    "<object><name>{name}</name>{diff}<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
    "<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
)


def _voc(root: Path, images: dict[str, list[dict]], split: list[str] | None = None, size=(50, 40)) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for image_id, objects in images.items():
        text = "".join(
            OBJ.format(
                diff=f"<difficult>{o.get('difficult', 0)}</difficult>" if "difficult" in o else "", **o
            )
            for o in objects
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(XML.format(w=size[0], h=size[1], objects=text))
        Image.new("RGB", size, (90, 120, 150)).save(root / "JPEGImages" / f"{image_id}.jpg")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(split or list(images)) + "\n")
    return root


def test_voc_boxes_are_continuous_and_difficult_is_read(tmp_path):
    root = _voc(
        tmp_path / "voc",
        {
            "a": [{"name": "cat", "x1": 1, "y1": 2, "x2": 10, "y2": 20}],
            "b": [
                {"name": "dog", "x1": 5, "y1": 5, "x2": 30, "y2": 25, "difficult": 1},
                {"name": "cat", "x1": 3, "y1": 4, "x2": 9, "y2": 8, "difficult": 0},
            ],
        },
    )
    ds = voc_dataset(root)
    assert ds.classes == ["cat", "dog"]
    a, b = ds.images
    # 1-based inclusive pixels (1..10) become [0, 10): width 10, as the devkit's xmax - xmin + 1
    np.testing.assert_array_equal(a.boxes, [[0, 1, 10, 20]])
    assert a.size == (50, 40) and a.labels.tolist() == [0]
    assert b.difficult.tolist() == [True, False] and b.labels.tolist() == [1, 0]
    assert ds.class_counts() == {"cat": 2, "dog": 0}
    assert ds.class_counts(include_difficult=True) == {"cat": 2, "dog": 1}


def test_voc_problems_are_reported_by_path_not_dropped_silently(tmp_path):
    root = _voc(
        tmp_path / "voc",
        {
            "good": [{"name": "cat", "x1": 1, "y1": 1, "x2": 10, "y2": 10}],
            "inverted": [
                {"name": "cat", "x1": 10, "y1": 1, "x2": 5, "y2": 10},
                {"name": "cat", "x1": 1, "y1": 1, "x2": 5, "y2": 5},
            ],
            "noimage": [{"name": "cat", "x1": 1, "y1": 1, "x2": 10, "y2": 10}],
            "broken": [],
        },
        split=["good", "inverted", "noimage", "broken", "nofile"],
    )
    (root / "JPEGImages" / "noimage.jpg").unlink()
    (root / "Annotations" / "broken.xml").write_text("<annotation><size>")
    ds = voc_dataset(root)
    assert ds.ids == ["good", "inverted"]
    assert len(ds.images[1]) == 1  # the valid object of that image stays
    reasons = {Path(path.split(" object")[0]).name: reason for path, reason in ds.ignored}
    assert set(reasons) == {"inverted.xml", "noimage.jpg", "broken.xml", "nofile.xml"}
    assert "missing" in reasons["nofile.xml"] and "missing" in reasons["noimage.jpg"]
    assert "cannot read" in reasons["broken.xml"]


def test_voc_unknown_split_lists_the_valid_ones(tmp_path):
    root = _voc(tmp_path / "voc", {"a": [{"name": "cat", "x1": 1, "y1": 1, "x2": 5, "y2": 5}]})
    with pytest.raises(DataError, match=r"splits available: trainval"):
        voc_dataset(root, split="val")


def test_voc_class_list_keeps_order_and_drops_others(tmp_path):
    root = _voc(
        tmp_path / "voc",
        {
            "a": [
                {"name": "cat", "x1": 1, "y1": 1, "x2": 5, "y2": 5},
                {"name": "dog", "x1": 2, "y1": 2, "x2": 9, "y2": 9},
            ]
        },
    )
    ds = voc_dataset(root, classes=["dog"])
    assert ds.classes == ["dog"] and ds.images[0].labels.tolist() == [0]
    assert len(VOC_CLASSES) == 20


def _coco(tmp_path: Path) -> Path:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    for name in ("1.jpg", "2.jpg"):
        Image.new("RGB", (64, 48)).save(tmp_path / "val2017" / name)
    data = {
        "images": [
            {"id": 7, "file_name": "1.jpg", "width": 64, "height": 48},
            {"id": 9, "file_name": "2.jpg", "width": 64, "height": 48},
            {"id": 11, "file_name": "missing.jpg", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "bbox": [1.5, 2, 10, 20], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 30, 30], "iscrowd": 1},
            {"id": 3, "image_id": 9, "category_id": 1, "bbox": [5, 5, 0, 10], "iscrowd": 0},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
    }
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_reader(tmp_path):
    path = _coco(tmp_path)
    ds = coco_dataset(path)  # image folder found from the file name
    assert ds.classes == ["person", "dog"] and ds.category_ids == [1, 18]
    one, two = ds.images
    np.testing.assert_allclose(one.boxes, [[1.5, 2, 11.5, 22], [0, 0, 30, 30]])
    assert one.labels.tolist() == [1, 0] and one.difficult.tolist() == [False, True]  # crowd: ignored in AP
    assert one.source_id == 7 and len(two) == 0
    reasons = " ".join(r for _, r in ds.ignored)
    assert "empty or invalid bbox" in reasons and "image file missing" in reasons
    assert open_detection(tmp_path, split="val").ids == ds.ids
    assert open_detection(path).ids == ds.ids


def test_boxes_outside_the_image_are_clipped_or_left_out_and_reported(tmp_path):
    """(A box reaching to x = 9999 of a 50-pixel image was kept as it was, silently: it can never be
    matched at IoU 0.5 and became a positive region and a regression target.)"""
    root = _voc(
        tmp_path / "voc",
        {
            "a": [
                {"name": "cat", "x1": 10, "y1": -50, "x2": 9999, "y2": 20},  # reaches outside: clipped
                {"name": "cat", "x1": 60, "y1": 2, "x2": 80, "y2": 20},  # wholly outside: left out
                {"name": "dog", "x1": 1, "y1": 1, "x2": 50, "y2": 40},  # the whole image: as it is
            ]
        },
    )
    ds = voc_dataset(root)
    (a,) = ds.images
    np.testing.assert_array_equal(a.boxes, [[9, 0, 50, 20], [0, 0, 50, 40]])
    assert a.labels.tolist() == [0, 1]
    reasons = dict(ds.ignored)
    assert (
        "reaches outside the 50 x 40 image; clipped to [9.0, 0.0, 50.0, 20.0]"
        in reasons[f"{root / 'Annotations' / 'a.xml'} object 0"]
    )
    assert (
        "lies outside the 50 x 40 image; object left out"
        in reasons[f"{root / 'Annotations' / 'a.xml'} object 1"]
    )
    (tmp_path / "coco").mkdir()
    path = _coco(tmp_path / "coco")
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 4, "image_id": 9, "category_id": 1, "bbox": [50, 40, 30, 30]})
    path.write_text(json.dumps(data))
    two = coco_dataset(path).images[1]
    np.testing.assert_allclose(two.boxes, [[50, 40, 64, 48]])
    assert any("clipped to [50.0, 40.0, 64.0, 48.0]" in r for _, r in coco_dataset(path).ignored)


def test_a_split_beside_a_coco_json_file_is_refused(tmp_path):
    """(it was ignored: the file is one split already)"""
    path = _coco(tmp_path)
    with pytest.raises(ConfigError, match="one COCO split already"):
        open_detection(path, split="nonsense")
    assert len(open_detection(path)) == len(coco_dataset(path))


def test_open_detection_refuses_other_folders(tmp_path):
    with pytest.raises(DataError, match="not detection data"):
        open_detection(tmp_path)


def test_fingerprint_changes_with_boxes(tmp_path):
    root = _voc(tmp_path / "voc", {"a": [{"name": "cat", "x1": 1, "y1": 1, "x2": 5, "y2": 5}]})
    before = voc_dataset(root).fingerprint()
    xml = root / "Annotations" / "a.xml"
    xml.write_text(xml.read_text().replace("<xmax>5</xmax>", "<xmax>6</xmax>"))
    assert voc_dataset(root).fingerprint() != before


@pytest.mark.realdata
@pytest.mark.skipif(not (DATASETS / "voc07_5class").is_dir(), reason="shared datasets absent")
def test_real_voc5_and_coco_mini_counts():
    train = open_detection(DATASETS / "voc07_5class", split="trainval")
    test = open_detection(DATASETS / "voc07_5class", split="test")
    assert (len(train), len(test)) == (572, 382) and not train.ignored and not test.ignored
    assert train.classes == ["bus", "car", "cat", "person", "train"]
    total = {c: train.class_counts()[c] + test.class_counts()[c] for c in train.classes}
    assert total == {"car": 897, "person": 716, "cat": 260, "train": 246, "bus": 141}
    coco = [open_detection(DATASETS / "coco_mini", split=s) for s in ("train", "val")]
    assert sum(len(d) for d in coco) == 159 and len(coco[0].classes) == 80
    assert sum(len(t) for d in coco for t in d.images) + sum(len(d.ignored) for d in coco) == 1363


def test_with_classes_keeps_a_subset_in_its_order(tmp_path):
    ds = coco_dataset(_coco(tmp_path))  # classes person (id 1), dog (id 18)
    only, dropped = ds.with_classes(["dog"])
    assert only.classes == ["dog"] and only.category_ids == [18] and dropped == 1
    one = only.images[0]
    np.testing.assert_allclose(one.boxes, [[1.5, 2, 11.5, 22]])
    assert one.labels.tolist() == [0] and one.difficult.tolist() == [False]
    swapped, none = ds.with_classes(["dog", "person"])
    assert none == 0 and swapped.category_ids == [18, 1]
    assert swapped.images[0].labels.tolist() == [0, 1]  # relabelled: dog first
    with pytest.raises(DataError, match="no class 'cat'"):
        ds.with_classes(["cat"])


def test_coco_entries_without_their_keys_are_named_and_shared_stems_keep_apart(tmp_path):
    path = _coco(tmp_path)
    good = json.loads(path.read_text())

    def load(change):
        data = json.loads(json.dumps(good))
        change(data)
        path.write_text(json.dumps(data))
        return coco_dataset(path)

    with pytest.raises(DataError, match=r"images\[1\] .* has no file_name; every entry of images needs id"):
        load(lambda d: d["images"][1].pop("file_name"))
    with pytest.raises(DataError, match=r"categories\[2\] .* has no id"):
        load(lambda d: d["categories"].append({"name": "noid"}))
    with pytest.raises(DataError, match="images id 7 appears more than once"):
        load(lambda d: d["images"].append({"id": 7, "file_name": "2.jpg"}))
    ds = load(lambda d: d["annotations"].append("junk"))
    assert any("annotation #3" in w and "not an object" in r for w, r in ds.ignored)
    for folder in ("a", "b"):
        (tmp_path / "val2017" / folder).mkdir()
        Image.new("RGB", (64, 48)).save(tmp_path / "val2017" / folder / "x.jpg")
    ds = load(
        lambda d: d["images"].extend([{"id": 20, "file_name": "a/x.jpg"}, {"id": 21, "file_name": "b/x.jpg"}])
    )
    assert [t.image_id for t in ds.images] == ["1", "2", "a/x", "b/x"]


def test_the_summary_counts_clipped_boxes_apart_from_ignored_entries(tmp_path):
    path = _coco(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 4, "image_id": 9, "category_id": 1, "bbox": [50, 40, 30, 30]})
    path.write_text(json.dumps(data))
    ds = coco_dataset(path)
    reasons = [r for _, r in ds.ignored]
    assert any("clipped to" in r for r in reasons)  # kept: not "ignored"
    text = ds.summary()
    assert "1 box clipped to their image" in text and f"{len(reasons) - 1} entr" in text


def test_coco_files_sharing_a_stem_in_one_folder_keep_apart(tmp_path):
    path = _coco(tmp_path)
    data = json.loads(path.read_text())
    Image.new("RGB", (64, 48)).save(tmp_path / "val2017" / "1.png")
    data["images"].append({"id": 30, "file_name": "1.png"})
    path.write_text(json.dumps(data))
    assert [t.image_id for t in coco_dataset(path).images] == ["1.jpg", "2.jpg", "1.png"]
