"""Features out of deepfeat: a store entry or a feature set as Parquet, NPZ, HDF5 or a Hugging Face
``datasets`` folder, each carrying the item ids, labels, splits, the validity mask and the provenance.

Every format holds the same things:

- ``features`` (Parquet: ``f0``, ``f1``, ... or a ``features`` list column): float32 (n_items, dim),
  one row per item in dataset order; rows of items whose image could not be used are NaN (as in the
  store's ``features.npy``);
- ``valid``: bool (n_items,), True where the row holds features;
- Parquet and hf columns ``id``, ``target`` (class index; for multi-label data a 0/1 uint8 vector),
  ``label`` (class name(s)) and ``split`` (when the data has splits); NPZ and HDF5 arrays ``ids``,
  ``targets`` (the same values), ``classes`` (the class names ``targets`` index) and ``splits``;
- the provenance (dataset fingerprint, backbone and weights id, layer, method and parameters,
  preprocessing, versions), the class names, the layer shape and the export schema version, as JSON:
  Parquet schema metadata ``deepfeat``, NPZ array ``deepfeat_json``, HDF5 attribute ``deepfeat``,
  ``datasets`` info description and a ``deepfeat.json`` beside the dataset files.

Parquet stores the features as one float32 column per dimension (``f0``, ``f1``, ...; what pandas
reads as a float frame) or, with ``parquet_layout="list"``, as one fixed-size list column ``features``;
uncompressed by default (random-looking floats barely compress), written in row groups of 65,536 rows
so a memory-mapped store entry is streamed, not copied. The hf export keeps the list column.
Files are written beside the target and renamed over it, so an interrupted export never leaves a half
file. The formats need the ``export`` extra (pyarrow, h5py) and, for ``hf``, the ``hf`` extra.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfeat.errors import ConfigError, StoreError
from deepfeat.features.featureset import FeatureSet
from deepfeat.features.store import KEY_MISMATCH, FeatureStore
from deepfeat.fileio import SCHEMA_VERSION, atomic_write_text, atomic_write_with, dumps_json
from deepfeat.validation import check_choice, close_matches

FORMATS = ("parquet", "npz", "hdf5", "hf")
PARQUET_LAYOUTS = ("columns", "list")
ROWS_PER_GROUP = 65536
SUFFIXES = {"parquet": ".parquet", "npz": ".npz", "hdf5": ".h5", "hf": ""}


@dataclass
class ExportTable:
    """Everything an export writes: all items of the data, valid or not."""

    key: str
    features: np.ndarray
    valid: np.ndarray
    ids: list[str]
    targets: np.ndarray
    classes: list[str]
    provenance: dict
    splits: np.ndarray | None = None
    layer_shape: tuple[int, ...] | None = None

    @property
    def multilabel(self) -> bool:
        return self.targets.ndim == 2

    @functools.cached_property
    def labels(self) -> list:
        """Class name (or names, multi-label) of every item."""
        if self.multilabel:
            return [[self.classes[j] for j in np.flatnonzero(row)] for row in self.targets]
        return [self.classes[int(t)] for t in self.targets]

    def header(self) -> dict:
        """The JSON every format carries."""
        return {
            "schema": SCHEMA_VERSION,
            "kind": "features",
            "key": self.key,
            "dim": int(self.features.shape[1]),
            "n_items": len(self.ids),
            "n_valid": int(self.valid.sum()),
            "classes": list(self.classes),
            "multilabel": self.multilabel,
            "layer_shape": None if self.layer_shape is None else list(self.layer_shape),
            "provenance": self.provenance,
        }


def from_feature_set(fs: FeatureSet) -> ExportTable:
    """The rows of a feature set (every one valid)."""
    return ExportTable(
        key=fs.key,
        features=np.asarray(fs.features, dtype=np.float32),
        valid=np.ones(len(fs), dtype=bool),
        ids=list(fs.ids),
        targets=np.asarray(fs.targets),
        classes=list(fs.classes),
        provenance=fs.provenance,
        splits=fs.splits,
        layer_shape=fs.layer_shape,
    )


def find_entry(store: FeatureStore, entry: str) -> Path:
    """The entry folder ``entry`` names: its folder name, a unique prefix of it, its path, or a
    ``layer/pool`` key (``stage6/avg``; a vector layer's by its name, ``pool``, or with any pooling,
    all the identity) when only one entry has it."""
    folders = sorted(p for p in (store.root / "entries").glob("*") if p.is_dir())
    if Path(entry).is_dir() and Path(entry).parent.resolve() == (store.root / "entries").resolve():
        return Path(entry)
    names = [p.name for p in folders]
    if entry in names:
        return store.root / "entries" / entry
    by_prefix = [p for p in folders if p.name.startswith(entry)]
    by_key, unreadable = [], []
    for meta in store.entries():
        if "damaged" in meta and not meta.get("provenance"):  # only its folder name can find it
            unreadable.append(Path(meta["path"]).name)
        prov = meta.get("provenance") or {}
        key = "/".join(str(prov[k]) for k in ("layer", "pool") if prov.get(k) is not None)
        keys = {key}
        if prov.get("pool") == "unroll" and len(meta.get("layer_shape") or ()) == 1:
            # a vector layer: every pooling is the identity, and its features are keyed by the layer
            keys |= {str(prov.get("layer")), *(f"{prov.get('layer')}/{p}" for p in ("avg", "max"))}
        if key and entry in keys:
            by_key.append(Path(meta["path"]))
    found = by_prefix if len(by_prefix) == 1 else by_key
    if len(found) == 1:
        return found[0]
    if len(by_prefix) > 1 or len(by_key) > 1:
        many = [p.name for p in (by_prefix if len(by_prefix) > 1 else by_key)]
        raise ConfigError(
            f"entry {entry!r} matches {len(many)} entries: {', '.join(many)}; give the full name"
        )
    close = close_matches(entry, names)
    valid = ", ".join(close + [n for n in names if n not in close]) or "none"
    damaged = (
        f" ({', '.join(unreadable)}: meta.json unreadable, so not found by layer/pool; the next extraction "
        "repairs it)"
        if unreadable
        else ""
    )
    raise ConfigError(f"no entry {entry!r} in the store {store.root}; valid: {valid}{damaged}")


def from_store(store: FeatureStore | str | os.PathLike, entry: str) -> ExportTable:
    """A complete store entry with its dataset's ids, labels and splits (see :func:`find_entry`)."""
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    if not (store.root / "entries").is_dir():
        raise ConfigError(f"{store.root}: not a feature store (no entries folder)")
    folder = find_entry(store, entry)
    meta = store.entry_meta(folder)
    if "damaged" in meta:
        remedy = (
            "delete this entry folder and extract again"
            if meta["damaged"] == KEY_MISMATCH
            else "extract it again into the store (or delete this entry folder to compute it afresh)"
        )
        raise StoreError(f"{folder}: cannot export a damaged entry ({meta['damaged']}); {remedy}")
    provenance = meta.get("provenance") or {}
    index = store.load_dataset_index(str(provenance.get("dataset", "")))
    from deepfeat.features.entry import StoreEntry

    handle = StoreEntry(folder, provenance, int(meta["n_rows"]), index["ids"])
    state = handle.check()
    if state.problems or not state.complete:
        why = "; ".join(state.problems) or "not every row is done"
        raise StoreError(
            f"{folder}: cannot export an incomplete or damaged entry ({why}); run the extraction again"
        )
    valid = state.status.valid
    features = handle.read()
    targets = np.asarray(index["targets"], dtype=np.uint8 if index.get("multilabel") else np.int64)
    splits = index.get("splits")
    return ExportTable(
        key="/".join(str(provenance[k]) for k in ("layer", "pool") if provenance.get(k) is not None)
        or folder.name,
        features=features,
        valid=valid,
        ids=list(index["ids"]),
        targets=targets,
        classes=list(index["classes"]),
        provenance={**provenance, "entry": folder.name, "store": str(store.root)},
        splits=None if splits is None else np.asarray(splits, dtype=object),
        layer_shape=state.layer_shape,
    )


