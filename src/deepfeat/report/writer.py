"""The one writer of result files for every job (evaluation, analyses, tasks): ``<name>.json`` with a
fixed layout and the job's PNG plots, written so that an interrupted run never leaves a half file.

Layout of every result JSON (``schema`` 1)::

    {"schema": 1, "kind": "evaluation" | "analysis" | ..., "name": ..., "deepfeat": version,
     "created": ISO time, "versions": {...}, "environment": {...}, "provenance": {...},
     "plots": {stem: file name}, "result": {...}}

``result`` is the job's own content, made JSON-ready by :func:`deepfeat.fileio.to_jsonable` (NaN and
infinities become ``null``); ``provenance`` is what the caller knows about its inputs (backbone and
weights id, layers, dataset fingerprint, seeds, ...); ``environment`` is this process's versions,
command line, threads and allocator setting (:mod:`deepfeat.report.provenance`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from deepfeat._version import __version__
from deepfeat.errors import ConfigError
from deepfeat.fileio import SCHEMA_VERSION, mark_output_dir, to_jsonable, write_json
from deepfeat.report.provenance import environment

_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _check_stem(stem: str, what: str) -> None:
    if not isinstance(stem, str) or not _STEM.match(stem) or ".." in stem:
        raise ConfigError(f"{what} must be a plain file stem (letters, digits, '-', '_', '.'), got {stem!r}")


def write_result(
    out: str | os.PathLike,
    name: str,
    result: Any,
    *,
    kind: str = "analysis",
    provenance: Mapping | None = None,
    plots: Mapping[str, Callable[[Path], Any]] | None = None,
    plot_prefix: str | None = None,
    device: str | None = None,
) -> dict[str, Path]:
    """Write the plots and ``<name>.json`` of one job into folder ``out``; returns the paths written
    (``"json"`` and one per plot stem).

    ``plots``: {stem: function writing a PNG to the path it is given}; each becomes
    ``<plot_prefix><stem>.png`` (default prefix ``<name>_``). The JSON is written last, atomically,
    and lists the plot files.
    """
    _check_stem(name, "name")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mark_output_dir(out)  # (results kept inside an image folder are not read as a class)
    prefix = f"{name}_" if plot_prefix is None else plot_prefix
    paths: dict[str, Path] = {}
    for stem, draw in (plots or {}).items():
        _check_stem(f"{prefix}{stem}", f"plot {stem!r}")
        if not callable(draw):
            raise ConfigError(f"plots[{stem!r}] must be a function taking the PNG path")
        target = out / f"{prefix}{stem}.png"
        draw(target)
        paths[stem] = target
    env = environment(device)
    payload = {
        "schema": SCHEMA_VERSION,
        "kind": kind,
        "name": name,
        "deepfeat": __version__,
        "created": env.pop("created"),
        "versions": env.pop("versions"),
        "environment": env,
        "provenance": to_jsonable(dict(provenance or {})),
        "plots": {stem: p.name for stem, p in paths.items()},
        "result": to_jsonable(result),
    }
    paths["json"] = write_json(out / f"{name}.json", payload)
    return paths
