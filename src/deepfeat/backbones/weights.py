"""The one place that turns a ``weights=`` argument into loaded weights and a weights identity.

``weights`` is None (the backbone's default: its bundled file when it has one, else a seeded random
initialisation with a warning), ``"random"`` (a seeded random initialisation, no warning) or the path
of a weights file (a PyTorch state dict, optionally converted from another key style). The identity
goes into every feature's provenance: ``sha256:<digest of the file>`` or ``random:seed=<n>``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from deepfeat.backbones.backbone import load_weights_strict, read_state_dict, sha256_file

StateConverter = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def apply_weights(
    module: nn.Module,
    weights: str | os.PathLike | None,
    *,
    name: str,
    seed: int = 0,
    default: Path | None = None,
    convert: StateConverter | None = None,
) -> tuple[str, str]:
    """Load ``weights`` into ``module`` (built with seed ``seed``); returns (weights id, source).

    ``default``: the file used when ``weights`` is None (None: a random initialisation, warned).
    ``convert``: maps a state dict in another key style onto the module's keys.
    """
    if weights is None and default is not None:
        weights = default
    if weights is None or str(weights) == "random":
        if weights is None:
            warnings.warn(
                f"{name}: no weights file given; using a random initialisation (seed {seed}). "
                f"Pass weights=<path to a state dict of {name}> for pretrained features.",
                stacklevel=3,
            )
        return f"random:seed={seed}", "random"
    path = Path(weights)
    state = read_state_dict(path)
    if convert is not None:
        state = convert(state)
    load_weights_strict(module, state, str(path))
    return f"sha256:{sha256_file(path)}", str(path)
