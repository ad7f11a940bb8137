"""Helpers shared by the CLI commands: one-line errors, thread settings, tables."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import typer

from deepfeat.errors import DeepfeatError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def friendly(func: Callable) -> Callable:
    """Turn DeepfeatErrors into one line on stderr and exit code 2, Ctrl-C into exit code 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DeepfeatError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            typer.secho(
                "interrupted: everything finished so far is saved; run the same command again to resume",
                err=True,
                fg=typer.colors.YELLOW,
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


def set_threads(threads: int | None) -> None:
    """Apply --threads to torch (None leaves torch's default)."""
    if threads is not None:
        import torch

        if threads < 1:
            raise typer.BadParameter("--threads must be at least 1")
        torch.set_num_threads(threads)


def setup_logging(verbose: bool) -> None:
    """INFO logs with --verbose, warnings otherwise."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """Plain aligned text table."""
    cells = [[str(c) for c in header]] + [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
