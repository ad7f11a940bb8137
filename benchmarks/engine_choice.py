"""The evidence behind the distributed backend: Dask distributed vs Ray Data, measured the same way.

For the engine importable in this interpreter (``--engine dask`` or ``--engine ray``):

- install size: megabytes the engine's distributions add to site-packages (from their RECORD files,
  over the engine and every dependency not already required by deepfeat itself);
- start-up: seconds from nothing to 2 local worker processes ready (median of ``--repeats`` runs, each
  in a fresh cluster), and the time to shut it down;
- fault handling: 8 batches of 0.6 s work over 2 workers (one model-holding worker per process: a
  Dask worker process / a Ray Data actor), one worker process killed by its PID after the first
  results came back: are all 8 batches returned, none twice, and how long does the run take.

Run each engine in its own virtual environment (so that neither pulls in the other), e.g.

    python -m venv /tmp/ev-dask && /tmp/ev-dask/bin/pip install distributed
    python -m venv /tmp/ev-ray && /tmp/ev-ray/bin/pip install 'ray[data]'
    /tmp/ev-dask/bin/python benchmarks/engine_choice.py --engine dask
    /tmp/ev-ray/bin/python benchmarks/engine_choice.py --engine ray

Writes benchmarks/results/engine_choice_<engine>.json. Needs only the engine (no torch, no deepfeat).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
N_BATCHES = 8
WORK_S = 0.6
#: deepfeat's own requirements and their dependencies are installed anyway; not counted for an engine.
BASE = {"numpy", "pip", "setuptools", "wheel", "packaging"}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def install_size(root: str) -> dict:
    """Megabytes of ``root`` and its dependency closure in site-packages (from the RECORD files)."""
    seen, todo, sizes = set(), [root], {}
    while todo:
        name = _norm(todo.pop())
        if name in seen or name in BASE:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        total = 0
        for f in dist.files or []:
            with contextlib.suppress(OSError):
                total += f.locate().stat().st_size
        sizes[name] = round(total / 2**20, 1)
        for req in dist.requires or []:
            if "extra ==" in req and 'extra == "data"' not in req:
                continue
            todo.append(
                req.split(";")[0]
                .split("[")[0]
                .split("<")[0]
                .split(">")[0]
                .split("=")[0]
                .split("!")[0]
                .split("~")[0]
                .strip()
            )
    return {"total_mb": round(sum(sizes.values()), 1), "packages": dict(sorted(sizes.items()))}


def work(i: int) -> tuple[int, int]:
    time.sleep(WORK_S)
    return i, os.getpid()


# -- Dask ---------------------------------------------------------------------------------------
def dask_start():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(2)
    return client, cluster


def dask_stop(handle) -> None:
    client, cluster = handle
    client.close()
    cluster.close()


def dask_fault() -> dict:
    from distributed import as_completed

    client, cluster = dask_start()
    try:
        pids = list(client.run(os.getpid).values())
        start = time.perf_counter()
        futures = [client.submit(work, i, pure=False) for i in range(N_BATCHES)]
        got, killed = [], None
        for fut in as_completed(futures):
            got.append(fut.result())
            if killed is None:
                busy = [p for p in pids if p != got[-1][1]] or pids
                killed = busy[0]
                os.kill(killed, signal.SIGKILL)
        seconds = time.perf_counter() - start
    finally:
        dask_stop((client, cluster))
    return _fault_summary(got, killed, seconds)


# -- Ray ----------------------------------------------------------------------------------------
def ray_start(cpus: int = 2):
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    return ray


def ray_stop(handle) -> None:
    handle.shutdown()


class _RayWorker:
    def __call__(self, batch):
        import numpy as np

        out = [work(int(i)) for i in batch["id"]]
        return {"id": np.array([o[0] for o in out]), "pid": np.array([o[1] for o in out])}


def _ray_fault_run(cpus: int, limit_s: float) -> dict:
    import threading

    import ray

    try:
        ray_start(cpus)
    except Exception as exc:  # e.g. the raylet or GCS did not come up in time on a loaded machine
        ray.shutdown()
        return {"ray_cpus": cpus, "error": f"start-up failed: {type(exc).__name__}: {str(exc)[:300]}"}
    got: list[tuple[int, int]] = []
    state: dict = {"killed": None, "error": None}

    def consume():
        try:
            ds = ray.data.range(N_BATCHES, override_num_blocks=N_BATCHES).map_batches(
                _RayWorker, batch_size=1, concurrency=2
            )
            for batch in ds.iter_batches(batch_size=1):
                got.append((int(batch["id"][0]), int(batch["pid"][0])))
                if state["killed"] is None:
                    state["killed"] = got[-1][1]
                    os.kill(state["killed"], signal.SIGKILL)
        except Exception as exc:  # the engine gave up: record how
            state["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"

    start = time.perf_counter()
    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(limit_s)
    seconds = time.perf_counter() - start
    stalled = thread.is_alive()
    ray.shutdown()
    out = _fault_summary(got, state["killed"], seconds)
    out.update(ray_cpus=cpus, stalled_after_s=limit_s if stalled else None, error=state["error"])
    return out


def ray_fault() -> dict:
    """With one CPU more than actors (room for Ray Data's read tasks), then with as many as actors."""
    return {"cpus_3": _ray_fault_run(3, 180.0), "cpus_2": _ray_fault_run(2, 90.0)}


def _fault_summary(got: list[tuple[int, int]], killed: int | None, seconds: float) -> dict:
    ids = [i for i, _ in got]
    return {
        "batches": N_BATCHES,
        "returned": len(got),
        "distinct": len(set(ids)),
        "all_returned_once": sorted(ids) == list(range(N_BATCHES)),
        "killed_pid": killed,
        "seconds": round(seconds, 2),
        "ideal_seconds_2_workers": N_BATCHES * WORK_S / 2,
    }


ENGINES = {
    "dask": ("distributed", dask_start, dask_stop, dask_fault),
    "ray": ("ray", ray_start, ray_stop, ray_fault),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=sorted(ENGINES), required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dist, start_fn, stop_fn, fault_fn = ENGINES[args.engine]
    starts, stops = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        handle = start_fn()
        starts.append(time.perf_counter() - t)
        t = time.perf_counter()
        stop_fn(handle)
        stops.append(time.perf_counter() - t)
    out = {
        "engine": args.engine,
        "version": metadata.version(dist),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "install": install_size(dist if args.engine == "dask" else "ray"),
        "startup_s": {"median": round(statistics.median(starts), 2), "all": [round(s, 2) for s in starts]},
        "shutdown_s": {"median": round(statistics.median(stops), 2), "all": [round(s, 2) for s in stops]},
        "fault": fault_fn(),
        "note": "shared 2-core machine under load from other engineers (see load_average)",
    }
    out["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"engine_choice_{args.engine}.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
