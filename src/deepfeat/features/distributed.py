"""Extraction on a Dask cluster: the network runs on the workers, the store stays with one writer.

``extract(..., cluster="local:2")`` (or ``"tcp://scheduler:8786"``, or a ``distributed.Client``) runs
the same extraction as one process, with the network on the cluster's workers:

- the driver (the process calling :func:`~deepfeat.features.pipeline.extract`) plans as always:
  store entries, their locks, the rows still missing, in network order, cut into the same batches;
- it sends one bundle to every worker, once: the backbone, the dataset (file paths, or the arrays of
  an in-memory dataset), the preprocessing and the planned work. Each worker process keeps one
  deserialised copy: one model per worker, used by one batch at a time;
- each batch is a task: the worker decodes its images with deepfeat's own decoder
  (:func:`~deepfeat.data.loader.load_one`: a bad image comes back as its path and reason, exactly as
  in one process), runs the network and returns the rows of every output;
- the driver keeps a few batches per worker in flight and writes the results in batch order with the
  same :func:`~deepfeat.features.runner.write_output` as a local run: the same rows, the same journal
  lines, one writer, so the store's guarantees (journal, checksums, validity mask, crash safety,
  resume) hold unchanged, and the store is byte for byte the one a single process writes with the
  same torch thread count.

Faults are Dask's to handle: when a worker process dies, the scheduler runs its batches again on the
other workers (a batch that kills ``distributed.scheduler.allowed-failures`` workers is reported as a
:class:`~deepfeat.errors.ClusterError`); when the dead worker held the only copy of the bundle (Dask's
memory manager keeps one replica of scattered data), the driver sends the bundle again and resubmits
the batches the scheduler cancelled; the driver receives one result per batch, so nothing is lost
and nothing is written twice. Rarely, a result the scheduler fetches from a worker killed a moment
before holds the run for Dask's connect timeout (``distributed.comm.timeouts.connect``, 30 s by
default; see the README's scale note). An interrupted run (Ctrl-C, the driver killed) resumes from
the store like a local one. Every node needs deepfeat installed (``pip install 'deepfeat[dask]'``)
and the image files at the same paths (shared storage); the store lives with the driver only.

Dask distributed was chosen over Ray Data on measurements (``benchmarks/engine_choice.py``): a tenth
of the install size, seconds less start-up, and a killed worker's batches redone without extra
configuration; see the README's scale note. Ray is not supported.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from deepfeat._runtime import allocator_state, tune_allocator, usable_cores
from deepfeat.backbones.backbone import Backbone
from deepfeat.data.base import ImageDataset
from deepfeat.data.loader import iter_batches
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import ClusterError, ConfigError
from deepfeat.features.runner import (
    BatchEncoder,
    BatchOutput,
    NetworkWork,
    pending_rows,
    stop_if_failed,
    write_output,
)

log = logging.getLogger(__name__)

EXTRA_HINT = "distributed extraction needs Dask: pip install 'deepfeat[dask]'"
_LOCAL = re.compile(r"^local:(\d+)$")
_ADDRESS = re.compile(r"^((tcp|tls|ucx|inproc)://)?[^\s:/]+:\d+$")  # Dask needs the port
#: Batches kept in flight per worker thread: enough that a worker never waits for the driver.
IN_FLIGHT_PER_THREAD = 2
#: Times one batch is submitted again after the cluster cancelled it (its bundle lost with a worker).
RESUBMITS = 3


def check_cluster(cluster) -> None:
    """Refuse a cluster spelling that cannot work, before any work, naming what would be valid."""
    if isinstance(cluster, str):
        match = _LOCAL.match(cluster.strip())
        if match is None and (cluster.startswith("local") or not _ADDRESS.match(cluster.strip())):
            raise ConfigError(
                f"cluster {cluster!r}: give local:N (N worker processes on this machine) or the address "
                "of a Dask scheduler, e.g. tcp://10.0.0.5:8786"
            )
        if match is not None and int(match.group(1)) < 1:
            raise ConfigError(f"cluster {cluster!r}: local:N needs at least 1 worker")
    _distributed()
    if not isinstance(cluster, str):
        from distributed import Client

        if not isinstance(cluster, Client):
            raise ConfigError(
                f"cluster must be 'local:N', a scheduler address or a distributed.Client, "
                f"got {type(cluster).__name__}"
            )


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError(EXTRA_HINT) from None
    return distributed


@dataclass
class Connection:
    """A client on a cluster, and whether deepfeat started the cluster (then it closes it)."""

    client: object
    cluster: object | None
    name: str
    seconds: float
    owned: bool = True  # False for a client the caller gave: left open
    #: the level of the ``distributed`` logger before a local cluster was started (restored at close)
    log_level: int | None = None
    #: this process's environment before a local cluster was started: Dask's LocalCluster sets
    #: variables in it (OMP_NUM_THREADS=1, MKL_NUM_THREADS=1, ... for its workers), which every
    #: process the caller starts later would inherit; restored at close
    environ: dict[str, str] | None = None

    def close(self) -> None:
        if self.owned:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        if self.log_level is not None:
            logging.getLogger("distributed").setLevel(self.log_level)
            self.log_level = None
        if self.environ is not None:
            restore_environ(self.environ)
            self.environ = None


def restore_environ(before: dict[str, str]) -> None:
    """``os.environ`` back to ``before``: variables added since removed, changed ones reset."""
    for key in set(os.environ) - set(before):
        del os.environ[key]
    for key, value in before.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def connect(cluster) -> Connection:
    """A client for ``cluster`` (see :func:`check_cluster`), its workers up."""
    check_cluster(cluster)
    from distributed import Client, LocalCluster

    start = time.perf_counter()
    if not isinstance(cluster, str):
        address = getattr(getattr(cluster, "scheduler", None), "address", "given client")
        return Connection(cluster, None, f"dask cluster {address}", 0.0, owned=False)
    local = _LOCAL.match(cluster.strip())
    if local is not None:
        n = int(local.group(1))
        threads = max(1, usable_cores() // n)
        import dask

        spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **worker_environ()}
        # the cluster's own scheduler and nannies log every start and stop at INFO in this process
        # (silence_logs covers only the start): warnings only while it runs, the level restored after
        dask_log = logging.getLogger("distributed")
        level = dask_log.level
        dask_log.setLevel(max(logging.WARNING, dask_log.getEffectiveLevel()))
        environ = dict(os.environ)
        try:
            with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn}):
                owned = LocalCluster(
                    n_workers=n,
                    threads_per_worker=threads,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.WARNING,
                )
            client = Client(owned)
            client.wait_for_workers(n)
        except BaseException:
            dask_log.setLevel(level)
            restore_environ(environ)
            raise
        return Connection(
            client,
            owned,
            f"dask {cluster} ({threads} thread each)",
            time.perf_counter() - start,
            log_level=level,
            environ=environ,
        )
    try:
        client = Client(cluster.strip(), timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {cluster!r} ({exc}); start one ('dask scheduler', then "
            "'dask worker ADDRESS' on every node) or use local:N"
        ) from None
    return Connection(client, None, f"dask cluster {cluster}", time.perf_counter() - start)


def worker_environ() -> dict[str, str]:
    """Environment variables each worker process of a ``local:N`` cluster starts with: where this
    process's allocator is tuned (:func:`deepfeat.tune_allocator`), one malloc arena and the tuned
    thresholds. Workers run batches in task threads, and glibc gives a thread its own arena, whose
    chunks over 64 MB are mapped afresh on every allocation whatever the thresholds: in one process,
    256 images through EfficientNet-Lite0 on 1 thread took 6.1 s of CPU on the main thread, 8.1 s on
    another thread, 6.5 s on another thread with one arena (9.4 s untuned). The variables must be
    set before the process starts; a worker started by hand (``dask worker``) can be given them so:
    ``MALLOC_ARENA_MAX=1 dask worker ...``."""
    state = allocator_state()
    if not state["tuned"]:
        return {}
    threshold = str(state["threshold"])
    return {
        "MALLOC_ARENA_MAX": "1",
        "MALLOC_MMAP_THRESHOLD_": threshold,
        "MALLOC_TRIM_THRESHOLD_": threshold,
    }


class _Bundle:
    """What every worker keeps once: the model, the data, the work; one batch at a time per model."""

    def __init__(self, backbone, dataset, prep, work, *, on_error, max_pixels, device, amp, tune):
        self.backbone = backbone
        self.dataset = dataset
        self.prep = prep
        self.work = work
        self.on_error = on_error
        self.max_pixels = max_pixels
        self.device = device
        self.amp = amp
        self.tune = tune
        self.lock = threading.Lock()

    def __getstate__(self) -> dict:
        # a worker's copy sent on to another worker waits for the batch running on it: the model is
        # then without that batch's hooks (see LayerCapture.__getstate__ for the rest)
        with self.lock:
            return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()


def _encode_batch(bundle: _Bundle, rows: np.ndarray) -> BatchOutput:
    """On a worker: decode the images of ``rows``, run the network, return the rows of every output."""
    if bundle.tune:  # the driver's allocator setting (see deepfeat._runtime), once per process
        tune_allocator()
    from distributed import get_worker

    threads = get_worker().state.nthreads
    batch = next(
        iter_batches(
            bundle.dataset, rows, bundle.prep, batch_size=len(rows), workers=0, max_pixels=bundle.max_pixels
        )
    )
    with bundle.lock:  # hooks live on the module: one batch at a time per model
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        encoder = BatchEncoder(
            bundle.backbone,
            bundle.work,
            bundle.prep,
            on_error=bundle.on_error,
            device=bundle.device,
            amp=bundle.amp,
        )
        with encoder:
            return encoder(batch, bundle.dataset.ids)


def run_on_cluster(
    plans,
    dataset: ImageDataset,
    backbone: Backbone,
    prep: Preprocess,
    *,
    cluster,
    batch_size: int,
    on_error: str,
    max_pixels: int,
    workers: int,
    progress: bool,
    durable: bool,
    device=None,
    amp: bool = False,
    loader: str | None = None,
) -> tuple[int, dict]:
    """The network step of :func:`~deepfeat.features.pipeline.extract` on ``cluster``; returns the
    number of images through the network and where it ran, as the store records it (the cluster's
    name and each worker's threads, which its torch threads follow). ``workers`` and ``loader``
    apply to local runs only: on a cluster each worker thread decodes its own batch."""
    todo_by_plan, todo = pending_rows(plans, dataset, prep)
    chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    work = NetworkWork.plan(backbone, [(p.method, p.spec) for p in plans])
    conn = connect(cluster)
    log.info("%s ready in %.1f s", conn.name, conn.seconds)
    bundle = _Bundle(
        backbone,
        dataset,
        prep,
        work,
        on_error=on_error,
        max_pixels=max_pixels,
        device=None if device is None else str(device),
        amp=amp,
        tune=allocator_state()["tuned"],
    )
    try:
        n_forward = _drive(conn.client, bundle, chunks, plans, todo_by_plan, progress, durable)
        computed_on = {"cluster": conn.name, "worker_threads": sorted(conn.client.nthreads().values())}
    finally:
        conn.close()
    return n_forward, computed_on


def _drive(client, bundle, chunks, plans, todo_by_plan, progress, durable) -> int:
    """Submit the batches, a window at a time, and write their results in batch order.

    The bundle is scattered once; Dask's memory manager may keep a single replica, so a worker's death
    can lose it, and the scheduler then cancels every batch that needs it. Such a batch is submitted
    again with the bundle scattered anew (up to ``RESUBMITS`` times per batch); results already received
    are kept and each batch is still written exactly once."""
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    shared = [client.scatter(bundle, broadcast=True, hash=False)]  # the newest copy last
    window = max(2, IN_FLIGHT_PER_THREAD * sum(client.nthreads().values()))
    run_id = uuid.uuid4().hex[:8]
    futures: dict[int, object] = {}  # batch index -> its current future
    index_of: dict[str, int] = {}  # future key -> batch index
    copy_of: dict[int, int] = {}  # batch index -> the copy of the bundle it was submitted with
    tries: dict[int, int] = {}
    results: dict[int, BatchOutput] = {}
    pending = as_completed()
    submitted = written = n_forward = 0
    bar = tqdm(
        total=sum(map(len, chunks)), unit="img", desc="extract", disable=not progress, dynamic_ncols=True
    )

    def submit(index: int) -> None:
        attempt = tries.get(index, 0)
        key = f"deepfeat-batch-{run_id}-{index}" + (f"-retry{attempt}" if attempt else "")
        future = client.submit(_encode_batch, shared[-1], chunks[index], key=key, pure=False)
        futures[index], index_of[key], copy_of[index] = future, index, len(shared) - 1
        pending.add(future)

    try:
        while written < len(chunks):
            while submitted < len(chunks) and submitted - written < window:
                submit(submitted)
                submitted += 1
            future = next(pending)
            index = index_of.pop(future.key)
            try:
                results[index] = future.result()
            except KilledWorker:
                rows = chunks[index]
                raise ClusterError(
                    f"the batch of {bundle.dataset.source(int(rows[0]))} and {len(rows) - 1} more images "
                    "killed every worker that ran it; the batches before it are kept (rerun to resume; "
                    "a file that crashes the decoder can be removed from the data)"
                ) from None
            except FutureCancelledError as cancelled:
                tries[index] = tries.get(index, 0) + 1
                if tries[index] > RESUBMITS:
                    raise ClusterError(
                        f"the cluster cancelled the batch of {bundle.dataset.source(int(chunks[index][0]))} "
                        f"{tries[index]} times ({cancelled.reason}); the batches before it are kept "
                        "(rerun to resume)"
                    ) from None
                if copy_of[index] == len(shared) - 1:  # lost with the newest copy: send the bundle again
                    log.warning("the cluster lost deepfeat's bundle (%s); sending it again", cancelled.reason)
                    client.cancel([shared[-1]], force=True)
                    shared.append(client.scatter(bundle, broadcast=True, hash=False))
                submit(index)
                continue
            del futures[index]
            while written in results:  # in order: the journal matches a local run's
                out = results.pop(written)
                write_output(plans, todo_by_plan, out, durable=durable)
                n_forward += out.n_forward
                bar.update(len(out.rows))
                written += 1
                stop_if_failed(out)
    finally:
        bar.close()
        client.cancel([*futures.values(), *shared], force=True)
    return n_forward
