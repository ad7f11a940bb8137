"""A finished run read back from its folder (or checkpoint): options, networks, history, data."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from deepfeat.backbones.bigan import KIND, MARKER
from deepfeat.checkpoint import load_checkpoint
from deepfeat.errors import CheckpointError, ConfigError
from deepfeat.tasks.bigan.models import MNIST_PIXELS, Networks, build_networks
from deepfeat.tasks.bigan.options import TrainOptions
from deepfeat.tasks.bigan.training import CHECKPOINT
from deepfeat.validation import check_device


@dataclass
class Run:
    """A run loaded for evaluation: networks in evaluation mode (batch norm statistics as saved)."""

    folder: Path
    checkpoint: Path
    options: TrainOptions
    networks: Networks
    model: dict
    history: list[dict]
    data: dict
    epoch: int


def checkpoint_path(run: str | os.PathLike) -> Path:
    """``RUN/last.pt`` for a run folder, or the checkpoint file itself."""
    path = Path(run)
    if path.is_dir():
        path = path / CHECKPOINT
        if not path.is_file():
            raise ConfigError(
                f"{run}: no {CHECKPOINT} in this folder; give the --out folder of 'deepfeat bigan train'"
            )
    elif not path.is_file():
        raise ConfigError(f"{run}: no such run folder or checkpoint")
    return path


def options_from(saved: dict) -> TrainOptions:
    """TrainOptions from a checkpoint's JSON settings (unknown keys refused)."""
    known = {f.name for f in fields(TrainOptions)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise CheckpointError(f"checkpoint settings this deepfeat does not know: {unknown}")
    # the device it trained on is not the reader's: load_run takes its own (a run trained on a GPU
    # loads on a machine without one)
    values = {**saved, "device": None}
    if "encoder_widths" in values:
        values["encoder_widths"] = tuple(values["encoder_widths"])
    return TrainOptions(**values).validate()


def load_run(run: str | os.PathLike, device: str | None = None) -> Run:
    """Read the run at ``run`` (its folder or checkpoint) without running code from the file."""
    path = checkpoint_path(run)
    ck = load_checkpoint(path, kind=KIND)
    try:
        options = options_from(ck.meta["options"])
        model = ck.meta[MARKER]
        in_features = int(model.get("in_features") or MNIST_PIXELS)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged BiGAN checkpoint ({exc})") from None
    with torch.random.fork_rng(devices=[]):
        nets = build_networks(options, in_features)
    try:
        for name, net in nets.items():
            net.load_state_dict(ck.state[name])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the networks do not fit the saved weights ({exc})") from None
    nets.to(check_device(device)).train(False)
    for _, net in nets.items():
        for p in net.parameters():
            p.requires_grad_(False)
    return Run(
        folder=path.parent,
        checkpoint=path,
        options=options,
        networks=nets,
        model=model,
        history=list(ck.meta.get("history") or []),
        data=dict(ck.meta.get("data") or {}),
        epoch=int(ck.meta.get("epoch", 0)),
    )
