"""Checks for a machine with a CUDA GPU, in one short run (under 5 minutes): each check is a named
function returning a dict; main() runs them in turn and writes benchmarks/results/gpu_check.json.

Without CUDA it prints so and writes a JSON saying the checks were skipped (``--cpu`` runs the same
checks on the CPU against itself at small sizes, to try the script; written to gpu_check_cpu_trial.json).

Checks
------
extraction, amp, gradients, activeness, fisher (benchmarks/_gpu_extraction.py)
    CPU/GPU equality of the features within a stated tolerance, and images/s of the extraction vs a
    bare forward pass on the GPU; the accuracy cost and speed of mixed precision.
probe_fit (benchmarks/_gpu_probes.py)
    LinearProbe fit speed and chosen C on CUDA vs the CPU at the Caltech-101 shape, and the linear kernel.

Usage: python benchmarks/gpu_check.py [--only NAME ...] [--out PATH] [--cpu]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from _gpu_extraction import CHECKS as EXTRACTION_CHECKS
from _gpu_probes import CHECKS as PROBE_CHECKS
from _gpu_probes import CPU_TRIAL as PROBE_CPU_TRIAL
from _machine import machine

from deepfeat.fileio import write_json

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "gpu_check.json"

#: the checks, in the order they run
CHECKS: list[tuple[str, Callable[[], dict]]] = [*EXTRACTION_CHECKS, *PROBE_CHECKS]

#: keyword arguments of each check in the CPU trial (small sizes, device "cpu")
EXTRACTION_CPU_TRIAL = {"device": "cpu", "n_speed": 16, "n_equal": 8, "batch": 8}
CPU_TRIAL = {
    **{name: EXTRACTION_CPU_TRIAL for name, _ in EXTRACTION_CHECKS},
    **{name: PROBE_CPU_TRIAL for name, _ in PROBE_CHECKS},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="*", help=f"checks to run (default all: {', '.join(n for n, _ in CHECKS)})"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cpu", action="store_true", help="try the checks on the CPU at small sizes")
    args = parser.parse_args(argv)
    report = {"benchmark": "gpu_check", "machine": machine(), "checks": {}}
    checks = CHECKS
    if args.cpu:
        checks = [(name, functools.partial(fn, **CPU_TRIAL[name])) for name, fn in CHECKS]
        report["tried_on_cpu"] = CPU_TRIAL
        args.out = args.out.with_name("gpu_check_cpu_trial.json")
    elif not torch.cuda.is_available():
        print("CUDA is not available here: every GPU check skipped")
        report["skipped"] = "CUDA not available"
        write_json(args.out, report)
        print(f"wrote {args.out}")
        return 0
    else:
        report["gpu"] = torch.cuda.get_device_name(0)
    for name, check in checks:
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        try:
            result = check()
        except Exception as exc:  # a failed check is reported, the others still run
            result = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        result["seconds"] = time.perf_counter() - start
        report["checks"][name] = result
        print(f"{name}: {'ok' if result.get('ok') else 'FAILED'} in {result['seconds']:.1f} s", flush=True)
        write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0 if all(r.get("ok") for r in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
