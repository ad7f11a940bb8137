"""Extraction on a real local Dask cluster (2 worker processes of 1 thread): the store is the one a single
process writes, byte for byte; a worker killed mid-run loses and duplicates nothing; bad images are
reported alike; an interrupted run resumes. Skipped when the 'dask' extra is not installed."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("distributed")

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import ArrayDataset, folder_dataset
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import ConfigError
from deepfeat.features import distributed as dist
from deepfeat.features.activations import LayerActivations
from deepfeat.features.journal import read_journal
from deepfeat.features.pipeline import extract
from tests.conftest import photo

#: the tests on the cluster: worker processes import torch and deepfeat (a few seconds on an idle machine,
#: minutes on a loaded one); the spelling checks stay fast
slow = pytest.mark.slow

TINY = Preprocess(
    resize="shorter", size=36, crop=32, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3
)
METHODS = [LayerActivations(["stage3", "head"], ["avg"])]


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    client = Client(cluster)
    client.wait_for_workers(2)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def effnet():
    return load_backbone("efficientnet_lite0")


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' count: a reduction split over 2 threads rounds differently
    yield
    torch.set_num_threads(before)


def arrays(n: int = 24) -> ArrayDataset:
    return ArrayDataset(
        name="arr",
        ids=[f"arr/{i}" for i in range(n)],
        classes=["a", "b"],
        targets=np.arange(n) % 2,
        images=np.stack([photo(i, (40, 36)) for i in range(n)]),
    )


def store_files(root: Path) -> dict[str, bytes]:
    """Every file of a store but the lock files and the record of the environment that completed
    each entry (its time, threads and command line differ by design), by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("lock", "environment.json")
    }


def rows_journaled(root: Path, n: int) -> list[np.ndarray]:
    """Per entry, how many times the journal names each row (done or failed)."""
    out = []
    for journal in sorted(root.glob("entries/*/journal.jsonl")):
        counts = np.zeros(n, dtype=int)
        for record in read_journal(journal, n).records:
            for a, b in record.rows:
                counts[a:b] += 1
            for r in record.failed:
                counts[r] += 1
        out.append(counts)
    return out


@slow
def test_cluster_store_is_the_single_process_store_and_bad_images_are_reported_alike(
    client, effnet, bad_tree, tmp_path, one_thread
):
    ds = folder_dataset(bad_tree)
    local = extract(
        ds, effnet, METHODS, store=tmp_path / "local", preprocess=TINY, batch_size=3, progress=False
    )
    remote = extract(
        ds,
        effnet,
        METHODS,
        store=tmp_path / "cluster",
        preprocess=TINY,
        batch_size=3,
        progress=False,
        cluster=client,
    )
    assert store_files(tmp_path / "cluster") == store_files(tmp_path / "local")  # features, masks, journals
    assert remote.failures == local.failures  # the same paths, the same reasons, in the same order
    assert {"zero.jpg", "truncated.jpg", "bomb.png"} <= {Path(p).name for p, _ in remote.failures}
    assert remote.n_forward == local.n_forward == len(ds) - len(local.failures)
    assert remote.device.startswith("dask cluster")
    # each entry records where its rows were computed: the cluster and its workers' threads (the
    # environment's own threads are this process's, the driver's)
    for entry in sorted((tmp_path / "cluster").glob("entries/*")):
        environment = json.loads((entry / "environment.json").read_text())
        assert environment["computed_on"] == {"cluster": remote.device, "worker_threads": [1, 1]}
    for entry in sorted((tmp_path / "local").glob("entries/*")):
        assert "computed_on" not in json.loads((entry / "environment.json").read_text())


