"""Selective-search proposals: post-processing, the cache in the store, worker processes, recall."""

from __future__ import annotations

import numpy as np
import pytest

from deepfeat.data.detection import BoxTable, DetectionDataset, voc_dataset
from deepfeat.errors import ConfigError
from deepfeat.tasks.detection.proposals import (
    ProposalOptions,
    ProposalSet,
    compute_proposals,
    proposal_recall,
    selective_search,
)
from tests.conftest import photo


def test_selective_search_boxes_are_clean():
    image = photo(3, (120, 90))
    image[20:60, 30:80] = (250, 20, 20)
    opts = ProposalOptions(width=None, max_proposals=50, min_size=6)
    boxes = selective_search(image, opts)
    assert boxes.dtype == np.float32 and 1 <= len(boxes) <= 50
    np.testing.assert_array_equal(boxes[0], [0, 0, 120, 90])  # the whole image comes first
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 120).all() and (boxes[:, 3] <= 90).all()
    assert ((boxes[:, 2] - boxes[:, 0]) > 6).all() and ((boxes[:, 3] - boxes[:, 1]) > 6).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    # the red rectangle is found (IoU > 0.7 with some proposal)
    from deepfeat.tasks.detection.boxes import iou

    assert iou([[30, 20, 80, 60]], boxes).max() > 0.7


def test_resize_width_maps_boxes_back_to_the_image():
    image = photo(4, (200, 100))
    boxes = selective_search(image, ProposalOptions(width=100, max_proposals=500))
    assert boxes[:, 2].max() <= 200 and boxes[:, 3].max() <= 100
    assert boxes[:, 2].max() > 150  # not left in the 100-pixel frame


def test_tiny_image_still_gets_its_own_box():
    boxes = selective_search(np.zeros((4, 4, 3), np.uint8), ProposalOptions(width=None, min_size=10))
    np.testing.assert_array_equal(boxes, [[0, 0, 4, 4]])


def test_options_are_checked():
    with pytest.raises(ConfigError, match="proposal mode"):
        ProposalOptions(mode="slow").validate()
    with pytest.raises(ConfigError, match="max_proposals"):
        ProposalOptions(max_proposals=0).validate()


def test_cache_resume_and_parallel_equal_serial(voc_root, tmp_path):
    ds = voc_dataset(voc_root, split="all")
    opts = ProposalOptions(width=None, max_proposals=30)
    serial = compute_proposals(ds, opts, workers=0, progress=False)
    store = tmp_path / "store"
    first = compute_proposals(ds.subset(range(3)), opts, store=store, workers=2, progress=False)
    assert first.n_computed == 3
    again = compute_proposals(ds, opts, store=store, workers=2, progress=False)  # resumes: 3 cached
    assert (again.n_cached, again.n_computed) == (3, len(ds) - 3)
    for image_id in ds.ids:
        np.testing.assert_array_equal(again[image_id], serial[image_id])
    fewer = compute_proposals(ds, ProposalOptions(width=None, max_proposals=10), store=store, workers=0)
    assert fewer.n_cached == len(ds)  # the budget is applied when reading: no new search
    for image_id in ds.ids:
        np.testing.assert_array_equal(fewer[image_id], serial[image_id][:10])
    other = compute_proposals(ds, ProposalOptions(width=64, max_proposals=10), store=store, workers=0)
    assert other.n_cached == 0  # the other settings are in the key


def test_bad_image_is_reported_by_path(voc_root):
    ds = voc_dataset(voc_root, split="all")
    ds.images[1].path.write_bytes(b"not an image")
    out = compute_proposals(ds, ProposalOptions(width=None, max_proposals=5), workers=2, progress=False)
    assert [p for p, _ in out.failures] == [str(ds.images[1].path)]
    assert ds.ids[1] not in out.boxes and len(out.boxes) == len(ds) - 1


def test_recall_per_class():
    from pathlib import Path

    t = BoxTable("a", Path("a.jpg"), [[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 5, 5]], [0, 1, 1], [0, 0, 1])
    ds = DetectionDataset("d", ["x", "y"], [t])
    props = ProposalSet({"a": np.array([[0, 0, 10, 11], [50, 50, 60, 60]], np.float32)}, ProposalOptions())
    r = proposal_recall(ds, props)
    assert r["x"] == {"recall": 1.0, "boxes": 1}
    assert r["y"] == {"recall": 0.0, "boxes": 1}  # the difficult box is not counted
    assert r["all"]["recall"] == 0.5


def _slow_search(path, options, max_pixels):
    """Stands in for one image's search in a worker: marks the image as started, then takes a while."""
    import os
    import time
    from pathlib import Path

    Path(os.environ["DEEPFEAT_TEST_MARKS"], Path(path).name).touch()
    time.sleep(0.4)
    return np.array([[0, 0, 4, 4]], np.float32), ""


def test_an_interrupt_stops_the_workers_and_keeps_what_finished(tmp_path, monkeypatch):
    import multiprocessing

    from deepfeat.tasks.detection import proposals
    from tests.tasks.detection.conftest import make_voc

    ds = voc_dataset(make_voc(tmp_path / "voc", n=12), split="all")
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("DEEPFEAT_TEST_MARKS", str(marks))
    monkeypatch.setattr(proposals, "_propose_file", _slow_search)  # the forked workers inherit it
    written = []

    def interrupt_after_first(target, write, durable=True):
        written.append(target)
        target.write_bytes(b"")
        raise KeyboardInterrupt  # Ctrl-C while the first result is being cached

    monkeypatch.setattr(proposals, "atomic_write_with", interrupt_after_first)
    before = set(multiprocessing.active_children())  # other tests' pools (joblib's loky) may be alive
    with pytest.raises(KeyboardInterrupt):
        compute_proposals(ds, ProposalOptions(width=None), store=tmp_path / "s", workers=2, progress=False)
    assert len(written) == 1
    assert not set(multiprocessing.active_children()) - before  # the workers were stopped, not left
    # the old pool worked through its whole queue before returning
    assert len(list(marks.iterdir())) < len(ds)
