"""Trials 2, 4 and 5: a damaged store entry is never read as if it were whole; a missing or broken
meta.json is recoverable; failed images are NaN rows with a validity mask."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from deepfeat.data.datasets import folder_dataset
from deepfeat.errors import ConfigError, StoreError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import extract, load_features
from tests.reliability.conftest import TINY, make_tree


@pytest.fixture
def tree(tmp_path) -> Path:
    root = make_tree(tmp_path / "tree", classes=("cat", "dog", "eel", "fox"), per_class=3)
    (root / "fox" / "zz-broken.png").write_bytes(b"")
    return root


def run(tree, effnet, store, layers="stage6", pool="avg"):
    return extract(
        folder_dataset(tree),
        effnet,
        [LayerActivations(layers, pool)],
        store=store,
        preprocess=TINY,
        batch_size=4,
        workers=0,
        progress=False,
    )


def only_entry(store: Path, pool: str = "avg") -> Path:
    (path,) = [p for p in (store / "entries").iterdir() if f"-{pool}-" in p.name]
    return path


def test_half_a_journal_is_repaired_by_extract_and_refused_by_load_features(tree, effnet, tmp_path):
    store = tmp_path / "store"
    clean = run(tree, effnet, store)["stage6/avg"]
    entry = only_entry(store)
    journal = entry / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[: len(lines) // 2]))  # the damage
    ds = folder_dataset(tree)
    with pytest.raises(StoreError) as info:  # evaluate --no-extract: refuse, naming entry and remedy
        load_features(ds, effnet, [LayerActivations("stage6", "avg")], store, preprocess=TINY)
    message = str(info.value)
    assert str(entry) in message and "says complete but the journal covers" in message
    assert "run the extraction again" in message and "\n" not in message
    again = run(tree, effnet, store)  # extract: repair, recompute only what is missing
    assert again.repaired and again.repaired[0][0] == str(entry)
    assert 0 < again.n_forward < len(ds)
    fs = again["stage6/avg"]
    assert len(fs) == len(clean) == 12 and fs.ids == clean.ids
    np.testing.assert_allclose(np.asarray(fs.features), np.asarray(clean.features), atol=1e-5)
    third = run(tree, effnet, store)
    assert third.n_forward == 0 and not third.repaired and third.origins["stage6/avg"] == "store"


def test_changed_feature_bytes_are_caught_by_the_checksums(tree, effnet, tmp_path):
    store = tmp_path / "store"
    clean = np.asarray(run(tree, effnet, store)["stage6/avg"].features)
    rows = np.load(only_entry(store) / "features.npy", mmap_mode="r+")
    rows[2] *= 2
    rows.flush()
    del rows
    again = run(tree, effnet, store)
    assert "journal checksum" in again.repaired[0][1] and again.n_forward == 4  # one batch redone
    np.testing.assert_allclose(np.asarray(again["stage6/avg"].features), clean, atol=1e-5)


def test_missing_or_broken_meta_is_recovered(tree, effnet, tmp_path):
    store = tmp_path / "store"
    first = run(tree, effnet, store, pool="unroll")
    entry = only_entry(store, "unroll")
    shape = json.loads((entry / "meta.json").read_text())["layer_shape"]
    for damage in ("delete", "{not json"):
        if damage == "delete":
            (entry / "meta.json").unlink()
        else:
            (entry / "meta.json").write_text(damage)
        again = run(tree, effnet, store, pool="unroll")
        assert again.n_forward == 0 and not again.repaired  # nothing recomputed
        meta = json.loads((entry / "meta.json").read_text())
        assert meta["complete"] and meta["layer_shape"] == shape and meta["dim"] == first["stage6/unroll"].dim
    # the ablations that read the layer shape work from the rebuilt entry, without the network
    derived = run(tree, effnet, store, pool=["max", "bin"])
    assert derived.n_forward == 0 and set(derived.origins.values()) == {"derived"}


def test_meta_deleted_from_a_partial_entry_resumes(tree, effnet, tmp_path):
    store = tmp_path / "store"
    run(tree, effnet, store)
    entry = only_entry(store)
    lines = (entry / "journal.jsonl").read_text().splitlines(keepends=True)
    (entry / "journal.jsonl").write_text(lines[0])  # as if killed after the first batch
    for name in ("meta.json", "valid.npy"):
        (entry / name).unlink()
    (entry / ".meta.json.999999999.tmp").write_text("{")  # left by a killed writer
    again = run(tree, effnet, store)
    assert again.n_forward == 13 - 4 - 1 and not again.repaired  # the broken image fails to decode
    assert not list(entry.glob(".*.tmp*")) and json.loads((entry / "meta.json").read_text())["complete"]


def test_failed_images_are_nan_rows_with_a_mask(tree, effnet, tmp_path):
    store = tmp_path / "store"
    res = run(tree, effnet, store)
    entry = only_entry(store)
    ds = folder_dataset(tree)
    bad = ds.ids.index("fox/zz-broken.png")
    rows = np.load(entry / "features.npy")  # what a user reading the array directly gets
    valid = np.load(entry / "valid.npy")
    assert valid.sum() == 12 and not valid[bad]
    assert np.isnan(rows[bad]).all() and np.isfinite(rows[valid]).all()
    np.testing.assert_array_equal(rows[valid], np.asarray(res["stage6/avg"].features))
    meta = json.loads((entry / "meta.json").read_text())
    assert (meta["n_valid"], meta["n_failed"]) == (12, 1)
    assert res["stage6/avg"].class_counts().tolist() == [3, 3, 3, 3]


@pytest.mark.parametrize("device", ["garbage", "mps", "meta", "", "torch.device('meta')"])
def test_reading_the_store_refuses_a_device_that_is_not_one(tree, effnet, tmp_path, device):
    import torch

    device = torch.device("meta") if device.startswith("torch.") else device
    store = tmp_path / "store"
    clean = run(tree, effnet, store)["stage6/avg"]
    ds = folder_dataset(tree)
    with pytest.raises(ConfigError, match="device must be 'cpu', 'cuda' or 'cuda:<index>'"):
        load_features(ds, effnet, [LayerActivations("stage6", "avg")], store, preprocess=TINY, device=device)
    got = load_features(ds, effnet, [LayerActivations("stage6", "avg")], store, preprocess=TINY, device="cpu")
    assert got["stage6/avg"].ids == clean.ids


def _edit_meta(entry: Path, **changes) -> None:
    meta = json.loads((entry / "meta.json").read_text())
    meta.update(changes)
    (entry / "meta.json").write_text(json.dumps(meta, indent=1))


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda e: _edit_meta(e, n_valid=13, n_failed=0), "meta.json says n_valid 13, the journal 12"),
        (lambda e: _edit_meta(e, dim=191), "meta.json says dim 191, features.npy holds"),
        (lambda e: _edit_meta(e, layer_shape=[1, 2, 3]), "meta.json says layer_shape [1, 2, 3]"),
        (lambda e: _edit_meta(e, ids_sha256="0" * 64), "other item ids"),
    ],
)
def test_edits_of_a_complete_entrys_bookkeeping_are_named_and_repaired(tree, effnet, tmp_path, damage, named):
    """(Only provenance edits were caught: store list said complete after n_valid / dim / layer_shape
    edits or without valid.npy, export went ahead, and extraction never corrected the counts.)"""
    from deepfeat.features.store import FeatureStore

    store = tmp_path / "store"
    clean = run(tree, effnet, store)["stage6/avg"]
    entry = only_entry(store)
    before = json.loads((entry / "meta.json").read_text())
    damage(entry)
    (state,) = [s for m, s in FeatureStore(store).check_entries() if m["path"] == str(entry)]
    assert any(named in p for p in state.problems), state.problems
    ds = folder_dataset(tree)
    with pytest.raises(StoreError, match="damaged store entry"):
        load_features(ds, effnet, [LayerActivations("stage6", "avg")], store, preprocess=TINY)
    again = run(tree, effnet, store)
    assert again.repaired and again["stage6/avg"].ids == clean.ids
    np.testing.assert_array_equal(np.asarray(again["stage6/avg"].features), np.asarray(clean.features))
    after = json.loads((entry / "meta.json").read_text())
    for key in ("n_valid", "n_failed", "dim", "layer_shape", "complete", "ids_sha256"):
        assert after[key] == before[key], key
    if "ids" not in named:
        assert again.n_forward == 0  # the bookkeeping was rebuilt, no row recomputed


def test_a_missing_mask_is_listed_as_unfinished_and_rebuilt_without_computing(tree, effnet, tmp_path):
    """(store list called the entry complete, and a reader of valid.npy found no file.)"""
    from typer.testing import CliRunner

    from deepfeat.cli.main import app

    store = tmp_path / "store"
    run(tree, effnet, store)
    entry = only_entry(store)
    mask = np.load(entry / "valid.npy")
    (entry / "valid.npy").unlink()
    listed = CliRunner().invoke(app, ["store", "list", str(store)])
    assert (
        listed.exit_code == 0
        and " unfinished " in listed.output
        and "1 entry holds every row" in listed.output
    )
    again = run(tree, effnet, store)
    assert again.n_forward == 0 and not again.repaired
    np.testing.assert_array_equal(np.load(entry / "valid.npy"), mask)


def test_a_features_file_cut_short_keeps_the_batches_before_the_cut(tree, effnet, tmp_path):
    """(A truncated features.npy was deleted whole: every row computed again, the intact ones too.)"""
    store = tmp_path / "store"
    clean = run(tree, effnet, store)["stage6/avg"]
    entry = only_entry(store)
    path = entry / "features.npy"
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)
        np.lib.format.read_array_header_1_0(fh)
        offset = fh.tell()
    dim = np.asarray(clean.features).shape[1]
    os.truncate(path, offset + 5 * dim * 4 + 10)  # rows 0-4 whole: the first batch of 4 survives
    ds = folder_dataset(tree)
    with pytest.raises(StoreError, match=r"cut short"):
        load_features(ds, effnet, [LayerActivations("stage6", "avg")], store, preprocess=TINY)
    again = run(tree, effnet, store)
    assert again.repaired and "cut short" in again.repaired[0][1]
    # only the batches past the cut went through the network (the broken file's row holds no data)
    assert again.n_forward == len(ds) - 4 - 1
    np.testing.assert_allclose(
        np.asarray(again["stage6/avg"].features), np.asarray(clean.features), atol=1e-5
    )
    assert run(tree, effnet, store).n_forward == 0
