"""The ``deepfeat`` command line: one typer app, one module per command group.

Each command's module (and with it torch and the library) is imported only when that command runs,
so ``--version``, ``--help`` and shell completion answer at once; the listing's one-line summaries
are kept here (a test holds them equal to the commands' own help).

The command line, unlike the library, tunes the process for CPU inference (glibc's allocator, see
:mod:`deepfeat._runtime`; ``DEEPFEAT_TUNE_MALLOC=0`` opts out); every result records the setting.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from difflib import get_close_matches
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from deepfeat._runtime import tune_allocator
from deepfeat._version import __version__

#: command name -> (module, attribute: a command function or a typer app, the listing's summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "backbones": (
        "deepfeat.cli.backbones",
        "backbones_command",
        "List the backbones deepfeat can load; --all lists timm's models and which are cached locally.",
    ),
    "layers": (
        "deepfeat.cli.backbones",
        "layers_command",
        "List the layers of a backbone: name, kind, channels, stride.",
    ),
    "predict": (
        "deepfeat.cli.backbones",
        "predict_command",
        "ImageNet predictions of a backbone for image files (a quick check of its weights); files "
        "that cannot be read are reported and skipped (exit code 1 when there were any).",
    ),
    "extract": (
        "deepfeat.cli.extract",
        "extract_command",
        "Extract layer features of every image into a feature store (resumable; reruns read the store).",
    ),
    "evaluate": (
        "deepfeat.cli.evaluate",
        "evaluate_command",
        "Transfer evaluation: features through the store, probes under a protocol, results.json, "
        "report.md and a self-contained report.html.",
    ),
    "demo": (
        "deepfeat.cli.demo",
        "demo_command",
        "Evaluate layer features of scikit-learn's digits (offline): 30 training images per class, "
        "linear SVM and logistic regression, layer by layer (DeCAF's Caltech-101 protocol).",
    ),
    "heatmap": (
        "deepfeat.cli.heatmap",
        "heatmap_command",
        "InterActive heatmaps: sum over channels of the neuron weights, over the image, one PNG per layer.",
    ),
    "finetune": (
        "deepfeat.cli.finetune",
        "finetune_command",
        "Fine-tune with a new output layer; checkpoints every epoch (rerun the command to resume).",
    ),
    "store": ("deepfeat.cli.store", "store_app", "Inspect and export feature stores."),
    "analyze": (
        "deepfeat.cli.analyze",
        "analyze_app",
        "Analyses of what layers encode, each written as JSON + PNG plots.",
    ),
    "video": (
        "deepfeat.cli.video",
        "video_app",
        "Activity recognition on video (LRCN, thesis chapter 4): moving digits, train, evaluate, predict.",
    ),
    "bigan": (
        "deepfeat.cli.bigan",
        "bigan_app",
        "BiGAN: unsupervised features whose encoder becomes a backbone (thesis chapter 5).",
    ),
    "detect": (
        "deepfeat.cli.detect",
        "detect_app",
        "R-CNN object detection: selective-search proposals, region features, class SVMs with hard "
        "negatives, box regression, VOC / COCO AP.",
    ),
    "caption": (
        "deepfeat.cli.caption",
        "caption_app",
        "LRCN image description: train captioners, evaluate them (COCO metrics, retrieval, "
        "baselines), caption images.",
    ),
}


def load_command(name: str) -> Any:
    """The click command ``name`` of :data:`COMMANDS` (typer's), its module imported now."""
    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
    else:
        single = typer.Typer(rich_markup_mode=None, add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """The top-level group: lists and completes :data:`COMMANDS` from their summaries, loads one on use."""

    listing = False  # while True, unloaded commands are stand-ins that carry only their summary

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.commands, *(name for name in COMMANDS if name not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return self.commands.get(cmd_name)
        if self.listing:
            return TyperCommand(name=cmd_name, help=COMMANDS[cmd_name][2])
        self.commands[cmd_name] = load_command(cmd_name)
        return self.commands[cmd_name]

    @contextmanager
    def _summaries(self) -> Iterator[None]:
        self.listing = True
        try:
            yield
        finally:
            self.listing = False

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with self._summaries():
            super().format_commands(ctx, formatter)

    def shell_complete(self, ctx: Any, incomplete: str) -> list[Any]:
        with self._summaries():
            return super().shell_complete(ctx, incomplete)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[Any, Any, list[str]]:
        name = args[0] if args else ""
        if name and name not in COMMANDS and name not in self.commands and not ctx.resilient_parsing:
            matches = get_close_matches(name, list(COMMANDS))
            if matches and not name.startswith("-"):
                ctx.fail(f"No such command {name!r}. Did you mean {', '.join(map(repr, matches))}?")
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="deepfeat",
    cls=LazyGroup,
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


if __name__ == "__main__":  # pragma: no cover
    app()
