"""The machine description every benchmark writes into its JSON (shared by the bench_* scripts)."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone

import numpy as np
import torch


def machine(**extra: str) -> dict:
    """When it was taken (UTC), Python, platform, cores, load average, torch / numpy / scikit-learn
    versions, BLAS threads."""
    import sklearn
    from threadpoolctl import threadpool_info

    blas = [
        {k: lib.get(k) for k in ("internal_api", "num_threads", "version")}
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]
    return {
        "recorded_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        **extra,
        "blas": blas,
    }
