"""CLI: ``deepfeat store``: ``list`` (defined with extract, whose checks it shares) and ``export``,
a store entry as Parquet, NPZ, HDF5 or a Hugging Face dataset."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from deepfeat.cli.common import friendly
from deepfeat.cli.extract import store_list_command
from deepfeat.errors import ConfigError
from deepfeat.features.export import export_entry


class ParquetLayout(str, Enum):
    columns = "columns"
    list = "list"


class ExportFormat(str, Enum):
    parquet = "parquet"
    npz = "npz"
    hdf5 = "hdf5"
    hf = "hf"


@friendly
def store_export_command(
    store: Path = typer.Argument(..., help="Feature store folder."),
    entry: str = typer.Argument(
        ..., help="Entry: its folder name (see 'deepfeat store list'), a unique prefix, or layer/pool."
    ),
    to: ExportFormat = typer.Option(..., "--to", help="Format of the export."),
    out: Path = typer.Option(None, "--out", "-o", help="Output file (default: STORE/exports/<entry>)."),
    compression: str = typer.Option(
        None,
        help="Compression: parquet zstd, snappy, gzip, brotli, lz4 (those this pyarrow has); hdf5 gzip, lzf "
        "(default none).",
    ),
    parquet_layout: ParquetLayout = typer.Option(
        ParquetLayout.columns, help="Parquet: one column per dimension (f0, f1, ...) or one list column."
    ),
) -> None:
    """Export one complete store entry with ids, labels, splits, the validity mask and provenance."""
    if not store.is_dir():
        raise ConfigError(f"{store}: not a folder; give the folder of a feature store")
    path = export_entry(
        store, entry, to.value, out, compression=compression, parquet_layout=parquet_layout.value
    )
    typer.echo(f"wrote {path}")


store_app = typer.Typer(
    help="Inspect and export feature stores.", no_args_is_help=True, rich_markup_mode=None
)
store_app.command("list")(store_list_command)
store_app.command("export")(store_export_command)
