"""The ``deepfeat`` command line: one typer app, one module per command group."""

from __future__ import annotations

import typer

from deepfeat.cli.analyze import analyze_app
from deepfeat.cli.backbones import backbones_command, layers_command, predict_command
from deepfeat.cli.demo import demo_command
from deepfeat.cli.evaluate import evaluate_command
from deepfeat.cli.extract import extract_command, store_list_command
from deepfeat.cli.finetune import finetune_command
from deepfeat.cli.heatmap import heatmap_command

app = typer.Typer(
    name="deepfeat",
    help="Transferable image features from pretrained convnets, and how well they transfer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("backbones")(backbones_command)
app.command("layers")(layers_command)
app.command("predict")(predict_command)
app.command("extract")(extract_command)
app.command("evaluate")(evaluate_command)
app.command("demo")(demo_command)
app.command("heatmap")(heatmap_command)
app.command("finetune")(finetune_command)

store_app = typer.Typer(help="Inspect feature stores.", no_args_is_help=True)
store_app.command("list")(store_list_command)
app.add_typer(store_app, name="store")
app.add_typer(analyze_app, name="analyze")


if __name__ == "__main__":  # pragma: no cover
    app()
