"""How long a result fetched from a just-killed Dask worker takes, with Dask's connect timeout (30 s)
and with a short one (5 s, set in the driver only, as deepfeat would set it; tried and not kept).

Dask retries a refused connection until ``distributed.comm.timeouts.connect`` (30 s by default):

- (a) a connection to a closed local port, timed under each setting (deterministic);
- (b) kill-then-fetch trials: a 0.2 s task finishes on a 2-worker local cluster, the worker holding
  its result is killed (SIGKILL), and the result is fetched at once; usually the scheduler has noticed
  the death and runs the task again (about 0.2 s), rarely it first tries the dead worker's address and
  the fetch waits for the connect timeout. The settings alternate by round (each round a fresh
  cluster per setting, started with Dask's settings, the first setting rotating); a fetch over 1 s
  counts as a stall; a fetch or a restart of the killed worker not back within HANG_S ends that
  cluster's round and is counted.

Writes benchmarks/results/dask_dead_worker.json. Usage:
python benchmarks/dask_dead_worker.py [--rounds 3] [--trials 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

from _timing import LoadGuard, cores, rotated

RESULTS = Path(__file__).resolve().parent / "results"
KEY = "distributed.comm.timeouts.connect"
TASK_S = 0.2
STALL_S = 1.0
HANG_S = 120.0
SHORT = {KEY: "5s"}
#: what a trial records instead of seconds when something did not come back within HANG_S
RESTART_LOST, FETCH_LOST = "restart not back", "fetch not back"


def _task(i: int) -> int:
    time.sleep(TASK_S)
    return i


def refused_connect_seconds() -> float:
    """Seconds until Dask gives up connecting to a closed local port."""
    from distributed.comm import connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def attempt() -> float:
        start = time.perf_counter()
        try:
            await connect(f"tcp://127.0.0.1:{port}")
        except OSError:
            return time.perf_counter() - start
        raise RuntimeError(f"port {port} accepted a connection")

    return asyncio.run(attempt())


def kill_then_fetch(trials: int, config: dict) -> list[float | str]:
    """Seconds of each fetch of a result whose worker was killed just before, on a fresh cluster
    started with Dask's settings and then run with ``config`` in this process only (workers and
    nannies keep theirs)."""
    import dask
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
    )
    client = Client(cluster)
    client.wait_for_workers(2, timeout=120)
    times = []
    try:
        with dask.config.set(config):
            times = _trials(client, trials)
    finally:
        client.close()
        cluster.close()
    return times


def _trials(client, trials: int) -> list[float | str]:
    """Fetch seconds; a fetch, or the killed worker's restart, not back within HANG_S ends the trials
    with FETCH_LOST or RESTART_LOST."""
    from distributed import wait

    outcomes: list[float | str] = []
    for i in range(trials):
        try:
            client.wait_for_workers(2, timeout=HANG_S)  # the nanny restarts the killed worker
        except TimeoutError:
            return [*outcomes, RESTART_LOST]
        pids = client.run(os.getpid)
        future = client.submit(_task, i, pure=False)
        wait(future)
        holder = next(iter(client.who_has(future)[future.key]))
        os.kill(pids[holder], signal.SIGKILL)
        start = time.perf_counter()
        try:
            got = future.result(timeout=HANG_S)
        except TimeoutError:
            return [*outcomes, FETCH_LOST]
        if got != i:
            raise RuntimeError(f"trial {i} returned another task's result")
        outcomes.append(round(time.perf_counter() - start, 3))
    return outcomes


def _summary(outcomes: list[float | str]) -> dict:
    seconds = [t for t in outcomes if not isinstance(t, str)]
    quick = [t for t in seconds if t <= STALL_S]
    return {
        "trials": len(outcomes),
        "trials_completed": len(seconds),
        "stalls": [t for t in seconds if t > STALL_S],
        "fetches_not_back": outcomes.count(FETCH_LOST),
        "restarts_not_back": outcomes.count(RESTART_LOST),
        "others_min_max": [min(quick, default=None), max(quick, default=None)],
        "seconds": outcomes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=20, help="kill-then-fetch trials per cluster")
    args = parser.parse_args()
    if args.rounds < 1 or args.trials < 1:
        parser.error(f"--rounds and --trials must be at least 1, got {args.rounds} and {args.trials}")
    import dask
    import distributed

    settings = {"dask default": {}, "driver 5 s": dict(SHORT)}
    names = list(settings)
    refused: dict[str, float] = {}
    fetches: dict[str, list[float | str]] = {name: [] for name in names}
    with LoadGuard() as guard:
        for name, config in settings.items():
            with dask.config.set(config):
                refused[name] = round(refused_connect_seconds(), 2)
                print(f"(a) {name} ({dask.config.get(KEY)}): refused connect {refused[name]} s", flush=True)
        for r in range(args.rounds):
            for name in rotated(names, r):
                outcomes = kill_then_fetch(args.trials, settings[name])
                fetches[name] += outcomes
                odd = [t for t in outcomes if isinstance(t, str) or t > STALL_S]
                print(f"(b) round {r} {name}: {len(outcomes)} trials, stalls {odd}", flush=True)
    out = {
        "benchmark": "dask_dead_worker",
        "connect_timeout": {name: dask.config.get(KEY) if not c else c[KEY] for name, c in settings.items()},
        "refused_connect_seconds": refused,
        "kill_then_fetch": {name: _summary(outcomes) for name, outcomes in fetches.items()},
        "task_seconds": TASK_S,
        "hang_seconds": HANG_S,
        "cores": cores(),
        "dask": distributed.__version__,
        "load": guard.to_dict(),
        "recorded_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "dask_dead_worker.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
