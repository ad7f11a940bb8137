"""Exports of store entries and feature sets, read back with each format's own reader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from deepfeat.backbones import load_backbone
from deepfeat.cli.main import app
from deepfeat.data.datasets import folder_dataset
from deepfeat.errors import ConfigError, StoreError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.export import FORMATS, SUFFIXES, export_entry, export_features, from_store
from deepfeat.features.featureset import FeatureSet
from deepfeat.features.pipeline import extract
from deepfeat.features.store import FeatureStore
from tests.conftest import SMALL

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def store_with_failures(tmp_path_factory):
    """A store entry of the bad tree: 12 decodable images and 4 bad files (NaN rows, invalid)."""
    from PIL import Image

    from tests.conftest import photo, png_header_only, save, truncated_jpeg

    root = tmp_path_factory.mktemp("export") / "tree"
    for c, name in enumerate(["ants", "bees", "wasps"]):
        for i in range(4):
            save(Image.fromarray(photo(10 * c + i)), root / name / f"img{i}.png")
    (root / "ants" / "zero.jpg").write_bytes(b"")
    (root / "bees" / "truncated.jpg").write_bytes(truncated_jpeg())
    (root / "wasps" / "bomb.png").write_bytes(png_header_only(30000, 30000))
    store = root.parent / "store"
    data = folder_dataset(root)
    bb = load_backbone("efficientnet_lite0", weights="random")
    res = extract(
        data,
        bb,
        [LayerActivations(["stage3"], ["avg", "max"])],
        store=store,
        preprocess=SMALL,
        progress=False,
    )
    assert len(res.failures) == 3
    return store, data


def read(path, to):
    """(features, valid, ids, labels, header) through the format's own reader."""
    if to.startswith("parquet"):
        t = pq.read_table(path)
        header = json.loads(t.schema.metadata[b"deepfeat"])
        if header["parquet_layout"] == "list":
            feats = np.asarray(t.column("features").combine_chunks().flatten()).reshape(t.num_rows, -1)
        else:
            feats = np.column_stack([t.column(f"f{i}").to_numpy() for i in range(header["dim"])])
        return (
            feats,
            t.column("valid").to_numpy(),
            t.column("id").to_pylist(),
            t.column("label").to_pylist(),
            header,
        )
    if to == "npz":
        z = np.load(path, allow_pickle=False)
        header = json.loads(str(z["deepfeat_json"]))
        labels = [header["classes"][t] for t in z["targets"]]
        return z["features"], z["valid"], z["ids"].tolist(), labels, header
    if to == "hdf5":
        with h5py.File(path, "r") as f:
            header = json.loads(f.attrs["deepfeat"])
            ids = [x.decode() for x in f["ids"][:]]
            labels = [header["classes"][t] for t in f["targets"][:]]
            return f["features"][:], f["valid"][:], ids, labels, header
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_from_disk(str(path))
    header = json.loads((path / "deepfeat.json").read_text())
    assert json.loads(ds.info.description) == header
    feats = np.asarray(ds.with_format("numpy")["features"], dtype=np.float32)
    names = ds.features["target"].names
    return feats, np.asarray(ds["valid"]), list(ds["id"]), [names[t] for t in ds["target"]], header


@pytest.mark.parametrize("to", [*FORMATS, "parquet-list"])
def test_export_round_trip(store_with_failures, tmp_path, to, monkeypatch):
    if to == "hf":
        pytest.importorskip("datasets")
    monkeypatch.setattr("deepfeat.features.export.ROWS_PER_GROUP", 4)  # several row groups
    store, data = store_with_failures
    entry = FeatureStore(store).entries()
    folder = next(m["path"] for m in entry if m["provenance"]["pool"] == "avg")
    options = {"parquet_layout": "list"} if to == "parquet-list" else {}
    path = export_entry(store, "stage3/avg", to.split("-")[0], tmp_path / f"out.{to}", **options)
    feats, valid, ids, labels, header = read(path, to)
    stored = np.load(f"{folder}/features.npy")
    np.testing.assert_array_equal(valid, np.load(f"{folder}/valid.npy"))
    assert valid.sum() == 12 and np.isnan(feats[~valid]).all()
    np.testing.assert_array_equal(feats[valid], stored[valid])
    assert ids == data.ids and labels == [data.classes[t] for t in data.targets]
    meta = json.loads(Path(folder, "meta.json").read_text())
    assert header["provenance"]["dataset"] == meta["provenance"]["dataset"] == data.fingerprint()
    assert header["provenance"]["weights_id"] == "random:seed=0" and header["schema"] == 1
    assert header["layer_shape"] == meta["layer_shape"] and header["n_valid"] == 12