@slow
def test_a_worker_killed_mid_run_loses_nothing_and_duplicates_nothing(
    client, effnet, tmp_path, monkeypatch, one_thread
):
    ds = arrays(24)
    extract(ds, effnet, METHODS, store=tmp_path / "local", preprocess=TINY, batch_size=2, progress=False)
    killed: list[tuple[int, list]] = []
    bundle_holders: list[str] = []
    real_write = dist.write_output

    def write_then_kill(*args, **kwargs):
        real_write(*args, **kwargs)
        if killed:
            return
        busy = {addr: keys for addr, keys in client.processing().items() if keys}
        held = {a: [k for k in keys if "deepfeat-batch" in str(k)] for a, keys in client.has_what().items()}
        victims = busy or {a: keys for a, keys in held.items() if keys}  # running, or holding results
        addr = next(iter(victims))
        # and every holder of the scattered bundle (Dask may keep one copy): the batches the scheduler
        # then cancels must be submitted again with a new copy
        holders = [a for a, keys in client.has_what().items() if any("_Bundle-" in str(k) for k in keys)]
        bundle_holders.extend(holders)
        for victim in dict.fromkeys([addr, *holders]):
            pid = client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)  # its batches in flight must be run again
            killed.append((pid, list(victims.get(victim, []))))
        deadline = time.monotonic() + 60
        while {addr, *holders} & set(client.scheduler_info()["workers"]) and time.monotonic() < deadline:
            time.sleep(0.05)  # the scheduler has noticed: the rest of the run happens without them

    monkeypatch.setattr(dist, "write_output", write_then_kill)
    result = extract(
        ds,
        effnet,
        METHODS,
        store=tmp_path / "cluster",
        preprocess=TINY,
        batch_size=2,
        progress=False,
        cluster=client,
    )
    client.wait_for_workers(2, timeout=120)  # the nannies restart the killed workers for the next tests
    assert killed and killed[0][1], "a worker running or holding batches of the run was killed"
    assert bundle_holders, "every copy of the bundle was lost with the killed workers"
    for pid, _ in killed:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert result.n_forward == len(ds)
    for counts in rows_journaled(tmp_path / "cluster", len(ds)):
        assert (counts == 1).all()  # every row journaled exactly once
    assert store_files(tmp_path / "cluster") == store_files(tmp_path / "local")


