"""Checks of user-given arguments, shared by every layer: names from a fixed set, lists of names,
numbers in a range. Each failure raises a :class:`~deepfeat.errors.ConfigError` (also a ``ValueError``)
that names the argument and says what would be valid; unknown names list the valid ones, closest first.
Array inputs that are sparse, complex or of another width than fitted raise a
:class:`~deepfeat.errors.DataError` the same way.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np

from deepfeat.errors import ConfigError, DataError, UnknownNameError


def close_matches(name: str, valid: Iterable[str], n: int = 5) -> list[str]:
    """Up to ``n`` names of ``valid`` that look like ``name`` (typos, case), best first."""
    valid = list(valid)
    lowered = {v.lower(): v for v in valid}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    hits += [lowered[v] for v in lowered if name.lower() in v and lowered[v] not in hits][: n - len(hits)]
    return [lowered.get(h, h) for h in hits][:n]


def check_choice(what: str, value: str, valid: Iterable[str]) -> str:
    """``value`` when it is one of ``valid``; otherwise an :class:`UnknownNameError` listing them
    (close matches first)."""
    valid = list(valid)
    if value in valid:
        return value
    close = close_matches(str(value), valid)
    raise UnknownNameError(what, str(value), close + [v for v in valid if v not in close])


def as_names(value: str | Sequence[str], what: str) -> list[str]:
    """A list of names from one name or a sequence of names, without empty ones.

    Comma-separated strings belong to the command line: a string holding a comma is refused with a
    message showing the list to pass instead.
    """
    if isinstance(value, str):
        if "," in value:
            parts = [p.strip() for p in value.split(",") if p.strip()]
            raise ConfigError(f"{what} takes a list of names, e.g. {parts!r}, not the string {value!r}")
        names = [value.strip()]
    else:
        try:
            names = [str(v).strip() for v in value]
        except TypeError:
            raise ConfigError(f"{what} must be a name or a list of names, got {value!r}") from None
    names = [n for n in names if n]
    if not names:
        raise ConfigError(f"{what} names nothing")
    return names


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int within [minimum, maximum]; a clear error otherwise. Any integer type is
    taken (NumPy's too, as parameter grids hold them), and floats with a whole value; not booleans."""
    whole = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer()
    )
    if not whole or isinstance(value, bool | np.bool_):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def check_bool(name: str, value) -> bool:
    """``value`` when it is True or False (NumPy booleans too); a ConfigError naming ``name`` else."""
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_float(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the interval given by ``low``/``high`` (closed unless ``*_open``)."""
    if isinstance(value, bool | np.bool_):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    lo_ok = low is None or (x > low if low_open else x >= low)
    hi_ok = high is None or (x < high if high_open else x <= high)
    if not (lo_ok and hi_ok):
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        span = f"{left}{lo}, {hi}{right}"
        raise ConfigError(f"{name} must be in {span}, got {value!r}")
    return x


def refuse_sparse(value, name: str, what: str) -> None:
    """A DataError when ``value`` is a SciPy or torch sparse matrix; ``what``: the dense input that
    would do (e.g. "the probes take dense (n_samples, n_features) arrays")."""
    if getattr(value, "is_sparse", False) or (hasattr(value, "toarray") and hasattr(value, "nnz")):
        raise DataError(
            f"{name} is a sparse matrix, and sparse input is not supported: {what} ({name}.toarray(), "
            "or .to_dense() for a torch tensor)"
        )


def refuse_complex(value, name: str, what: str) -> None:
    """A DataError when the array or tensor ``value`` holds complex numbers (converting them to real
    ones would drop the imaginary part); ``what``: the real input that would do."""
    if callable(getattr(value, "is_complex", None)):  # a torch tensor
        complex_values = value.is_complex()
    else:  # a NumPy array
        complex_values = value.dtype.kind == "c"
    if complex_values:
        raise DataError(f"{name} has complex values: Complex data not supported ({what})")


def check_n_features(n_features: int, expected: int, estimator: object, what: str = "number") -> None:
    """A DataError when input of ``n_features`` columns reaches ``estimator`` fitted on ``expected``."""
    if n_features != expected:
        raise DataError(
            f"X has {n_features} features, but {type(estimator).__name__} is expecting {expected} "
            f"features as input (the {what} it was fitted on)"
        )


def check_device(device, name: str = "device"):
    """``device`` as a :class:`torch.device` (None: the CPU): 'cpu', 'cuda', 'cuda:N' or a
    torch.device; a ConfigError naming ``name`` for any other device, for CUDA where there is none,
    and for a CUDA index this machine lacks."""
    import torch

    try:
        dev = device
        if not isinstance(dev, torch.device):
            dev = torch.device("cpu" if device is None else device)
    except (TypeError, RuntimeError):
        raise ConfigError(f"{name} must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"{name} must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{name} {device!r} asked for, but CUDA is not available here; use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{name} {device!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                f"device(s): use 'cuda:0' to 'cuda:{torch.cuda.device_count() - 1}'"
            )
    return dev
