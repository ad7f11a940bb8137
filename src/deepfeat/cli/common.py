"""Helpers shared by the CLI commands: one-line errors, thread settings, logging, shared options."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

import typer

from deepfeat.errors import DeepfeatError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

THREADS = typer.Option(None, "--threads", min=1, help="Torch CPU threads (default: torch's choice).")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Log what happens.")
DEVICE = typer.Option(
    None,
    "--device",
    help="Where the network runs: cpu, cuda, cuda:1 (default: cpu; with --cluster, the workers').",
)
AMP = typer.Option(
    False, "--amp", help="Mixed-precision forward pass (float16 on CUDA, bfloat16 on CPU); stored apart."
)
LOADER = typer.Option(
    None,
    "--loader",
    help="Decode images in threads or worker processes (default: processes with pinned memory on CUDA, "
    "threads on CPU).",
)
CLUSTER = typer.Option(
    None,
    "--cluster",
    help="Run the network on a Dask cluster: local:N (N worker processes here) or a scheduler address "
    "(tcp://HOST:8786); this process writes the store. Needs pip install 'deepfeat[dask]'.",
)


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

        torch.set_num_threads(threads)


def setup_logging(verbose: bool) -> None:
    """INFO logs with --verbose, warnings otherwise."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def quiet_opencv() -> None:
    """Keep FFmpeg's and OpenCV's warnings about damaged files off the terminal (deepfeat reports
    every bad file itself); ``OPENCV_FFMPEG_LOGLEVEL`` set by the user wins."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except (ImportError, AttributeError):  # reported when a video is opened
        pass
