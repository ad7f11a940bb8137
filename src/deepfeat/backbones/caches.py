"""Where pretrained weights already lie on this machine: the Hugging Face hub cache and torch's hub cache.

Both are read at call time from the environment, as huggingface_hub and torch resolve them:

- Hugging Face: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``XDG_CACHE_HOME/huggingface/hub``, else
  ``~/.cache/huggingface/hub``; a repository ``org/name`` lives in ``models--org--name``, its files in
  ``snapshots/<commit>/`` with ``refs/main`` naming the commit;
- torch: ``torch.hub.get_dir()`` (``TORCH_HOME/hub``, else ``~/.cache/torch/hub``), files downloaded
  from a URL in ``checkpoints/<the URL's file name>``.

``HF_HUB_OFFLINE`` (1 / true / yes / on) forbids downloads: a file missing from the caches is then
an error naming where it was looked for, never a network request. Nothing here touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (now, or when huggingface_hub was imported)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a dependency of timm
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub resolves it from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hf_repo_dir(repo_id: str) -> Path:
    """Folder of a model repository ``org/name`` in the hub cache (it may not exist)."""
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def _split_revision(repo_id: str) -> tuple[str, str | None]:
    repo, _, revision = repo_id.partition("@")
    return repo, revision or None


def hf_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``org/name[@revision]``: the one ``refs/<revision or main>``
    names, else the only one there is; None when the repository is not cached."""
    repo, revision = _split_revision(repo_id)
    snapshots = hf_repo_dir(repo) / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = hf_repo_dir(repo) / "refs" / (revision or "main")
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        if (snapshots / commit).is_dir():
            return snapshots / commit
    if revision and (snapshots / revision).is_dir():
        return snapshots / revision
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    return found[0] if len(found) == 1 else None


def hf_cached_file(repo_id: str, filenames: list[str]) -> Path | None:
    """The first of ``filenames`` present in the cached snapshot of ``repo_id`` (None: none is)."""
    snapshot = hf_snapshot(repo_id)
    if snapshot is None:
        return None
    for name in filenames:
        path = snapshot / name
        if path.is_file():
            return path
    return None


def torch_hub_file(url: str) -> Path:
    """Where torch's hub keeps the file downloaded from ``url`` (it may not exist)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
