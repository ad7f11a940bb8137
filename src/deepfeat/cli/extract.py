"""CLI: extract layer features into a feature store, and inspect a store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from deepfeat.backbones import DEFAULT_BACKBONE, load_backbone
from deepfeat.cli.common import (
    AMP,
    CLUSTER,
    DEVICE,
    LOADER,
    THREADS,
    VERBOSE,
    friendly,
    set_threads,
    setup_logging,
)
from deepfeat.cli.parsing import Loader, OnBadImage, PreprocessName, names
from deepfeat.data.datasets import DATA_SPELLINGS, open_dataset
from deepfeat.data.images import DEFAULT_MAX_PIXELS
from deepfeat.data.transforms import preset
from deepfeat.errors import ConfigError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import extract
from deepfeat.features.store import KEY_MISMATCH, FeatureStore
from deepfeat.fileio import check_output_dir
from deepfeat.report.tables import text_table
from deepfeat.report.wording import counted


@friendly
def extract_command(
    data: str = typer.Argument(..., help=DATA_SPELLINGS),
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
    store: Path = typer.Option(Path("deepfeat-out/store"), "--store", "-s", help="Feature store folder."),
    preprocess: PreprocessName = typer.Option(
        PreprocessName.backbone,
        help="backbone (its own resize and crop), decaf (256 warp, 224 crop), interactive "
        "(whole image, area about 512^2, aspect kept, sides multiples of 32) or warp (whole image "
        "warped to the input size, no crop: InterActive's ORIG).",
    ),
    batch_size: int = typer.Option(32, min=1, help="Images per forward pass."),
    workers: int = typer.Option(2, min=0, help="Image decoding threads (0: decode in the main thread)."),
    on_bad_image: OnBadImage = typer.Option(
        OnBadImage.skip, help="skip (report at the end) or fail (stop at the first)."
    ),
    max_pixels: int = typer.Option(
        DEFAULT_MAX_PIXELS, min=1, help="Refuse images with more pixels (decompression bombs)."
    ),
    exact_decode: bool = typer.Option(
        False, "--exact-decode", help="Decode JPEGs in full before resizing (parity with timm; slower)."
    ),
    seed: int = typer.Option(0, help="Seed of the sp-shuffle permutations."),
    device: str = DEVICE,
    amp: bool = AMP,
    loader: Loader = LOADER,
    cluster: str = CLUSTER,
    threads: int = THREADS,
    verbose: bool = VERBOSE,
) -> None:
    """Extract layer features of every image into a feature store (resumable; reruns read the store)."""
    setup_logging(verbose)
    set_threads(threads)
    method = LayerActivations(names(layers, "--layers"), names(pool, "--pool"), random_state=seed)
    dataset = open_dataset(data)
    typer.echo(dataset.summary())
    bb = load_backbone(backbone, weights=weights)
    method.outputs(bb)  # validate names before any work
    check_output_dir(store, "--store")  # after the checks: a mistake leaves no empty store behind
    prep = preset(preprocess.value, bb.preprocess)
    if exact_decode:
        prep = replace(prep, jpeg_draft=False)
    result = extract(
        dataset,
        bb,
        [method],
        store=store,
        preprocess=prep,
        batch_size=batch_size,
        on_error=on_bad_image.value,
        max_pixels=max_pixels,
        workers=workers,
        progress=True,
        device=device,
        amp=amp,
        loader=None if loader is None else loader.value,
        cluster=cluster,
    )
    typer.echo(result.describe())


#: provenance keys every entry has, or that store list shows in their own columns
_COMMON_PROVENANCE = {
    "deepfeat",
    "dataset",
    "n_items",
    "backbone",
    "weights_id",
    "preprocess",
    "max_pixels",
    "method",
    "layer",
    "pool",
}


def _method_text(prov: dict) -> str:
    """The feature method and its settings (e.g. ``activeness config=last p=1 ...``), so that entries of
    one layer and pool made by different settings can be told apart."""
    extra = " ".join(f"{k}={prov[k]}" for k in sorted(prov) if k not in _COMMON_PROVENANCE)
    return f"{prov.get('method', '?')} {extra}".strip()


def _preprocess_text(prep) -> str:
    """A preprocessing in a few characters: ``shorter 256/224``, ``warp 224``, ``area 512/32``."""
    if not isinstance(prep, dict):
        return "?"
    text = f"{prep.get('resize')} {prep.get('size')}"
    if prep.get("crop"):
        text += f"/{prep['crop']}"
    elif prep.get("resize") == "area":
        text += f"/{prep.get('multiple')}"
    return text + ("" if prep.get("interpolation") in (None, "bicubic") else f" {prep['interpolation']}")


@friendly
def store_list_command(
    store: Path = typer.Argument(..., help="Feature store folder."),
    checksums: bool = typer.Option(
        False, "--checksums", help="Also verify every row against its journal (reads all the data)."
    ),
) -> None:
    """List the entries of a feature store: rows done, and damage found in their journals and data
    files (the next extraction repairs it)."""
    if not store.is_dir():
        raise ConfigError(f"{store}: not a folder; give the folder of a feature store")
    if not (store / "entries").is_dir():
        raise ConfigError(f"{store}: not a feature store (no entries/ folder); give the folder of --store")
    rows, problems, unfinished = [], [], 0
    for meta, state in FeatureStore(store).check_entries(checksums=checksums):
        prov = meta["provenance"]
        n_rows = meta.get("n_rows")
        if state is None:
            status, done = "damaged", "-"
            problems.append(f"{Path(meta['path']).name}: {meta.get('damaged', 'meta.json unreadable')}")
        else:
            n_done = int(state.status.done.sum())
            done = f"{n_rows}" if n_done == n_rows else f"{n_done}/{n_rows}"
            status = "damaged" if state.problems else "partial" if not state.complete else "complete"
            if status == "complete" and not state.finished:
                status = "unfinished"
                unfinished += 1
            problems += [f"{Path(meta['path']).name}: {p}" for p in state.problems]
        rows.append(
            (
                prov.get("layer"),
                prov.get("pool"),
                _method_text(prov),
                _preprocess_text(prov.get("preprocess")),
                f"{prov.get('backbone')} {str(prov.get('weights_id', '')).rpartition(':')[2][:8]}".strip(),
                meta.get("dim") or (state.dim if state is not None else None),
                done,
                status,
                prov.get("dataset", "")[:12],
                Path(meta["path"]).name,
            )
        )
    typer.echo(
        text_table(
            rows,
            [
                "layer",
                "pool",
                "method",
                "preprocess",
                "backbone weights",
                "dim",
                "rows",
                "state",
                "dataset",
                "entry",
            ],
        )
    )
    if unfinished:
        typer.echo(
            f"unfinished: {counted(unfinished, 'entry holds', 'entries hold')} every row but no valid.npy or "
            "no 'complete' mark; the next extraction into this store writes them, computing nothing"
        )
    for problem in problems:
        typer.echo(f"damaged: {problem}")
    if any(KEY_MISMATCH not in problem for problem in problems):
        typer.echo("the next extraction into this store repairs them (damaged rows are computed again)")
    if any(KEY_MISMATCH in problem for problem in problems):
        typer.echo(
            "entries whose meta.json does not match their key are not repaired (which provenance their "
            "data belong to is unknown): delete those entry folders, and the next extraction redoes them"
        )
