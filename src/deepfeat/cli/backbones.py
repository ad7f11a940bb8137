"""CLI: list backbones, list a backbone's layers, predict ImageNet classes for images."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from deepfeat.backbones import list_backbones, load_backbone
from deepfeat.cli.common import friendly
from deepfeat.data.images import load_image, printable
from deepfeat.errors import ConfigError, ImageError
from deepfeat.report.tables import text_table
from deepfeat.report.wording import counted
from deepfeat.validation import check_int, close_matches


@friendly
def backbones_command(
    all_models: bool = typer.Option(
        False, "--all", help="List every timm model with its pretrained tags (use as timm:<name>)."
    ),
    match: str = typer.Option(None, "--match", help="With --all: only names matching this wildcard."),
    cached: bool = typer.Option(False, "--cached", help="With --all: only models whose weights are cached."),
) -> None:
    """List the backbones deepfeat can load; --all lists timm's models and which are cached locally."""
    if not all_models:
        if match or cached:
            raise ConfigError("--match and --cached go with --all (they filter timm's models)")
        typer.echo(text_table(list(list_backbones().items()), ["backbone", "weights"]))
        return
    from deepfeat.backbones.timm_nets import all_model_names, list_timm_models

    rows = list_timm_models(match or "*", cached_only=cached)
    if not rows and cached and match and list_timm_models(match):  # they match; none is cached
        raise ConfigError(
            f"no timm model matching --match {match!r} has its weights in the local caches (leave out "
            "--cached to list them)"
        )
    if not rows and match:
        close = close_matches(match.strip("*"), all_model_names(), n=8)
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise ConfigError(f"no timm model matches --match {match!r}{hint}")
    for name, is_cached in rows:
        typer.echo(f"timm:{name}" + ("  (cached)" if is_cached else ""))
    n_models = len({name.split(".", 1)[0] for name, _ in rows})
    typer.echo(
        f"{counted(len(rows), 'pretrained tag')} of {counted(n_models, 'model')}, "
        f"{sum(c for _, c in rows)} with weights in the local caches",
        err=True,
    )


@friendly
def layers_command(
    backbone: str = typer.Argument(
        ..., help="Backbone name, e.g. efficientnet_lite0, alexnet, timm:resnet18.a1_in1k."
    ),
    weights: str = typer.Option(
        None, help="Weights file or torchvision enum (default: the backbone's own, random if none cached)."
    ),
) -> None:
    """List the layers of a backbone: name, kind, channels, stride."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-weights warnings do not matter for a listing
        bb = load_backbone(
            backbone, weights=weights or ("random" if backbone != "efficientnet_lite0" else None)
        )
    rows = [
        (x.name, x.kind, x.channels, x.stride, x.module or f"softmax({x.derived_from})") for x in bb.catalog
    ]
    typer.echo(text_table(rows, ["layer", "kind", "channels", "stride", "module"]))


@friendly
def predict_command(
    images: list[Path] = typer.Argument(..., help="Image files."),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone with an ImageNet classifier."),
    weights: str = typer.Option(None, help="Weights file (default: the backbone's own)."),
    top: int = typer.Option(5, help="Number of classes to show per image (at least 1)."),
) -> None:
    """ImageNet predictions of a backbone for image files (a quick check of its weights); files that
    cannot be read are reported and skipped (exit code 1 when there were any)."""
    check_int("--top", top, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights have no class names: refused just below
        bb = load_backbone(backbone, weights=weights)
    names = bb.class_names
    if names is None:
        raise ConfigError(f"{backbone}: no ImageNet class names for these weights (random or custom)")
    bad = 0
    for path in images:
        try:
            image = load_image(path, draft=bb.preprocess.draft_size)
        except ImageError as exc:
            typer.echo(f"{printable(path)}: skipped, {exc.reason}", err=True)
            bad += 1
            continue
        x = bb.preprocess.to_batch([bb.preprocess(image)])
        prob = bb.predict(x)[0]
        values, indices = prob.topk(min(top, len(prob)))
        typer.echo(f"{path}:")
        for v, i in zip(values.tolist(), indices.tolist()):
            typer.echo(f"  {v:6.3f}  {names[i]}")
    if bad:
        raise typer.Exit(1)
