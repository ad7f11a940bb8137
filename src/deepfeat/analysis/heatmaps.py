"""InterActive heatmaps of one image: the sum over channels of the neuron weights gamma of each layer,
overlaid on the image (one PNG per layer) with the raw maps in a result JSON (``kind`` "heatmap")."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepfeat.backbones import DEFAULT_BACKBONE, load_backbone
from deepfeat.data.images import load_image
from deepfeat.data.transforms import preset
from deepfeat.features.activeness import activeness_maps
from deepfeat.report.plots import overlay_heatmap
from deepfeat.report.writer import write_result


def write_heatmaps(
    image: str | os.PathLike,
    layers: Sequence[str],
    out: str | os.PathLike,
    *,
    config: str = "last",
    p: int = 2,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | None = None,
    preprocess: str = "interactive",
    top: str | None = None,
    collect: str = "weighted",
) -> list[Path]:
    """One PNG per layer and a JSON with the raw maps in folder ``out``; returns the PNG paths.
    ``top``: the layer whose score the 'last' configuration back-propagates (default: the one before
    the logits; backbones without logits, such as a BiGAN encoder, need it); ``collect``: how a neuron
    collects its connections' activeness, ``"weighted"`` or ``"unweighted"`` (see
    :mod:`deepfeat.features.activeness`)."""
    image, out = Path(image), Path(out)
    bb = load_backbone(backbone, weights=weights, fully_convolutional=preprocess == "interactive")
    prep = preset(preprocess, bb.preprocess)
    pixels = prep(load_image(image))
    batch = prep.to_batch([pixels], channels_last=bb.channels_last)
    maps = activeness_maps(bb, batch, list(layers), config=config, p=p, top=top, collect=collect)
    tag = f"{config}-p{p}" + ("" if collect == "weighted" else f"-{collect}")
    stem = re.sub(r"[^A-Za-z0-9_.+-]", "_", image.stem) or "image"
    drawings, raw = {}, {}
    for layer, heat in maps.items():
        heat = heat[0].numpy()
        raw[layer] = heat.tolist()
        title = f"{layer}, {config} config, p = {p}" + ("" if collect == "weighted" else f", {collect}")
        drawings[f"{layer}-{tag}"] = lambda path, h=heat, t=title: overlay_heatmap(pixels, h, path, title=t)
    meta = {
        "image": str(image),
        "backbone": bb.name,
        "weights_id": bb.weights_id,
        "config": config,
        "p": p,
        "collect": collect,
    }
    if top is not None:
        meta["top"] = top
    meta["preprocess"] = prep.to_dict()
    result = {"input_size": list(np.asarray(pixels).shape[:2]), "maps": raw}
    written = write_result(
        out,
        f"{stem}-{tag}",
        result,
        kind="heatmap",
        provenance=meta,
        plots=drawings,
        plot_prefix=f"{stem}-",
    )
    return [written[k] for k in drawings]