@slow
def test_an_interrupted_cluster_run_resumes_from_the_store(client, effnet, tmp_path, monkeypatch, one_thread):
    ds = arrays(16)
    extract(ds, effnet, METHODS, store=tmp_path / "local", preprocess=TINY, batch_size=2, progress=False)
    calls = []
    real_write = dist.write_output

    def interrupted(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        real_write(*args, **kwargs)

    monkeypatch.setattr(dist, "write_output", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(
            ds,
            effnet,
            METHODS,
            store=tmp_path / "cluster",
            preprocess=TINY,
            batch_size=2,
            progress=False,
            cluster=client,
        )
    monkeypatch.setattr(dist, "write_output", real_write)
    resumed = extract(
        ds,
        effnet,
        METHODS,
        store=tmp_path / "cluster",
        preprocess=TINY,
        batch_size=2,
        progress=False,
        cluster=client,
    )
    assert resumed.n_forward == len(ds) - 3 * 2  # three batches were written before the interruption
    assert store_files(tmp_path / "cluster") == store_files(tmp_path / "local")


def test_local_workers_start_with_the_drivers_allocator_setting_only_when_it_is_tuned(monkeypatch):
    """A tuned driver's local workers start with one malloc arena and its thresholds (their batches
    run in task threads, whose own arenas would map large buffers afresh); an untuned one's start as
    Dask starts them."""
    monkeypatch.setattr(dist, "allocator_state", lambda: {"tuned": False, "threshold": None})
    assert dist.worker_environ() == {}
    monkeypatch.setattr(dist, "allocator_state", lambda: {"tuned": True, "threshold": 1 << 30})
    assert dist.worker_environ() == {
        "MALLOC_ARENA_MAX": "1",
        "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
        "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    }


@slow
@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")  # beside the module's cluster
def test_a_tuned_drivers_local_workers_see_the_allocator_variables_from_their_start(monkeypatch):
    """The variables are in each worker's environment at exec (/proc/self/environ), where glibc
    reads them, not set later in os.environ."""
    monkeypatch.setattr(dist, "allocator_state", lambda: {"tuned": True, "threshold": 1 << 30})
    dask_log = logging.getLogger("distributed")
    before = dask_log.level
    environ = dict(os.environ)
    conn = dist.connect("local:1")
    try:
        initial = conn.client.run(lambda: Path("/proc/self/environ").read_bytes().split(b"\0"))
        # the cluster's INFO lines (every nanny and worker start and stop) stay out of the output
        assert dask_log.getEffectiveLevel() >= logging.WARNING
    finally:
        conn.close()
    assert dask_log.level == before
    # Dask's LocalCluster set OMP_NUM_THREADS=1 and more in this process, for every later child
    assert dict(os.environ) == environ
    for environ in initial.values():
        assert b"MALLOC_ARENA_MAX=1" in environ
        assert b"MALLOC_MMAP_THRESHOLD_=1073741824" in environ


@pytest.mark.parametrize(
    "spelling",
    ["local:0", "local:two", "local", "not an address!", "http://x:1/path", 42, "foo", "tcp://127.0.0.1"],
)
def test_cluster_spellings_that_cannot_work_are_refused_before_any_work(spelling, effnet, tmp_path):
    with pytest.raises(ConfigError, match="cluster"):
        extract(arrays(2), effnet, METHODS, store=tmp_path / "s", preprocess=TINY, cluster=spelling)
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_local_workers_lack_is_refused_here_before_any_cluster_starts(effnet, tmp_path, monkeypatch):
    """(each local worker failed on it, and Dask printed their tracebacks before the error)"""
    monkeypatch.setattr(dist, "connect", lambda cluster: pytest.fail("a cluster was started"))
    with pytest.raises(ConfigError, match="CUDA is not available"):
        extract(
            arrays(2),
            effnet,
            METHODS,
            store=tmp_path / "s",
            preprocess=TINY,
            cluster="local:2",
            device="cuda",
        )


def test_without_the_extra_the_error_says_what_to_install(monkeypatch, effnet, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ConfigError, match=r"deepfeat\[dask\]"):
        extract(arrays(2), effnet, METHODS, store=tmp_path / "s", preprocess=TINY, cluster="local:2")


def test_a_batch_the_cluster_keeps_cancelling_is_reported_after_the_resubmits(monkeypatch):
    """The driver's side of a lost bundle, with a client whose every batch comes back cancelled: the
    bundle is scattered again only when the newest copy was lost, each batch is submitted again up to
    RESUBMITS times, and then the run stops with a ClusterError naming the batch's first image."""
    import distributed
    from distributed.client import FutureCancelledError

    from deepfeat.errors import ClusterError

    class Future:
        def __init__(self, key):
            self.key = key

        def result(self):
            raise FutureCancelledError(self.key, "lost dependencies")

    class Client:
        scattered, submitted = 0, []

        def scatter(self, bundle, broadcast, hash):
            Client.scattered += 1
            return f"bundle-copy-{Client.scattered}"

        def nthreads(self):
            return {"worker": 1}

        def submit(self, fn, shared, rows, key, pure):
            Client.submitted.append((key, shared))
            return Future(key)

        def cancel(self, futures, force):
            pass

    class AsCompleted(list):
        add = list.append

        def __next__(self):
            return self.pop(0)

    class Dataset:
        def source(self, row):
            return f"img{row}.jpg"

    monkeypatch.setattr(distributed, "as_completed", AsCompleted)
    bundle = type("Bundle", (), {"dataset": Dataset()})()
    chunks = [np.array([0, 1]), np.array([2, 3])]
    with pytest.raises(ClusterError, match=r"img0\.jpg.*4 times.*lost dependencies"):
        dist._drive(Client(), bundle, chunks, [], {}, progress=False, durable=False)
    run_id = Client.submitted[0][0].split("-")[2]
    expected = [
        (f"{i}{'' if r == 0 else f'-retry{r}'}", f"bundle-copy-{r + 1}") for r in range(4) for i in (0, 1)
    ]
    assert [(key.split(f"{run_id}-", 1)[1], shared) for key, shared in Client.submitted] == expected
    # a loss of the newest copy sends the bundle again, a batch cancelled with an older copy does not
    assert Client.scattered == 4
