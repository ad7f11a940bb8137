"""Feature export speed: 100,000 x 1,280 float32 features (EfficientNet-Lite0's pool size) to Parquet.

Compared in the same run, interleaved (median of repeats after a warm-up), each writing a file of the
same features with ids, labels and the validity mask to a temporary folder:

- ``deepfeat parquet``: :func:`deepfeat.features.export.write_export` (one float32 column per
  dimension, uncompressed, row groups of 65,536 rows; the default of ``deepfeat store export --to
  parquet``);
- ``deepfeat parquet list``: the same with the features as one fixed-size list column
  (``--parquet-layout list``);
- ``deepfeat parquet zstd``: the default layout with zstd compression (``--compression zstd``);
- ``pandas to_parquet``: the glue users wrote before: a DataFrame with one column per dimension plus
  id / label / valid, ``DataFrame.to_parquet`` (pyarrow engine);
- ``numpy save``: ``np.save`` of the bare array, the floor (raw bytes, no ids, labels or metadata);
- ``deepfeat npz`` / ``deepfeat hdf5``: the other export formats.

Every deepfeat export is synced to disk before it is renamed into place; ``np.save`` and pandas are
not (their files may still be in the page cache). Target: deepfeat parquet under 10 s. Besides wall
time, the process CPU time of each call is recorded (``cpu_s``): on a shared, loaded machine the wall
time mostly measures the wait for a core, the CPU time what the export costs.
Writes benchmarks/results/bench_export.json.
Usage: python benchmarks/bench_export.py [--rows 100000] [--dim 1280] [--repeats 3] [--methods a,b]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine
from _timing import LoadGuard, interleaved, ratio

from deepfeat.features.export import ExportTable, write_export

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def table(rows: int, dim: int, seed: int = 0) -> ExportTable:
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((rows, dim), dtype=np.float32)
    valid = rng.random(rows) > 0.001
    features[~valid] = np.nan
    classes = [f"class{i:03d}" for i in range(100)]
    return ExportTable(
        key="pool",
        features=features,
        valid=valid,
        ids=[f"images/{i // 1000:03d}/img{i:07d}.jpg" for i in range(rows)],
        targets=rng.integers(0, len(classes), rows),
        classes=classes,
        provenance={"layer": "pool", "pool": "unroll", "backbone": "efficientnet_lite0", "bench": True},
        layer_shape=(dim,),
    )


def pandas_glue(t: ExportTable, path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame(t.features, columns=[f"f{i}" for i in range(t.features.shape[1])])
    frame.insert(0, "valid", t.valid)
    frame.insert(0, "label", [t.classes[i] for i in t.targets])
    frame.insert(0, "id", t.ids)
    frame.to_parquet(path, engine="pyarrow", index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--methods", default=None, help="comma-separated subset of the methods")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_export.json")
    args = parser.parse_args(argv)
    t = table(args.rows, args.dim)
    tmp = Path(tempfile.mkdtemp(prefix="bench_export_"))
    try:
        methods = {
            "deepfeat parquet": lambda: write_export(t, tmp / "a.parquet", "parquet"),
            "deepfeat parquet list": lambda: write_export(
                t, tmp / "g.parquet", "parquet", parquet_layout="list"
            ),
            "deepfeat parquet zstd": lambda: write_export(
                t, tmp / "b.parquet", "parquet", compression="zstd"
            ),
            "pandas to_parquet": lambda: pandas_glue(t, tmp / "c.parquet"),
            "numpy save": lambda: np.save(tmp / "d.npy", t.features),
            "deepfeat npz": lambda: write_export(t, tmp / "e.npz", "npz"),
            "deepfeat hdf5": lambda: write_export(t, tmp / "f.h5", "hdf5"),
        }
        if args.methods:
            wanted = [m.strip() for m in args.methods.split(",")]
            methods = {m: methods[m] for m in ["deepfeat parquet", "deepfeat parquet list", *wanted]}
        cpu: dict[str, list[float]] = {name: [] for name in methods}

        def with_cpu(name, fn):
            def call():
                start = time.process_time()
                fn()
                cpu[name].append(time.process_time() - start)

            return call

        with LoadGuard() as load:
            timings, _ = interleaved(
                {name: with_cpu(name, fn) for name, fn in methods.items()},
                repeats=args.repeats,
                warmup=args.warmup,
            )
        import pyarrow.parquet as pq

        back = pq.read_table(tmp / "a.parquet")
        values = np.column_stack([back.column(f"f{i}").to_numpy() for i in range(args.dim)])
        same = bool(np.array_equal(values, t.features, equal_nan=True))
        listed = pq.read_table(tmp / "g.parquet").column("features").combine_chunks().flatten()
        listed = np.asarray(listed).reshape(args.rows, -1)
        same = same and bool(np.array_equal(listed, t.features, equal_nan=True))
        sizes = {p.name: p.stat().st_size for p in tmp.iterdir()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "benchmark": "export",
        "problem": {"rows": args.rows, "dim": args.dim, "dtype": "float32", "bytes": t.features.nbytes},
        "repeats": args.repeats,
        "warmup": args.warmup,
        "timings_s": {k: {m: round(v, 3) for m, v in d.items() if m != "times"} for k, d in timings.items()},
        "cpu_s": {k: round(statistics.median(v[args.warmup :]), 3) for k, v in cpu.items()},
        "target_s": 10.0,
        "deepfeat_parquet_under_target": timings["deepfeat parquet"]["median"] < 10.0,
        "speedup_vs_pandas": (
            round(ratio(timings, "pandas to_parquet", "deepfeat parquet"), 2)
            if "pandas to_parquet" in timings
            else None
        ),
        "columns_vs_list_speedup": round(ratio(timings, "deepfeat parquet list", "deepfeat parquet"), 2),
        "slowdown_vs_numpy_save": (
            round(ratio(timings, "deepfeat parquet", "numpy save"), 2) if "numpy save" in timings else None
        ),
        "round_trip_equal": same,
        "file_bytes": sizes,
        "load": load.to_dict(),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("timings_s", "cpu_s", "speedup_vs_pandas", "round_trip_equal")}, indent=1
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
