"""The ``deepfeat`` command line: one typer app, one module per command group.

The command line, unlike the library, tunes the process for CPU inference (glibc's allocator, see
:mod:`deepfeat._runtime`; ``DEEPFEAT_TUNE_MALLOC=0`` opts out); every result records the setting.
"""

from __future__ import annotations

import typer

from deepfeat._runtime import tune_allocator
from deepfeat._version import __version__
from deepfeat.cli.analyze import analyze_app
from deepfeat.cli.backbones import backbones_command, layers_command, predict_command
from deepfeat.cli.bigan import bigan_app
from deepfeat.cli.caption import caption_app
from deepfeat.cli.demo import demo_command
from deepfeat.cli.evaluate import evaluate_command
from deepfeat.cli.extract import extract_command, store_list_command
from deepfeat.cli.finetune import finetune_command
from deepfeat.cli.heatmap import heatmap_command
from deepfeat.cli.video import video_app

app = typer.Typer(
    name="deepfeat",
    help="Transferable image features from pretrained convnets, and how well they transfer.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"deepfeat {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Transferable image features from pretrained convnets, and how well they transfer."""
    tune_allocator()


app.command("backbones")(backbones_command)
app.command("layers")(layers_command)
app.command("predict")(predict_command)
app.command("extract")(extract_command)
app.command("evaluate")(evaluate_command)
app.command("demo")(demo_command)
app.command("heatmap")(heatmap_command)
app.command("finetune")(finetune_command)

store_app = typer.Typer(help="Inspect feature stores.", no_args_is_help=True, rich_markup_mode=None)
store_app.command("list")(store_list_command)
app.add_typer(store_app, name="store")
app.add_typer(analyze_app, name="analyze")
app.add_typer(caption_app, name="caption")
app.add_typer(video_app, name="video")
app.add_typer(bigan_app, name="bigan")


if __name__ == "__main__":  # pragma: no cover
    app()
