"""Timing that survives a re-measure, shared by every benchmark.

- :func:`interleaved` runs the compared methods in turn (A, B, C, A, B, C, ...) after a warm-up, so a
  change of machine load hits them alike, and reports the median of every method with its spread;
- :class:`LoadGuard` records the load average before and after a run and the CPU time other processes
  took during it, and flags (or refuses) a run taken while other processes used the cores;
- :func:`pinned_threads` sets torch's and the BLAS libraries' thread counts to the same value for every
  method (scikit-learn, numpy and torch otherwise each pick their own);
- :func:`earlier_results` gives a run that measures only some of a benchmark's parts the JSON of the
  run before, so that it keeps the other parts with the load they were measured under.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: The machine counts as busy at the start when the 1-minute load average is above this fraction of
#: the cores.
QUIET_LOAD_PER_CORE = 0.35
#: A run counts as quiet when other processes used at most this fraction of the cores' time during it
#: (the load average cannot tell: it counts the benchmark's own threads).
QUIET_OTHERS_FRACTION = 0.1


def _cpu_ticks() -> list[int] | None:
    """The aggregate 'cpu' line of /proc/stat (clock ticks since boot); None where it is unreadable."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def _busy_seconds() -> float | None:
    """CPU seconds spent by every process since boot (user, nice, system, irq, softirq)."""
    ticks = _cpu_ticks()
    if ticks is None:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _steal_seconds() -> float | None:
    """Seconds the hypervisor ran something else while this virtual machine's CPUs wanted to run
    (the 'steal' column, summed over CPUs); None where it is unreadable."""
    ticks = _cpu_ticks()
    return None if ticks is None or len(ticks) < 8 else ticks[7] / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds of this process (all threads) and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def pinned_threads(n: int | None = None) -> Iterator[int]:
    """Torch intra-op threads and BLAS threads set to ``n`` (default: every core) inside the block."""
    import torch  # here, so that LoadGuard and interleaved work without torch (engine_choice.py)
    from threadpoolctl import threadpool_limits

    n = n or cores()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield n
    finally:
        torch.set_num_threads(before)


def rotated(names: Sequence[Any], r: int) -> list[Any]:
    """Round ``r``'s order: ``names`` starting ``r`` places later (A B C, B C A, C A B, ...), so that
    no method always runs straight after the same other one."""
    k = r % len(names) if names else 0
    return [*names[k:], *names[:k]]


#: untimed pause before each timed call: BLAS worker threads keep spinning for a while after a call
#: (OpenBLAS about 0.1 s), and without it the method after a numpy/scipy one pays for that spin
SETTLE_S = 0.25


def interleaved(
    methods: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1, settle: float = SETTLE_S
) -> tuple[dict[str, dict], dict[str, Any]]:
    """Time every method ``repeats`` times, interleaved, after ``warmup`` untimed rounds, with an
    untimed pause of ``settle`` seconds before each timed call. Each timed round starts one method
    later than the one before (A B C, B C A, C A B, ...), so no method always runs straight after
    the same other one.

    Returns ({name: {"median", "min", "max", "spread", "times"}} in seconds, {name: last return value}).
    ``spread`` is (max - min) / median over the timed runs.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    results: dict[str, Any] = {}
    for _ in range(warmup):
        for name, fn in methods.items():
            results[name] = fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(repeats):
        for name in rotated(list(methods), r):
            fn = methods[name]
            time.sleep(settle)
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: summary(ts) for name, ts in times.items()}, results


def summary(times: Sequence[float], digits: int | None = None) -> dict[str, Any]:
    """{"median", "min", "max", "spread", "times"} of ``times``; ``spread`` is (max - min) / median.
    With ``digits``, the times are rounded to that many decimals and the spread to 3."""
    med = statistics.median(times)
    out = {
        "median": med,
        "min": min(times),
        "max": max(times),
        "spread": (max(times) - min(times)) / med if med > 0 else 0.0,
        "times": list(times),
    }
    if digits is None:
        return out
    rounded = {k: round(v, digits) for k, v in out.items() if k not in ("spread", "times")}
    return {**rounded, "spread": round(out["spread"], 3), "times": [round(t, digits) for t in times]}


def earlier_results(path: Path, load_key: str) -> dict[str, Any]:
    """The results a previous run wrote to ``path`` ({} if there are none), with the load record of
    the run that measured them under ``load_key`` (kept from that file when it was itself partial)."""
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    return {**earlier, load_key: earlier.get(load_key) or earlier.get("load")}


def ratio(timings: dict[str, dict], slow: str, fast: str) -> float:
    """Median time of ``slow`` over median time of ``fast`` (above 1: ``fast`` is faster)."""
    return timings[slow]["median"] / timings[fast]["median"]


class LoadGuard:
    """Load average before and after a measurement and the share of the cores other processes used
    during it; ``quiet`` tells whether the machine was otherwise idle.

    Use as a context manager; ``strict`` raises SystemExit when the machine is busy at the start
    (set ``DEEPFEAT_BENCH_ALLOW_LOAD=1`` to measure anyway: the JSON then says ``quiet: false``).
    """

    def __init__(self, strict: bool = False, limit_per_core: float = QUIET_LOAD_PER_CORE):
        self.strict = strict
        self.limit = limit_per_core * cores()
        self.before: list[float] = []
        self.after: list[float] = []
        self.others_fraction: float | None = None
        self.steal_fraction: float | None = None

    def __enter__(self) -> LoadGuard:
        self.before = [round(v, 2) for v in os.getloadavg()]
        self._busy, self._own, self._wall = _busy_seconds(), _own_seconds(), time.perf_counter()
        self._steal = _steal_seconds()
        self.others_fraction = self.steal_fraction = None
        busy = self.before[0] > self.limit
        if busy and self.strict and os.environ.get("DEEPFEAT_BENCH_ALLOW_LOAD") != "1":
            raise SystemExit(
                f"load average {self.before[0]} > {self.limit:.2f}: the machine is busy; wait, or set "
                "DEEPFEAT_BENCH_ALLOW_LOAD=1 to measure anyway (the results are then flagged)"
            )
        return self

    def __exit__(self, *exc) -> None:
        self.after = [round(v, 2) for v in os.getloadavg()]
        busy, wall = _busy_seconds(), time.perf_counter() - self._wall
        if busy is not None and self._busy is not None and wall > 0:
            others = (busy - self._busy) - (_own_seconds() - self._own)
            self.others_fraction = round(max(0.0, others) / (wall * cores()), 3)
        steal = _steal_seconds()
        if steal is not None and self._steal is not None and wall > 0:
            self.steal_fraction = round(max(0.0, steal - self._steal) / (wall * cores()), 3)

    @property
    def quiet(self) -> bool:
        """True when other processes used at most QUIET_OTHERS_FRACTION of the cores during the run
        (where /proc/stat is unreadable: when the load average stayed below the limit at both ends,
        which a benchmark's own threads can exceed)."""
        if self.others_fraction is not None:
            return self.others_fraction <= QUIET_OTHERS_FRACTION
        return bool(self.before) and max(self.before[0], (self.after or self.before)[0]) <= self.limit

    def to_dict(self) -> dict:
        return {
            "load_before": self.before,
            "load_after": self.after,
            "quiet_limit": round(self.limit, 2),
            "others_cpu_fraction": self.others_fraction,
            "others_cpu_limit": QUIET_OTHERS_FRACTION,
            # a virtual machine's CPUs taken by the host: not in others' CPU time, slows every method
            "steal_fraction": self.steal_fraction,
            "quiet": self.quiet,
        }
