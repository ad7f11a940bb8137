from __future__ import annotations

import json

import numpy as np
import pytest

from deepfeat.errors import StoreError
from deepfeat.features.store import FeatureStore, provenance_key

PROV = {"dataset": "abc", "layer": "head", "pool": "avg", "weights_id": "w"}


def test_write_commit_read_memmapped(tmp_path):
    store = FeatureStore(tmp_path)
    entry = store.entry(PROV, 6)
    entry.lock()
    values = np.arange(12, dtype=np.float32).reshape(6, 2)
    entry.write(np.array([4, 0, 1]), values[[4, 0, 1]], (2,))
    entry.commit([4, 0, 1])
    entry.write(np.array([2, 3]), values[[2, 3]], (2,))
    entry.commit([2, 3], failed={5: "empty file"})
    assert entry.finish_if_complete()
    entry.unlock()
    again = FeatureStore(tmp_path).find(PROV, 6)
    assert again.complete and again.row_shape == (2,)
    data = again.read()
    assert isinstance(data, np.memmap) and not data.flags.writeable
    status = again.status()
    np.testing.assert_array_equal(data[status.valid], values[:5])
    assert status.failed == {5: "empty file"}
    assert again.meta["n_valid"] == 5


def test_uncommitted_rows_are_not_done(tmp_path):
    entry = FeatureStore(tmp_path).entry(PROV, 4)
    entry.lock()
    entry.write(np.array([0, 1]), np.ones((2, 3)), (3,))
    entry.commit([0])
    entry.write(np.array([2]), np.ones((1, 3)), (3,))  # written, never journaled (killed here)
    entry.unlock()
    assert entry.status().done.tolist() == [True, False, False, False]
    assert not entry.finish_if_complete()


def test_torn_journal_line_is_ignored(tmp_path):
    entry = FeatureStore(tmp_path).entry(PROV, 4)
    entry.lock()
    entry.write(np.array([0, 1]), np.ones((2, 3)), (3,))
    entry.commit([0, 1])
    entry.unlock()
    with open(entry.path / "journal.jsonl", "a") as fh:
        fh.write('{"rows": [[2, 4]], "fai')  # process killed mid-line
    assert entry.status().done.tolist() == [True, True, False, False]


def test_lock_is_exclusive(tmp_path):
    store = FeatureStore(tmp_path)
    a = store.entry(PROV, 2)
    a.lock()
    b = FeatureStore(tmp_path).entry(PROV, 2)
    with pytest.raises(StoreError, match="another run is writing"):
        b.lock()
    a.unlock()
    b.lock()
    b.unlock()


def test_keys_differ_by_any_provenance_field(tmp_path):
    other = dict(PROV, pool="max")
    assert provenance_key(PROV) != provenance_key(other)
    assert provenance_key(PROV) == provenance_key(dict(reversed(list(PROV.items()))))
    store = FeatureStore(tmp_path)
    assert store.entry(PROV, 2).path != store.entry(other, 2).path
    assert len(store.entries()) == 2


def test_shape_change_is_refused(tmp_path):
    entry = FeatureStore(tmp_path).entry(PROV, 3)
    entry.lock()
    entry.write(np.array([0]), np.ones((1, 4)), (4,))
    entry.commit([0])
    with pytest.raises(StoreError, match="dimension changed"):
        entry.write(np.array([1]), np.ones((1, 5)), (5,))
    entry.unlock()


def test_damaged_meta_is_reported(tmp_path):
    entry = FeatureStore(tmp_path).entry(PROV, 3)
    (entry.path / "meta.json").write_text("{broken")
    with pytest.raises(StoreError, match=r"unreadable meta\.json"):
        FeatureStore(tmp_path).find(PROV, 3)
    meta = {"provenance": {"other": 1}, "n_rows": 3}
    (entry.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="does not match"):
        FeatureStore(tmp_path).find(PROV, 3)


def test_store_path_must_be_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        FeatureStore(tmp_path / "f")