def arrow_table(table: ExportTable, layout: str = "list", rows: slice = slice(None)):
    """Rows ``rows`` of the export as a pyarrow Table: ``features`` as one fixed-size list column of
    float32 (``layout="list"``, zero-copy) or one float32 column per dimension, ``f0``, ``f1``, ...
    (``"columns"``)."""
    pa = _need("pyarrow", "export")
    check_choice("parquet layout", layout, PARQUET_LAYOUTS)
    features = np.asarray(table.features[rows], dtype=np.float32)
    targets = table.targets[rows]
    columns = {
        "id": pa.array(table.ids[rows], type=pa.string()),
        "target": pa.array(targets.tolist(), pa.list_(pa.uint8()))
        if table.multilabel
        else pa.array(targets, pa.int64()),
        "label": pa.array(table.labels[rows]),
    }
    if table.splits is not None:
        columns["split"] = pa.array([str(s) for s in table.splits[rows]], type=pa.string())
    columns["valid"] = pa.array(table.valid[rows], type=pa.bool_())
    if layout == "list":
        flat = pa.array(np.ascontiguousarray(features).reshape(-1))
        columns["features"] = pa.FixedSizeListArray.from_arrays(flat, features.shape[1])
    else:
        by_column = _transposed(features)
        columns.update({f"f{i}": pa.array(by_column[i]) for i in range(features.shape[1])})
    header = {**table.header(), "parquet_layout": layout}
    return pa.table(columns).replace_schema_metadata({b"deepfeat": dumps_json(header, indent=None).encode()})


