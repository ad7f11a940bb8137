"""Region features through the store: cached, resumed after an interruption, failures reported."""

from __future__ import annotations

import numpy as np
import pytest

from deepfeat.data.detection import voc_dataset
from deepfeat.tasks.detection.extract import RegionSet, extract_regions
from deepfeat.tasks.detection.proposals import ProposalOptions, compute_proposals
from deepfeat.tasks.detection.regions import RegionEncoder, RegionOptions


@pytest.fixture
def setup(voc_root, lite0):
    ds = voc_dataset(voc_root, split="all").subset(range(5))
    props = compute_proposals(ds, ProposalOptions(width=None, max_proposals=6), workers=0, progress=False)
    regions = RegionSet.build(ds, props, with_gt=True)
    enc = RegionEncoder(lite0, [("pool", "avg"), ("stage6", "grid1")], RegionOptions(size=32, padding=4))
    return ds, regions, enc


def test_region_set_puts_annotated_boxes_first(setup):
    ds, regions, _ = setup
    assert regions.n_gt == [len(t) for t in ds.images]
    for t, b in zip(ds.images, regions.boxes):
        np.testing.assert_array_equal(b[: len(t)], t.boxes)
    assert len(regions) == regions.offsets[-1] == sum(len(b) for b in regions.boxes)
    assert len(set(regions.row_ids())) == len(regions)


def test_store_caches_and_memory_agrees(setup, tmp_path):
    ds, regions, enc = setup
    first = extract_regions(ds, regions, enc, store=tmp_path / "s", progress=False)
    assert first.n_computed == len(regions) and not first.failures
    again = extract_regions(ds, regions, enc, store=tmp_path / "s", progress=False)
    assert again.n_computed == 0
    memory = extract_regions(ds, regions, enc, store=None, progress=False)
    for key in ("pool", "stage6/grid1"):
        np.testing.assert_array_equal(
            np.asarray(again.features[key].data), np.asarray(first.features[key].data)
        )
        np.testing.assert_allclose(
            np.asarray(memory.features[key].data), np.asarray(first.features[key].data)
        )
        assert again.features[key].valid.all()
    assert first.features["pool"].dim == 1280 and first.features["stage6/grid1"].dim == 192


def test_interrupted_run_resumes_to_the_same_features(setup, tmp_path, monkeypatch):
    ds, regions, enc = setup
    whole = extract_regions(ds, regions, enc, store=tmp_path / "a", progress=False)
    calls = {"n": 0}
    original = enc.encode

    def flaky(image, boxes):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(image, boxes)

    monkeypatch.setattr(enc, "encode", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract_regions(ds, regions, enc, store=tmp_path / "b", progress=False)
    monkeypatch.setattr(enc, "encode", original)
    resumed = extract_regions(ds, regions, enc, store=tmp_path / "b", progress=False)
    done_before = regions.offsets[2]  # two images were journaled before the interruption
    assert resumed.n_computed == len(regions) - done_before
    for key in whole.features:
        np.testing.assert_array_equal(
            np.asarray(resumed.features[key].data), np.asarray(whole.features[key].data)
        )


def test_undecodable_image_is_reported_and_its_rows_invalid(setup, tmp_path):
    ds, regions, enc = setup
    ds.images[1].path.write_bytes(b"\xff\xd8 truncated")
    out = extract_regions(ds, regions, enc, store=tmp_path / "s", progress=False)
    assert [p for p, _ in out.failures] == [str(ds.images[1].path)]
    f = out.features["pool"]
    assert not f.image_valid(1) and f.image_valid(0) and f.image_valid(2)
    assert int((~f.valid).sum()) == len(regions.boxes[1])
    assert np.isnan(np.asarray(f.data)[regions.offsets[1] : regions.offsets[2]]).all()
