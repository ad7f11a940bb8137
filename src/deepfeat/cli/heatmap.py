"""CLI: InterActive heatmaps (sum over channels of the neuron weights gamma) overlaid on an image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from deepfeat.backbones import DEFAULT_BACKBONE, load_backbone
from deepfeat.cli.common import friendly, set_threads
from deepfeat.data.images import load_image
from deepfeat.data.transforms import preset
from deepfeat.features.activeness import activeness_maps
from deepfeat.report.plots import overlay_heatmap


def write_heatmaps(
    image: Path,
    layers: str,
    config: str,
    p: int,
    out: Path,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | None = None,
    preprocess: str = "interactive",
) -> list[Path]:
    """One PNG per layer (and a JSON with the raw maps); returns the PNG paths."""
    bb = load_backbone(backbone, weights=weights)
    prep = preset(preprocess, bb.preprocess)
    pixels = prep(load_image(image))
    batch = prep.to_batch([pixels], channels_last=bb.channels_last)
    maps = activeness_maps(bb, batch, layers, config=config, p=p)
    out.mkdir(parents=True, exist_ok=True)
    paths, raw = [], {}
    for layer, heat in maps.items():
        heat = heat[0].numpy()
        raw[layer] = heat.tolist()
        name = f"{Path(image).stem}-{layer}-{config}-p{p}.png"
        title = f"{layer}, {config} config, p = {p}"
        paths.append(overlay_heatmap(pixels, heat, out / name, title=title))
    meta = {"image": str(image), "backbone": bb.name, "weights_id": bb.weights_id, "config": config, "p": p}
    meta["preprocess"] = prep.to_dict()
    meta["input_size"] = list(np.asarray(pixels).shape[:2])
    (out / f"{Path(image).stem}-{config}-p{p}.json").write_text(json.dumps({**meta, "maps": raw}) + "\n")
    return paths


@friendly
def heatmap_command(
    image: Path = typer.Argument(..., help="An image file."),
    layer: str = typer.Option("stage4,stage6,head", "--layer", "-l", help="Comma-separated spatial layers."),
    config: str = typer.Option("last", help="'last' or 'next'."),
    p: int = typer.Option(2, "--p", help="Norm of the score function: 1 or 2."),
    backbone: str = typer.Option(DEFAULT_BACKBONE, "--backbone", "-b"),
    weights: str = typer.Option(None, help="Weights file (default: the backbone's own)."),
    preprocess: str = typer.Option("interactive", help="'interactive' (about 512^2), 'backbone' or 'decaf'."),
    out: Path = typer.Option(Path("heatmaps"), "--out", "-o", help="Output folder."),
    threads: int = typer.Option(None, help="Torch CPU threads."),
) -> None:
    """InterActive heatmaps: sum over channels of the neuron weights, over the image, one PNG per layer."""
    set_threads(threads)
    for path in write_heatmaps(image, layer, config, p, out, backbone, weights, preprocess):
        typer.echo(str(path))
