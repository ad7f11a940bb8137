from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from deepfeat.errors import ConfigError, StoreError
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
    assert np.isnan(data[5]).all()  # failed rows are NaN, never zeros


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


def test_numpy_scalars_key_the_entry_of_their_python_value(tmp_path):
    # (json's default=str wrote np.int64(3) as "3": another key, the features computed again)
    numeric = dict(PROV, seed=3, scale=0.5)
    as_numpy = dict(PROV, seed=np.int64(3), scale=np.float32(0.5))
    assert provenance_key(as_numpy) == provenance_key(numeric)
    store = FeatureStore(tmp_path)
    assert store.entry(as_numpy, 2).path == store.entry(numeric, 2).path
    # keys of plain values are what they were (stores written before stay readable)
    text = json.dumps(numeric, sort_keys=True, separators=(",", ":"), default=str)
    assert provenance_key(numeric) == hashlib.sha256(text.encode()).hexdigest()[:20]


def test_shape_change_is_refused(tmp_path):
    entry = FeatureStore(tmp_path).entry(PROV, 3)
    entry.lock()
    entry.write(np.array([0]), np.ones((1, 4)), (4,))
    entry.commit([0])
    with pytest.raises(StoreError, match="dimension changed"):
        entry.write(np.array([1]), np.ones((1, 5)), (5,))
    entry.unlock()


def complete_entry(root, n=6, dim=3, failed=(5,)):
    """A finished entry: rows i hold i + column / 10, ``failed`` rows failed; written in 2 batches."""
    entry = FeatureStore(root).entry(PROV, n, IDS[:n])
    entry.lock()
    values = np.arange(n)[:, None] + np.arange(dim)[None, :] / 10
    good = [r for r in range(n) if r not in failed]
    for batch in (good[: len(good) // 2], good[len(good) // 2 :]):
        entry.write(np.array(batch), values[batch], (dim, 1, 1))
        entry.commit(batch)
    entry.commit([], failed={r: "broken" for r in failed})
    assert entry.finish_if_complete()
    entry.unlock()
    return FeatureStore(root).find(PROV, n, IDS[:n]), values.astype(np.float32)


IDS = [f"img{i}.png" for i in range(10)]


def test_failed_rows_are_nan_and_the_mask_is_stored(tmp_path):
    entry, values = complete_entry(tmp_path)
    rows = np.load(entry.path / "features.npy")
    valid = np.load(entry.path / "valid.npy")
    assert valid.tolist() == [True] * 5 + [False]
    assert np.isnan(rows[5]).all()
    np.testing.assert_array_equal(rows[valid], values[:5])
    state = entry.check()
    assert state.finished and not state.problems and state.layer_shape == (3, 1, 1)


def test_broken_or_missing_meta_is_rebuilt(tmp_path):
    entry, _ = complete_entry(tmp_path)
    for damage in ("{broken", None):
        if damage is None:
            (entry.path / "meta.json").unlink()
        else:
            (entry.path / "meta.json").write_text(damage)
        found = FeatureStore(tmp_path).find(PROV, 6, IDS[:6])
        state = found.check()
        assert not state.problems and state.complete and not state.finished
        assert state.dim == 3 and state.layer_shape == (3, 1, 1)  # from the .npy header and the journal
        found.lock()
        assert found.repair() == [] and found.finish_if_complete()
        found.unlock()
        meta = json.loads((entry.path / "meta.json").read_text())
        assert meta["complete"] and meta["dim"] == 3 and meta["layer_shape"] == [3, 1, 1]
        assert found.check().finished


@pytest.mark.parametrize("damage", [b"", b"\x93NUMPY"])
def test_an_empty_or_cut_mask_is_rebuilt_from_the_journal(tmp_path, damage):
    """(An empty valid.npy made numpy raise EOFError, which escaped as the CLI's bare "Aborted!".)"""
    entry, _ = complete_entry(tmp_path)
    (entry.path / "valid.npy").write_bytes(damage)
    found = FeatureStore(tmp_path).find(PROV, 6, IDS[:6])
    state = found.check()
    assert not state.problems and state.complete and not state.finished
    assert found.status().valid.tolist() == [True] * 5 + [False]
    found.lock()
    assert found.repair() == [] and found.finish_if_complete()
    found.unlock()
    assert np.load(entry.path / "valid.npy").tolist() == [True] * 5 + [False]


def test_other_provenance_in_meta_is_refused(tmp_path):
    entry = FeatureStore(tmp_path).entry(PROV, 3)
    (entry.path / "meta.json").write_text(json.dumps({"provenance": {"other": 1}, "n_rows": 3}))
    with pytest.raises(StoreError, match=r"does not match the entry's key.*delete this entry folder"):
        FeatureStore(tmp_path).find(PROV, 3)


def test_truncated_journal_is_damage_and_repair_keeps_what_is_intact(tmp_path):
    entry, _ = complete_entry(tmp_path)
    journal = entry.path / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text(lines[0])  # only the first batch survives
    state = entry.check()
    assert not state.complete and "says complete but the journal covers 2 of 6 rows" in state.problems[0]
    entry.lock()
    assert entry.repair()
    entry.unlock()
    assert not (entry.path / "valid.npy").exists() and not entry.meta["complete"]
    assert entry.status().done.tolist() == [True, True, False, False, False, False]
    assert entry.check().problems == []


def test_changed_rows_fail_their_checksum(tmp_path):
    entry, _ = complete_entry(tmp_path)
    data = np.load(entry.path / "features.npy", mmap_mode="r+")
    data[3, 1] += 1.0
    data.flush()
    del data
    state = entry.check()
    assert "3 rows of features.npy do not match their journal checksum" in "; ".join(state.problems)
    assert entry.check(checksums=False).problems == []  # only the checksums see it
    entry.lock()
    entry.repair()
    entry.unlock()
    assert entry.status().done.tolist() == [True, True, False, False, False, True]  # batch 2 to redo


def test_a_feature_file_cut_short_keeps_its_whole_rows_and_a_foreign_one_drops_every_row(tmp_path):
    entry, values = complete_entry(tmp_path)
    path = entry.path / "features.npy"
    full = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-8])  # inside row 5 (failed, NaN): rows 0-4 whole
    state = entry.check()
    assert state.cut_short and not state.data_bad and "cut short" in "; ".join(state.problems)
    entry.lock()
    entry.repair()
    entry.unlock()
    assert path.stat().st_size == full and entry.status().done.all()  # nothing lost
    np.testing.assert_array_equal(np.load(path)[:5], values[:5])
    path.write_bytes(path.read_bytes()[: full - 3 * 12 - 4])  # inside row 3: the batch [2, 3, 4] is lost
    entry.lock()
    entry.repair()
    entry.unlock()
    assert path.stat().st_size == full and entry.status().done.tolist() == [
        True,
        True,
        False,
        False,
        False,
        True,
    ]
    path.write_bytes(path.read_bytes()[:40])  # inside the header: nothing can be read
    assert entry.check().data_bad
    complete_entry(tmp_path / "b")
    found = FeatureStore(tmp_path / "b").find(PROV, 6, IDS[1:7])  # other items than it holds
    assert "other item ids" in "; ".join(found.check().problems)


