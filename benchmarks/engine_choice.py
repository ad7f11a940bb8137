"""The evidence behind the distributed backend: Dask distributed vs Ray Data, measured the same way.

For the engine importable in this interpreter (``--engine dask`` or ``--engine ray``):

- install size: megabytes the engine's distributions add to site-packages (from their RECORD files,
  over the engine and every dependency not already required by deepfeat itself);
- start-up: seconds from nothing to 2 local worker processes ready (median of ``--repeats`` runs, each
  in a fresh cluster), and the time to shut it down;
- fault handling: 8 batches of 0.6 s work over 2 workers (one model-holding worker per process: a
  Dask worker process / a Ray Data actor), one worker process killed by its PID after the first
  results came back: are all 8 batches returned, none twice, and how long does the run take.

Each engine runs in its own virtual environment (so that neither pulls in the other); the engines
alternate, a fresh process each time (start-up then includes the import), for ``--rounds`` rounds:

    python -m venv /tmp/ev-dask && /tmp/ev-dask/bin/pip install distributed
    python -m venv /tmp/ev-ray && /tmp/ev-ray/bin/pip install 'ray[data]'
    python benchmarks/engine_choice.py --rounds 5 \
        --interleave dask=/tmp/ev-dask/bin/python ray=/tmp/ev-ray/bin/python

Writes benchmarks/results/engine_choice_<engine>.json: medians over the rounds with their spread,
and every round's load record (a round counts as quiet when other processes used at most 10% of the
cores). ``--engine dask`` alone measures one process and prints its record. Needs only the engine
and the standard library (no torch, no deepfeat).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from _timing import QUIET_OTHERS_FRACTION, LoadGuard, cores, rotated, summary

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


#: CPU seconds of this process's grandchildren (and deeper), read just before each engine shutdown
ORPHAN_CPU: list[float] = []


def orphan_cpu_seconds() -> float:
    """CPU seconds used so far by this process's descendants two or more levels down (Ray's agents
    and workers, children of its raylet): when shutdown kills their parent they are reaped by init,
    so their time never reaches this process's accounting and would count as other processes' load.
    0 where /proc is unreadable."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry)] = int(fields[1])
            cpu[int(entry)] = sum(int(v) for v in fields[11:15]) / tick  # utime stime cutime cstime
    me = os.getpid()
    total = 0.0
    for pid in cpu:
        depth, up = 0, pid
        while up in parent and up != me and depth < 64:
            up, depth = parent[up], depth + 1
        if up == me and depth >= 2:
            total += cpu[pid]
    return total


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
    ORPHAN_CPU.append(orphan_cpu_seconds())
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
    ORPHAN_CPU.append(orphan_cpu_seconds())
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


def measure(engine: str, repeats: int) -> dict:
    """Start-up and shut-down ``repeats`` times, then one fault run, in this interpreter."""
    dist, start_fn, stop_fn, fault_fn = ENGINES[engine]
    starts, stops = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        handle = start_fn()
        starts.append(time.perf_counter() - t)
        t = time.perf_counter()
        stop_fn(handle)
        stops.append(time.perf_counter() - t)
    return {
        "engine": engine,
        "version": metadata.version(dist),
        "python": platform.python_version(),
        "install": install_size(dist if engine == "dask" else "ray"),
        "startup_s": [round(v, 2) for v in starts],
        "shutdown_s": [round(v, 2) for v in stops],
        "fault": fault_fn(),
        "orphan_cpu_s": round(sum(ORPHAN_CPU), 2),
    }


def _stats(values: list[float]) -> dict:
    """:func:`_timing.summary` to 2 decimals, the values under "all" (this JSON's key from its first run)."""
    out = summary(values, 2)
    out["all"] = out.pop("times")
    return out


def _fault_stats(faults: list[dict]) -> dict:
    """Per-round fault records and what they agree on."""
    return {
        "all_returned_once": sum(f.get("all_returned_once", False) for f in faults),
        "rounds": len(faults),
        "seconds": _stats([f["seconds"] for f in faults]),
        "stalled": sum(f.get("stalled_after_s") is not None for f in faults),
        "errors": [f["error"] for f in faults if f.get("error")],
        "runs": faults,
    }


