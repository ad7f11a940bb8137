from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from deepfeat.data.datasets import (
    digits_dataset,
    folder_dataset,
    manifest_dataset,
    open_dataset,
)
from deepfeat.errors import ConfigError, DataError, ImageError
from deepfeat.fileio import check_output_dir
from tests.conftest import SHARED_DATASETS, photo, save


def test_folder_tree(image_tree):
    ds = folder_dataset(image_tree)
    assert ds.classes == ["ants", "bees", "wasps"]
    assert len(ds) == 12 and not ds.multilabel and ds.splits is None
    assert ds.ids[0] == "ants/img0.jpg"
    np.testing.assert_array_equal(np.bincount(ds.targets), [4, 4, 4])
    img = ds.load(0)
    assert img.mode == "RGB"


def test_folder_tree_reports_hidden_and_loose_files(image_tree):
    (image_tree / ".DS_Store").write_text("x")
    (image_tree / "README.txt").write_text("x")
    (image_tree / "ants" / ".hidden.jpg").write_text("x")
    ds = folder_dataset(image_tree)
    reasons = dict(ds.ignored)
    assert reasons[str(image_tree / ".DS_Store")] == "hidden"
    assert reasons[str(image_tree / "README.txt")] == "file outside any class folder"
    assert reasons[str(image_tree / "ants" / ".hidden.jpg")] == "hidden"
    assert len(ds) == 12


def test_output_folders_inside_the_data_are_not_classes(image_tree):
    """Results written inside the image folder (``deepfeat evaluate .`` makes ./deepfeat-out) were
    read as a class of their own: an empty one refused the first run, a full one changed the data."""
    before = folder_dataset(image_tree)
    out = check_output_dir(image_tree / "deepfeat-out")
    (out / "results.json").write_text("{}")
    nested = check_output_dir(image_tree / "ants" / "runs" / "a")
    (nested / "scores.json").write_text("{}")
    ds = folder_dataset(image_tree)
    assert ds.classes == before.classes and ds.ids == before.ids
    assert ds.fingerprint() == before.fingerprint()
    reasons = dict(ds.ignored)
    assert "deepfeat output folder" in reasons[str(out)]
    assert "deepfeat output folder" in reasons[str(nested)]
    # a result written by write_result (heatmaps, analyses) is deepfeat's output too
    from deepfeat.report.writer import write_result

    write_result(image_tree / "hm", "heatmap", {"maps": {}})
    assert folder_dataset(image_tree).classes == before.classes
    # an ordinary folder is still a class
    (image_tree / "wasps2").mkdir()
    save(Image.fromarray(photo(0, (16, 16))), image_tree / "wasps2" / "w.png")
    assert "wasps2" in folder_dataset(image_tree).classes


def test_non_image_files_inside_classes_are_items(bad_tree):
    """They are not dropped at listing: the extraction reports them by path."""
    ds = folder_dataset(bad_tree)
    assert "ants/notes.txt" in ds.ids and "ants/zero.jpg" in ds.ids
    with pytest.raises(ImageError, match=r"notes\.txt"):
        ds.load(ds.ids.index("ants/notes.txt"))


def test_split_layout(tmp_path):
    for split in ("train", "val"):
        for c in ("a", "b"):
            for i in range(2):
                save(Image.fromarray(photo(i)), tmp_path / split / c / f"{i}.png")
    ds = folder_dataset(tmp_path)
    assert ds.classes == ["a", "b"]
    assert sorted(set(ds.splits)) == ["train", "val"]
    assert list(ds.splits).count("train") == 4


