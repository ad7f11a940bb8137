"""Constants and argument checks shared by the modules of :mod:`deepfeat.features.fisher`."""

from __future__ import annotations

import numbers

import torch

from deepfeat.errors import ConfigError
from deepfeat.validation import check_choice

CONVENTIONS = ("paper", "skimage")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Descriptor rows encoded together on the CPU, per thread (up to 2): large enough that the per-chunk
#: overhead of a dozen operations is small, small enough that the (rows, 2D + 1) block stays in the
#: last-level cache between the two matrix products that read it (fastest of 4096-32768 on the 2-core
#: test machine for T = 49 to 10^4 descriptors per image).
CHUNK_ROWS = 1 << 14
#: Descriptor rows per chunk on a GPU, where larger blocks keep the device busy.
CHUNK_ROWS_CUDA = 1 << 18


def chunk_rows_for(device: torch.device) -> int:
    """The default number of descriptor rows encoded at once on ``device`` (on the CPU, CHUNK_ROWS per
    torch thread up to 2, so that each parallel operation has enough work per thread)."""
    if device.type == "cuda":
        return CHUNK_ROWS_CUDA
    return CHUNK_ROWS * max(1, min(torch.get_num_threads(), 2))


def check_convention(convention: str) -> str:
    return check_choice("Fisher vector convention", convention, CONVENTIONS)


def check_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a dtype name (``"float32"`` or ``"float64"``)."""
    return DTYPES[check_choice("dtype", dtype, DTYPES)]


def check_power(power) -> None:
    if power is not None and not (
        isinstance(power, numbers.Real) and not isinstance(power, bool) and 0 < power <= 1
    ):
        raise ConfigError(f"power must be a number in (0, 1] or None (no power normalisation), got {power!r}")


def check_random_state(random_state) -> None:
    if random_state is not None and (
        not isinstance(random_state, numbers.Integral) or isinstance(random_state, bool) or random_state < 0
    ):
        raise ConfigError(f"random_state must be a non-negative integer or None, got {random_state!r}")


def check_layer_shape(layer_shape) -> tuple[int, int, int] | None:
    """``layer_shape`` as a (C, H, W) tuple of positive ints, or None."""
    if layer_shape is None:
        return None
    try:
        shape = tuple(int(s) for s in layer_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or any(s < 1 for s in shape) or shape != tuple(layer_shape):
        raise ConfigError(
            f"layer_shape must be (C, H, W) with positive integer sizes or None, got {layer_shape!r}"
        )
    return shape
