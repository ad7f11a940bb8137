"""CLI: extract layer features into a feature store, and inspect a store."""

from __future__ import annotations

from pathlib import Path

import typer

from deepfeat.backbones import DEFAULT_BACKBONE, load_backbone
from deepfeat.cli.common import friendly, set_threads, setup_logging, table
from deepfeat.data.datasets import open_dataset
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import Extraction, extract
from deepfeat.features.store import FeatureStore


def summary(result: Extraction) -> str:
    """Counts, outputs with their origin and location, skipped and ignored files."""
    lines = []
    n_ok = max((len(fs) for fs in result.features.values()), default=0)
    speed = f" at {result.images_per_second:.1f} img/s" if result.n_forward else ""
    lines.append(
        f"{result.n_items} items: {n_ok} with features, {len(result.failures)} skipped; "
        f"{result.n_forward} through the network{speed} in {result.seconds:.1f} s"
    )
    rows = [
        (k, fs.dim, len(fs), result.origins.get(k), fs.source or "memory")
        for k, fs in result.features.items()
    ]
    lines.append(table(rows, ["features", "dim", "rows", "from", "where"]))
    if result.failures:
        lines.append(f"skipped {len(result.failures)} files:")
        lines += [f"  {path}: {reason}" for path, reason in result.failures]
    if result.ignored:
        lines.append(f"ignored {len(result.ignored)} entries while listing the data:")
        lines += [f"  {path}: {reason}" for path, reason in result.ignored]
    if result.store:
        lines.append(f"store: {result.store}")
    return "\n".join(lines)


@friendly
def extract_command(
    data: str = typer.Argument(..., help="'digits', a class-per-folder tree, or a .csv/.jsonl manifest."),
    backbone: str = typer.Option(
        DEFAULT_BACKBONE, "--backbone", "-b", help="Backbone name (see 'deepfeat backbones')."
    ),
    weights: str = typer.Option(None, help="Weights file (default: the backbone's own)."),
    layers: str = typer.Option(
        "pool", "--layers", "-l", help="Comma-separated layer names (see 'deepfeat layers')."
    ),
    pool: str = typer.Option(
        "avg",
        "--pool",
        "-p",
        help="Comma-separated: avg, max, unroll, sp-shuffle, bin, sp-max-bin.",
    ),
    out: Path = typer.Option(Path("deepfeat-out/store"), "--out", "-o", help="Feature store folder."),
    preprocess: str = typer.Option(
        "backbone",
        help="'backbone' (its own resize and crop), 'decaf' (256 warp, 224 crop) or 'interactive' "
        "(whole image, area about 512^2, aspect kept, sides multiples of 32).",
    ),
    batch_size: int = typer.Option(32, help="Images per forward pass."),
    workers: int = typer.Option(2, help="Image decoding threads (0: decode in the main thread)."),
    on_bad_image: str = typer.Option(
        "skip", help="'skip' (report at the end) or 'fail' (stop at the first)."
    ),
    max_pixels: int = typer.Option(
        DEFAULT_MAX_PIXELS, help="Refuse images with more pixels (decompression bombs)."
    ),
    seed: int = typer.Option(0, help="Seed of the sp-shuffle permutations."),
    threads: int = typer.Option(None, help="Torch CPU threads (default: torch's choice)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens."),
) -> None:
    """Extract layer features of every image into a feature store (resumable; reruns read the store)."""
    setup_logging(verbose)
    set_threads(threads)
    dataset = open_dataset(data)
    typer.echo(dataset.summary())
    bb = load_backbone(backbone, weights=weights)
    method = LayerActivations(layers, pool, random_state=seed)
    method.outputs(bb)  # validate names before any work
    result = extract(
        dataset,
        bb,
        [method],
        store=out,
        preprocess=preprocess,
        batch_size=batch_size,
        on_error=on_bad_image,
        max_pixels=max_pixels,
        workers=workers,
        progress=True,
    )
    typer.echo(summary(result))


@friendly
def store_list_command(store: Path = typer.Argument(..., help="Feature store folder.")) -> None:
    """List the entries of a feature store."""
    if not store.is_dir():
        raise typer.BadParameter(f"{store}: not a folder")
    rows = []
    for meta in FeatureStore(store).entries():
        prov = meta["provenance"]
        state = "complete" if meta.get("complete") else "partial"
        rows.append(
            (
                prov.get("layer"),
                prov.get("pool"),
                prov.get("backbone"),
                meta.get("dim"),
                meta.get("n_rows"),
                state,
                prov.get("dataset", "")[:12],
                Path(meta["path"]).name,
            )
        )
    typer.echo(table(rows, ["layer", "pool", "backbone", "dim", "rows", "state", "dataset", "entry"]))