def summarise(engine: str, runs: list[dict]) -> dict:
    """One engine's rounds: medians with their spread, every round's load record."""
    first = runs[0]
    if engine == "ray":
        fault = {key: _fault_stats([r["fault"][key] for r in runs]) for key in first["fault"]}
    else:
        fault = _fault_stats([r["fault"] for r in runs])
    loads = [r["load"] for r in runs]
    quiet = all(load["quiet"] for load in loads)
    return {
        "engine": engine,
        "version": first["version"],
        "python": first["python"],
        "cpus": cores(),
        "recorded_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rounds": len(runs),
        "interleaved": "each round runs every engine once in a fresh process, the first engine rotating",
        "install": first["install"],
        "startup_s": _stats([v for r in runs for v in r["startup_s"]]),
        "shutdown_s": _stats([v for r in runs for v in r["shutdown_s"]]),
        "fault": fault,
        "loads": loads,
        "quiet": quiet,
        "note": "quiet machine: other processes used at most "
        f"{QUIET_OTHERS_FRACTION:.0%} of the cores in every round"
        if quiet
        else "NOT quiet: other processes used the cores in some round (see loads)",
    }


def interleave(pythons: dict[str, str], rounds: int, timeout: float) -> dict[str, dict]:
    """``rounds`` rounds, each running every engine once in its own interpreter, the first engine
    rotating (A B, B A, ...)."""
    runs: dict[str, list[dict]] = {engine: [] for engine in pythons}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for engine in rotated(list(pythons), round_):
                python = pythons[engine]
                raw = Path(tmp) / f"{engine}_{round_}.json"
                cmd = [python, __file__, "--engine", engine, "--repeats", "1", "--raw", str(raw)]
                start = time.perf_counter()
                with LoadGuard() as guard:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
                wall = time.perf_counter() - start
                if proc.returncode != 0 or not raw.exists():
                    tail = proc.stderr[-2000:]
                    raise SystemExit(f"{engine} round {round_} failed ({proc.returncode}):\n{tail}")
                run = json.loads(raw.read_text())
                run["load"] = load = guard.to_dict()
                if load["others_cpu_fraction"] is not None:
                    # the engine's own orphaned processes are not other load
                    own = run["orphan_cpu_s"] / (wall * cores())
                    load["engine_orphans_cpu_fraction"] = round(own, 3)
                    load["others_cpu_fraction"] = round(max(0.0, load["others_cpu_fraction"] - own), 3)
                    load["quiet"] = load["others_cpu_fraction"] <= QUIET_OTHERS_FRACTION
                runs[engine].append(run)
                print(f"round {round_ + 1}/{rounds} {engine}: start-up {run['startup_s'][0]} s", flush=True)
    return {engine: summarise(engine, engine_runs) for engine, engine_runs in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=sorted(ENGINES), help="measure this engine here")
    parser.add_argument("--repeats", type=int, default=1, help="start-ups per process")
    parser.add_argument("--raw", type=Path, help="(with --engine) write this process's record here")
    parser.add_argument(
        "--interleave",
        nargs="+",
        metavar="ENGINE=PYTHON",
        help="interpreters to alternate, e.g. dask=/tmp/ev-dask/bin/python ray=/tmp/ev-ray/bin/python",
    )
    parser.add_argument("--rounds", type=int, default=5, help="(with --interleave) rounds")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per engine and round")
    args = parser.parse_args()
    if args.interleave:
        bad = [item for item in args.interleave if "=" not in item]
        if bad:
            parser.error(f"--interleave takes ENGINE=PYTHON pairs, got {bad}")
        pythons = dict(item.split("=", 1) for item in args.interleave)
        unknown = set(pythons) - set(ENGINES)
        if unknown:
            parser.error(f"unknown engine(s) {sorted(unknown)}; choose from {sorted(ENGINES)}")
        RESULTS.mkdir(exist_ok=True)
        for engine, out in interleave(pythons, args.rounds, args.timeout).items():
            path = RESULTS / f"engine_choice_{engine}.json"
            path.write_text(json.dumps(out, indent=1))
            print(f"{path}: start-up {out['startup_s']['median']} s, quiet {out['quiet']}")
        return
    if args.engine is None:
        parser.error("give --engine (one process) or --interleave (alternating interpreters)")
    record = measure(args.engine, args.repeats)
    if args.raw is not None:
        args.raw.write_text(json.dumps(record))
    else:
        print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
