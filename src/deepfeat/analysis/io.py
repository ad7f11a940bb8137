"""Writing analysis results: one JSON file with the caller's provenance, plus the result's PNG plots."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from deepfeat._version import __version__
from deepfeat.errors import ConfigError


def to_jsonable(obj: Any) -> Any:
    """A JSON-ready copy of ``obj``: results with ``to_dict()`` and dataclasses as dicts, numpy arrays and
    scalars as lists and numbers, tuples and sets as lists, paths as strings, NaN and infinities as None
    (JSON has no such numbers)."""
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str | int | bool) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _versions() -> dict:
    out = {"deepfeat": __version__, "python": platform.python_version(), "numpy": np.__version__}
    try:
        import sklearn
        import torch

        out.update({"torch": torch.__version__, "scikit-learn": sklearn.__version__})
    except ImportError:  # pragma: no cover
        pass
    return out


def write_analysis(
    out_dir: str | Path,
    name: str,
    result: Any,
    *,
    provenance: Mapping | None = None,
    plots: Mapping[str, Callable[[Path], Any]] | None = None,
) -> dict[str, Path]:
    """Write ``<name>.json`` and the plots of one analysis into ``out_dir``; returns the written paths.

    ``result``: anything :func:`to_jsonable` handles (the analysis results have ``to_dict``).
    ``provenance``: what the caller knows about the inputs (backbone and weights id, layer, dataset
    fingerprint, seeds, ...), stored as given. ``plots``: {file stem: function writing a PNG to the path
    it is given}, e.g. ``{"aue_hist": lambda p: plot_aue_histograms(aue, p)}``; each is written as
    ``<name>_<stem>.png``. The JSON is written last, atomically, and lists the plot files.
    """
    if not isinstance(name, str) or not name or any(c in name for c in '/\\:*?"<>|') or name.startswith("."):
        raise ConfigError(f"name must be a plain file stem (letters, digits, '-', '_'), got {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for stem, draw in (plots or {}).items():
        if not callable(draw):
            raise ConfigError(f"plots[{stem!r}] must be a function taking the PNG path")
        target = out / f"{name}_{stem}.png"
        draw(target)
        paths[stem] = target
    payload = {
        "analysis": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "provenance": to_jsonable(dict(provenance or {})),
        "plots": {stem: p.name for stem, p in paths.items()},
        "result": to_jsonable(result),
    }
    target = out / f"{name}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    tmp.replace(target)
    paths["json"] = target
    return paths