def test_cli_export_and_entry_names(store_with_failures, tmp_path):
    store, _ = store_with_failures
    result = CliRunner().invoke(app, ["store", "export", str(store), "stage3/max", "--to", "parquet"])
    assert result.exit_code == 0, result.output
    written = next((store / "exports").glob("stage3-max-*.parquet"))
    back = pq.read_table(written)
    assert back.num_rows == 15 and back.column_names[:5] == ["id", "target", "label", "valid", "f0"]
    assert pq.ParquetFile(written).metadata.num_columns == 4 + 40
    result = CliRunner().invoke(app, ["store", "export", str(store), "stage3/sum", "--to", "npz"])
    assert result.exit_code == 2 and "no entry 'stage3/sum'" in result.output
    result = CliRunner().invoke(app, ["store", "export", str(store), "stage3", "--to", "npz"])
    assert result.exit_code == 2 and "matches 2 entries" in result.output
    result = CliRunner().invoke(app, ["store", "export", str(store), "stage3/max", "--to", "csv"])
    assert result.exit_code == 2 and "parquet" in result.output


def test_bad_targets_and_compressions_are_refused_by_name(store_with_failures, tmp_path):
    """(They escaped as IsADirectoryError, OSError, pyarrow's ArrowException or h5py's ValueError.)"""
    store, _ = store_with_failures
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="folder: is a folder; a npz export is one file"):
        export_entry(store, "stage3/max", "npz", tmp_path / "folder")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot write the export there"):
        export_entry(store, "stage3/max", "npz", tmp_path / "file" / "x.npz")
    with pytest.raises(ConfigError, match=r"compression 'foo' is not available for parquet .*valid: snappy"):
        export_entry(store, "stage3/max", "parquet", tmp_path / "a.parquet", compression="foo")
    # pyarrow has bz2, parquet does not
    with pytest.raises(ConfigError, match=r"compression 'bz2' is not available for parquet"):
        export_entry(store, "stage3/max", "parquet", tmp_path / "a.parquet", compression="bz2")
    with pytest.raises(ConfigError, match=r"compression 'zstd' is not available for hdf5 .*valid: gzip, lzf"):
        export_entry(store, "stage3/max", "hdf5", tmp_path / "a.h5", compression="zstd")
    with pytest.raises(ConfigError, match="compression applies to parquet and hdf5"):
        export_entry(store, "stage3/max", "npz", tmp_path / "a.npz", compression="gzip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]  # nothing half-written
    result = CliRunner().invoke(
        app, ["store", "export", str(store), "stage3/max", "--to", "npz", "-o", str(tmp_path / "folder")]
    )
    assert result.exit_code == 2 and "is a folder" in result.output and "Traceback" not in result.output
    written = export_entry(store, "stage3/max", "hdf5", tmp_path / "g.h5", compression="gzip")
    with h5py.File(written) as f:
        assert f["features"].compression == "gzip"


def test_incomplete_entry_is_refused(store_with_failures, tmp_path):
    store, _ = store_with_failures
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    folder = next(p for p in (copy / "entries").iterdir() if p.name.startswith("stage3-avg"))
    (folder / "journal.jsonl").write_text("")  # as if the run had stopped before its first batch
    (folder / "valid.npy").unlink()
    with pytest.raises(StoreError, match="incomplete or damaged"):
        from_store(copy, "stage3/avg")
    with pytest.raises(ConfigError, match="not a feature store"):
        from_store(tmp_path, "x")


def test_edited_store_files_are_named_by_list_and_refused_by_export(store_with_failures, tmp_path):
    """A hand-edited dataset index (labels) or entry provenance, or a missing meta.json, is damage that
    ``store list`` names and export refuses; extracting again rewrites the index."""
    store, data = store_with_failures
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    runner = CliRunner()
    index = next((copy / "datasets").glob("*.json"))
    record = json.loads(index.read_text())
    record["targets"] = record["targets"][::-1]  # every label now wrong
    index.write_text(json.dumps(record))
    r = runner.invoke(app, ["store", "list", str(copy)])
    assert r.exit_code == 0 and "does not match its checksum" in r.output and "complete" not in r.output
    with pytest.raises(StoreError, match="does not match its checksum"):
        from_store(copy, "stage3/avg")
    bb = load_backbone("efficientnet_lite0", weights="random")
    extract(data, bb, [LayerActivations(["stage3"], ["avg"])], store=copy, preprocess=SMALL, progress=False)
    assert from_store(copy, "stage3/avg").targets.tolist() == data.targets.tolist()

    folder = next(p for p in (copy / "entries").iterdir() if p.name.startswith("stage3-max"))
    meta = folder / "meta.json"
    meta.write_text(meta.read_text().replace('"layer": "stage3"', '"layer": "stage5"'))
    r = runner.invoke(app, ["store", "list", str(copy)])
    assert "provenance in meta.json does not match the entry's key" in r.output
    # extraction refuses such an entry (its data may belong to either provenance): the advice says so
    assert "delete those entry folders" in r.output and "repairs them" not in r.output
    with pytest.raises(
        StoreError, match=r"cannot export a damaged entry.*delete this entry folder and extract"
    ):
        from_store(copy, "stage5/max")
    meta.unlink()
    r = runner.invoke(
        app, ["store", "export", str(copy), folder.name, "--to", "npz", "--out", str(tmp_path / "x")]
    )
    assert r.exit_code == 2 and "meta.json missing or unreadable" in r.output and "Traceback" not in r.output


def test_feature_set_to_pandas_and_export(tmp_path):
    pd = pytest.importorskip("pandas")
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    fs = FeatureSet(
        "pool",
        X,
        ["a", "b", "c", "d"],
        np.array([0, 1, 1, 0]),
        ["cat", "dog"],
        np.arange(4),
        {"layer": "pool"},
        splits=np.array(["train", "train", "test", "test"], dtype=object),
    )
    df = fs.to_pandas()
    assert list(df.columns) == ["label", "target", "split", "f0", "f1", "f2"]
    assert df.index.tolist() == ["a", "b", "c", "d"] and df.loc["c", "label"] == "dog"
    np.testing.assert_array_equal(df[["f0", "f1", "f2"]].to_numpy(), X)
    assert df.attrs["provenance"] == {"layer": "pool"} and isinstance(df, pd.DataFrame)
    multi = FeatureSet(
        "m",
        X,
        ["a", "b", "c", "d"],
        np.array([[1, 0], [1, 1], [0, 1], [0, 0]], np.uint8),
        ["cat", "dog"],
        np.arange(4),
        {},
    )
    assert multi.to_pandas()["label"].tolist() == [["cat"], ["cat", "dog"], ["dog"], []]
    path = export_features(multi, tmp_path / "m.parquet", "parquet")
    back = pq.read_table(path).to_pandas()
    assert back["target"].tolist()[1].tolist() == [1, 1]
    np.testing.assert_array_equal(back[["f0", "f1", "f2"]].to_numpy(), X)


@pytest.mark.parametrize("to", FORMATS)
def test_export_writes_only_its_target(store_with_failures, tmp_path, to, monkeypatch):
    """Regression: a draft of the hf export saved the dataset under the repr of its ClassLabel feature
    in the working directory; nothing may land outside the target, and no temporary file is left."""
    if to == "hf":
        pytest.importorskip("datasets")
    store, _ = store_with_failures
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    path = export_entry(store, "stage3/avg", to, out / f"features{SUFFIXES[to]}")
    assert list(cwd.iterdir()) == [] and [p.name for p in out.iterdir()] == [path.name]
    assert path.is_dir() == (to == "hf")


def test_blocked_transpose_equals_numpy():
    from deepfeat.features.export import _transposed

    x = np.random.default_rng(0).standard_normal((1000, 7), dtype=np.float32)
    for block in (1, 64, 999, 1000, 4096):
        out = _transposed(x, block=block)
        assert out.flags.c_contiguous and np.array_equal(out, x.T)


def test_a_vector_layer_is_found_by_its_feature_key_or_any_pooling(store_with_failures, tmp_path):
    """``--layers pool --pool avg`` stores pool/unroll (every pooling of a vector is the identity) and
    evaluations call it ``pool``: export found it only as pool/unroll."""
    from deepfeat.features.export import find_entry

    _, data = store_with_failures
    store = tmp_path / "store"
    bb = load_backbone("efficientnet_lite0", weights="random")
    extract(
        data,
        bb,
        [LayerActivations(["pool", "stage3"], ["avg"])],
        store=store,
        preprocess=SMALL,
        progress=False,
    )
    folder = find_entry(FeatureStore(store), "pool/unroll")
    assert folder.name.startswith("pool-unroll")
    for name in ("pool", "pool/avg", "pool/max"):
        assert find_entry(FeatureStore(store), name) == folder
    with pytest.raises(ConfigError, match="no entry 'stage3/max'"):  # a spatial layer: its own pooling only
        find_entry(FeatureStore(store), "stage3/max")


@pytest.mark.parametrize("to", FORMATS)
def test_a_multilabel_entry_exports_to_every_format(tmp_path, to):
    """(The hf export declared uint8 targets over an int64 column and crashed on every multi-label entry.)"""
    from PIL import Image

    from deepfeat.data.manifests import manifest_dataset
    from tests.conftest import photo, save

    if to == "hf":
        datasets = pytest.importorskip("datasets")
    for i in range(3):
        save(Image.fromarray(photo(i)), tmp_path / f"{i}.png")
    lines = [("0.png", ["person", "car"]), ("1.png", ["car"]), ("2.png", ["dog"])]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"path": p, "labels": ls}) + "\n" for p, ls in lines))
    data = manifest_dataset(manifest)
    bb = load_backbone("efficientnet_lite0", weights="random")
    extract(data, bb, [LayerActivations(["stage3"])], store=tmp_path / "s", preprocess=SMALL, progress=False)
    path = export_entry(tmp_path / "s", "stage3/avg", to, tmp_path / f"out.{to}")
    want = np.asarray(data.targets, dtype=np.uint8)
    if to == "parquet":
        got = np.array(pq.read_table(path).column("target").to_pylist())
    elif to == "npz":
        got = np.load(path, allow_pickle=False)["targets"]
    elif to == "hdf5":
        with h5py.File(path, "r") as f:
            got = f["targets"][:]
    else:
        ds = datasets.load_from_disk(str(path))
        got = np.array(ds["target"])
        assert ds[0]["label"] == sorted(["person", "car"], key=data.classes.index)
    np.testing.assert_array_equal(got, want)


def test_an_entry_whose_meta_is_unreadable_is_named_when_asked_for_by_layer(store_with_failures, tmp_path):
    store, _ = store_with_failures
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    (entry,) = [p for p in (copy / "entries").iterdir() if "-max-" in p.name]
    (entry / "meta.json").write_text("{ not json")
    with pytest.raises(ConfigError, match=rf"{entry.name}: meta.json unreadable, so not found by layer/pool"):
        export_entry(copy, "stage3/max", "npz", tmp_path / "x.npz")