def _transposed(features: np.ndarray, block: int = 1024) -> np.ndarray:
    """``features.T`` as a C-contiguous array, copied in blocks of ``block`` rows: numpy's one-step
    transpose of a 65,536 x 1,280 float32 block walks memory column by column (measured 3 s of CPU
    time against 0.4-1.2 s in blocks, on the shared 2-core machine)."""
    out = np.empty((features.shape[1], features.shape[0]), dtype=features.dtype)
    for start in range(0, features.shape[0], block):
        out[:, start : start + block] = features[start : start + block].T
    return out


def _write_parquet(table: ExportTable, fh, compression: str | None, layout: str) -> None:
    """Row groups of :data:`ROWS_PER_GROUP` rows, so a memory-mapped entry is streamed, not copied."""
    pq = _need("pyarrow.parquet", "export")
    n = len(table.ids)
    first = arrow_table(table, layout, slice(0, min(n, ROWS_PER_GROUP)))
    dictionary = [c for c in ("label", "split") if c in first.column_names]
    with pq.ParquetWriter(
        fh,
        first.schema,
        compression=compression or "none",
        use_dictionary=dictionary,
        write_statistics=["id", "target", "valid"],
    ) as writer:
        writer.write_table(first)
        for start in range(ROWS_PER_GROUP, n, ROWS_PER_GROUP):
            writer.write_table(arrow_table(table, layout, slice(start, min(n, start + ROWS_PER_GROUP))))


def write_export(
    table: ExportTable,
    path: str | os.PathLike,
    to: str,
    *,
    compression: str | None = None,
    parquet_layout: str = "columns",
) -> Path:
    """Write ``table`` to ``path`` in format ``to`` (parquet, npz, hdf5, hf); returns the path.

    ``parquet_layout``: ``"columns"`` (one float32 column per dimension, ``f0``...; what pandas reads
    as a float frame; about the CPU time of a list column once transposed in blocks, see
    ``benchmarks/bench_export.py``) or
    ``"list"`` (one fixed-size list column ``features``)."""
    check_choice("export format", to, FORMATS)
    check_choice("parquet layout", parquet_layout, PARQUET_LAYOUTS)
    compression = _check_compression(to, compression)
    path = Path(path)
    if to != "hf" and path.is_dir():
        raise ConfigError(f"{path}: is a folder; a {to} export is one file: give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if to == "parquet":
            return atomic_write_with(path, lambda fh: _write_parquet(table, fh, compression, parquet_layout))
        if to == "npz":
            return atomic_write_with(path, lambda fh: np.savez(fh, **_arrays(table)))
        if to == "hdf5":
            return _replace_after(path, lambda tmp: _write_hdf5(table, tmp, compression))
        return _replace_after(path, lambda tmp: _write_hf(table, tmp))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"{path}: cannot write the export there ({reason}); choose a writable place"
        ) from None