def test_repair_trims_a_torn_line_and_removes_dead_temp_files(tmp_path):
    entry = FeatureStore(tmp_path).entry(PROV, 4)
    entry.lock()
    entry.write(np.array([0, 1]), np.ones((2, 3)), (3,))
    entry.commit([0, 1])
    entry.unlock()
    with open(entry.path / "journal.jsonl", "a") as fh:
        fh.write('{"rows": [[2, 4]], "fai')
    dead = entry.path / ".meta.json.999999999.tmp"
    dead.write_text("x")
    mine = entry.path / f".meta.json.{os.getpid()}.tmp"
    mine.write_text("x")
    assert entry.check().problems == []  # a torn last line is an interruption, not damage
    entry.lock()
    assert entry.repair() == []
    entry.write(np.array([2, 3]), np.ones((2, 3)), (3,))
    entry.commit([2, 3])
    entry.unlock()
    assert not dead.exists() and mine.exists()
    assert entry.status().done.all() and entry.check().problems == []


def test_meta_json_is_not_needed_for_the_dimension(tmp_path):
    """A run killed after features.npy was allocated and before anything else resumes."""
    entry = FeatureStore(tmp_path).entry(PROV, 3)
    entry.lock()
    entry.write(np.array([0]), np.ones((1, 4)), (4,))
    entry.unlock()  # killed before the commit
    again = FeatureStore(tmp_path).find(PROV, 3)
    assert again.meta_dim() == 4 and again.meta["dim"] is None
    again.lock()
    again.write(np.array([0, 1, 2]), np.ones((3, 4)), (4,))
    again.commit([0, 1, 2])
    assert again.finish_if_complete()
    again.unlock()


def test_store_path_must_be_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        FeatureStore(tmp_path / "f")


@pytest.mark.parametrize("inside", ["", "features"])
def test_a_store_in_the_image_folder_is_not_read_as_classes(image_tree, inside):
    """A store at the data folder's root (``extract data --store data``) or inside it: its entries/
    and datasets/ folders became classes on the next run, which then recomputed everything."""
    from deepfeat.data.datasets import folder_dataset

    before = folder_dataset(image_tree)
    store = FeatureStore(image_tree / inside)
    store.entry(PROV, 3)
    store.save_dataset_index(before.fingerprint(), before.index_record())
    after = folder_dataset(image_tree)
    assert after.classes == before.classes and after.fingerprint() == before.fingerprint()


def test_a_store_of_another_type_is_named():
    from deepfeat.features.store import as_store

    with pytest.raises(ConfigError, match="store must be a folder path or a FeatureStore, got int 123"):
        as_store(123)
    assert as_store(None) is None
    with pytest.raises(ConfigError, match="a feature store is a folder path, got NoneType"):
        FeatureStore(None)
