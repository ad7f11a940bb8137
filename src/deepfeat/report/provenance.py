"""What every result file records about the environment that produced it: library versions that touch
the numbers, the command line, threads, device and the allocator setting."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from datetime import datetime, timezone

from deepfeat._runtime import allocator_state
from deepfeat._version import __version__
from deepfeat.fileio import SCHEMA_VERSION

#: Distributions whose versions can change a number deepfeat reports.
PACKAGES = (
    "numpy",
    "scipy",
    "torch",
    "torchvision",
    "timm",
    "scikit-learn",
    "scikit-image",
    "pillow",
    "opencv-contrib-python-headless",
    "pycocotools",
)


def versions() -> dict[str, str]:
    """deepfeat, Python and the installed versions of :data:`PACKAGES`."""
    out = {"deepfeat": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def environment(device: str | None = None) -> dict:
    """Versions, platform, command line, torch threads, device and the allocator setting, now."""
    import torch

    return {
        "schema": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "platform": platform.platform(),
        "command": [os.path.basename(sys.argv[0]), *sys.argv[1:]] if sys.argv and sys.argv[0] else [],
        "torch_threads": torch.get_num_threads(),
        "device": device or "cpu",
        "allocator": allocator_state(),
    }