def _check_compression(to: str, compression: str | None) -> str | None:
    """``compression`` when format ``to`` can write it here (None or "none": uncompressed); a
    ConfigError naming the valid ones otherwise."""
    if compression is None or compression == "none":
        return None
    if to == "parquet":
        pa = _need("pyarrow", "export")
        # parquet's codecs (pyarrow also has bz2, which parquet does not take)
        valid = [c for c in ("snappy", "gzip", "brotli", "lz4", "zstd") if pa.Codec.is_available(c)]
    elif to == "hdf5":
        h5z = _need("h5py", "export").h5z
        valid = ["gzip", "lzf"] + (["szip"] if h5z.filter_avail(h5z.FILTER_SZIP) else [])
    else:
        raise ConfigError(f"compression applies to parquet and hdf5 exports, not {to}; leave it out")
    if compression not in valid:
        raise ConfigError(
            f"compression {compression!r} is not available for {to} exports here; valid: "
            f"{', '.join(valid)} (or none)"
        )
    return compression


def _replace_after(path: Path, write) -> Path:
    """Run ``write(temporary path)`` beside ``path``, then rename the result over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove(tmp)
    try:
        write(tmp)
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _arrays(table: ExportTable) -> dict[str, np.ndarray]:
    out = {
        "features": np.asarray(table.features, dtype=np.float32),
        "valid": table.valid,
        "ids": np.asarray(table.ids, dtype=str),
        "targets": table.targets,
        "classes": np.asarray(table.classes, dtype=str),
        "deepfeat_json": np.asarray(dumps_json(table.header(), indent=None)),
    }
    if table.splits is not None:
        out["splits"] = np.asarray([str(s) for s in table.splits], dtype=str)
    return out


def _write_hdf5(table: ExportTable, target: Path, compression: str | None) -> None:
    h5py = _need("h5py", "export")
    with h5py.File(target, "w") as f:
        f.create_dataset(
            "features", data=np.asarray(table.features, dtype=np.float32), compression=compression
        )
        for name, values in _arrays(table).items():
            if name == "features" or name == "deepfeat_json":
                continue
            if values.dtype.kind == "U":
                f.create_dataset(name, data=values.astype(object), dtype=h5py.string_dtype("utf-8"))
            else:
                f.create_dataset(name, data=values)
        f.attrs["deepfeat"] = dumps_json(table.header(), indent=None)


def _write_hf(table: ExportTable, target: Path) -> None:
    datasets = _need("datasets", "hf")
    from datasets.table import InMemoryTable

    data = arrow_table(table)
    target_feature = (
        datasets.List(datasets.Value("uint8"))
        if table.multilabel
        else datasets.ClassLabel(names=list(table.classes))
    )
    label = datasets.List(datasets.Value("string")) if table.multilabel else datasets.Value("string")
    features = {"id": datasets.Value("string"), "target": target_feature, "label": label}
    if table.splits is not None:
        features["split"] = datasets.Value("string")
    features["valid"] = datasets.Value("bool")
    features["features"] = datasets.List(datasets.Value("float32"), length=table.features.shape[1])
    header = dumps_json(table.header(), indent=None)
    info = datasets.DatasetInfo(description=header, features=datasets.Features(features))
    ds = datasets.Dataset(InMemoryTable(data.replace_schema_metadata(None)), info=info)
    ds.save_to_disk(str(target))
    atomic_write_text(target / "deepfeat.json", header)


def _need(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f'this export needs the {module.split(".")[0]} package: pip install "deepfeat[{extra}]"'
        ) from None


def export_features(
    fs: FeatureSet, path: str | os.PathLike, to: str, *, compression: str | None = None
) -> Path:
    """Write a feature set (its rows, all valid) to ``path`` in format ``to``."""
    return write_export(from_feature_set(fs), path, to, compression=compression)


def export_entry(
    store: FeatureStore | str | os.PathLike,
    entry: str,
    to: str,
    out: str | os.PathLike | None = None,
    **options,
) -> Path:
    """Export a complete store entry; ``out`` defaults to ``<store>/exports/<entry><suffix>``; options
    of :func:`write_export` (``compression``, ``parquet_layout``)."""
    check_choice("export format", to, FORMATS)
    table = from_store(store, entry)
    root = store.root if isinstance(store, FeatureStore) else Path(store)
    target = Path(out) if out is not None else root / "exports" / f"{table.provenance['entry']}{SUFFIXES[to]}"
    return write_export(table, target, to, **options)