def test_empty_class_folder_is_an_error(image_tree):
    (image_tree / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: class folder holds no files"):
        folder_dataset(image_tree)


def test_folder_without_class_folders(tmp_path):
    save(Image.fromarray(photo(0)), tmp_path / "x.png")
    with pytest.raises(DataError, match="no class folders"):
        folder_dataset(tmp_path)


def test_fingerprint_changes_with_content_and_labels(image_tree):
    a = folder_dataset(image_tree).fingerprint()
    assert folder_dataset(image_tree).fingerprint() == a
    target = image_tree / "bees" / "img1.png"
    save(Image.fromarray(photo(99)), target)
    os.utime(target, ns=(1, 1))
    assert folder_dataset(image_tree).fingerprint() != a


def test_manifest_csv_multilabel_with_difficult(tmp_path):
    for i in range(3):
        save(Image.fromarray(photo(i)), tmp_path / "img" / f"{i}.jpg")
    (tmp_path / "m.csv").write_text(
        "path,labels,difficult,split\n"
        "img/0.jpg,cat;dog,,train\n"
        "img/1.jpg,dog,cat,train\n"
        "img/2.jpg,bird|cat,,test\n"
    )
    ds = manifest_dataset(tmp_path / "m.csv")
    assert ds.multilabel and ds.classes == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(ds.targets, [[0, 1, 1], [0, 0, 1], [1, 1, 0]])
    assert ds.difficult[1].tolist() == [False, True, False]
    assert list(ds.splits) == ["train", "train", "test"]
    assert ds.load(2).size == (96, 80)


def test_manifest_jsonl_single_label(tmp_path):
    save(Image.fromarray(photo(0)), tmp_path / "a.png")
    save(Image.fromarray(photo(1)), tmp_path / "b.png")
    lines = [{"path": str(tmp_path / "a.png"), "label": "x"}, {"path": "b.png", "label": 3}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    ds = open_dataset(tmp_path / "m.jsonl")
    assert ds.classes == ["3", "x"] and ds.targets.tolist() == [1, 0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,label\n", "lists no images"),
        ("img,label\na.png,x\n", "no image path column"),
        ("path,klass\na.png,x\n", "no label column"),
        ("path,label\na.png,\n", "line 2: empty label"),
        ("path,label\na.png,x;y\n", "takes one class"),
        ("path,label,split\na.png,x,train\nb.png,y,\n", "line 3: 'split' is empty"),
        ("path,label\na.png,tabby,cat\n", "line 2: 3 fields, but the header names 2 .*quote a value"),
        ("path,label,split\na.png,x\n", "line 2: 2 fields, but the header names 3"),
        ('path,label\n"a.png,x\n', "line 2: not valid CSV"),
        (
            "path,label\na.png,x\nb.png,x\n./a.png,y\n",
            r"line 4: './a.png' is the same file as 'a.png' on line 2",
        ),
    ],
)
def test_manifest_errors_name_the_problem(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        manifest_dataset(tmp_path / "m.csv")


def test_manifest_bad_json_line(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"path": "a", "label": "b"}\n{oops\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        manifest_dataset(tmp_path / "m.jsonl")


def test_digits_default_dataset():
    ds = digits_dataset()
    assert len(ds) == 1797 and ds.classes == [str(i) for i in range(10)]
    img = ds.load(0)
    assert img.mode == "RGB" and img.size == (8, 8)
    assert ds.images.max() == 255 and np.asarray(img)[..., 0].tolist() == ds.images[0].tolist()
    assert ds.fingerprint() == digits_dataset().fingerprint()


def test_a_folder_named_digits_is_not_silently_replaced_by_the_embedded_digits(tmp_path, monkeypatch):
    save(Image.fromarray(photo(0)), tmp_path / "digits" / "a" / "0.png")
    save(Image.fromarray(photo(1)), tmp_path / "digits" / "b" / "1.png")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"give \./digits"):
        open_dataset("digits")
    assert len(open_dataset("./digits")) == 2


def test_open_dataset_unknown(tmp_path):
    with pytest.raises(DataError, match="valid: 'digits'"):
        open_dataset(tmp_path / "missing")


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATASETS / "hymenoptera").is_dir(), reason="../shared/datasets absent")
def test_hymenoptera_layout():
    ds = folder_dataset(SHARED_DATASETS / "hymenoptera")
    assert ds.classes == ["ants", "bees"]
    assert sorted(set(ds.splits)) == ["train", "val"]
    assert "train/ants/formica.jpeg" in ds.ids and "train/ants/imageNotFound.gif" in ds.ids


def test_quoted_comma_in_a_label_is_kept(tmp_path):
    (tmp_path / "m.csv").write_text('path,label\na.png,"tabby, striped"\nb.png,plain\n')
    assert manifest_dataset(tmp_path / "m.csv").classes == ["plain", "tabby, striped"]


def test_manifest_that_is_not_utf8_names_the_line(tmp_path):
    (tmp_path / "m.csv").write_bytes("path,label\na.png,x\nb.png,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"m\.csv, line 3: not valid UTF-8 \(byte 0xe9\); save the manifest"):
        manifest_dataset(tmp_path / "m.csv")
    (tmp_path / "m.jsonl").write_bytes('{"path": "a.png", "label": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="line 1: not valid UTF-8"):
        manifest_dataset(tmp_path / "m.jsonl")


def test_folder_lists_odd_entries_as_ignored(image_tree):
    ants = image_tree / "ants"
    os.symlink("loop.jpg", ants / "loop.jpg")
    os.symlink("nowhere.jpg", ants / "dangling.jpg")
    os.symlink("../bees", ants / "bees-link")
    (ants / "empty.jpg").mkdir()
    (image_tree / "stray.txt").write_text("x")
    ds = folder_dataset(image_tree)
    reasons = {os.path.basename(p): r for p, r in ds.ignored}
    assert reasons == {
        "loop.jpg": "symbolic link loop",
        "dangling.jpg": "broken symbolic link (its target is missing)",
        "bees-link": "symbolic link to a folder, not followed",
        "empty.jpg": "empty folder",
        "stray.txt": "file outside any class folder",
    }
    assert len(ds) == 12


def test_folder_refuses_the_same_file_twice(image_tree):
    os.symlink(image_tree / "ants" / "img0.jpg", image_tree / "bees" / "copy.jpg")
    with pytest.raises(DataError, match=r"copy\.jpg and .*img0\.jpg are the same file"):
        folder_dataset(image_tree)


def test_file_name_that_is_not_utf8(image_tree):
    name = os.fsdecode(b"caf\xe9.png")
    save(Image.fromarray(photo(5)), image_tree / "ants" / name)
    ds = folder_dataset(image_tree)
    i = ds.ids.index("ants/caf\\xe9.png")  # printable id, the real file behind it
    assert ds.load(i).size == (96, 80) and ds.source(i).endswith("caf\\xe9.png")
    assert len(ds.fingerprint()) == 64
    json.dumps(ds.index_record())


def test_names_that_read_alike_once_escaped_are_refused_by_name(tmp_path):
    # a raw 0xff byte and a literal backslash-x-f-f give the same printable id: the message said one
    # item "appears more than once"
    root = os.fsencode(tmp_path / "tree")
    for rel in (b"a/bad\xff.png", b"a/bad\\xff.png", b"b/ok.png"):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, format="PNG")
        except OSError:
            pytest.skip("this file system refuses names that are not UTF-8")
    with pytest.raises(DataError, match="two files whose names read alike"):
        open_dataset(os.fsdecode(root))


def test_class_folders_with_bytes_that_are_not_utf8_get_printable_names(tmp_path):
    # the raw name ('c\udcff') crashed the per-class plot after every fit
    root = os.fsencode(tmp_path / "classes")
    for cls in (b"c\xff", b"d"):
        os.makedirs(os.path.join(root, cls))
        try:
            Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(
                os.path.join(root, cls, b"x.png"), format="PNG"
            )
        except OSError:
            pytest.skip("this file system refuses names that are not UTF-8")
    ds = open_dataset(os.fsdecode(root))
    assert ds.classes == ["c\\xff", "d"] and ds.targets.tolist() == [0, 1]
    "".join(ds.classes).encode("utf-8")  # printable
    os.makedirs(os.path.join(root, b"c\\xff"))  # a literal backslash-x-f-f: the same class name
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(
        os.path.join(root, b"c\\xff", b"y.png"), format="PNG"
    )
    with pytest.raises(DataError, match="read alike"):
        open_dataset(os.fsdecode(root))
