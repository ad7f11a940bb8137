from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from deepfeat.data.datasets import folder_dataset
from deepfeat.data.loader import iter_batches
from deepfeat.errors import ImageError
from tests.conftest import SMALL


def test_image_errors_cross_process_boundaries_intact():
    err = pickle.loads(pickle.dumps(ImageError("/data/a b.jpg", "truncated file")))
    assert isinstance(err, ImageError) and err.path == "/data/a b.jpg" and err.reason == "truncated file"
    assert str(err) == "/data/a b.jpg: truncated file"


def _inputs(batches):
    out = {}
    for batch in batches:
        for positions, x in batch.network_inputs(batch.ok, SMALL):
            for p, row in zip(positions, x):
                out[int(batch.rows[p])] = row
    return out


def test_worker_processes_give_the_batches_of_threads(bad_tree):
    ds = folder_dataset(bad_tree)
    rows = np.arange(len(ds))
    threads = list(iter_batches(ds, rows, SMALL, batch_size=5, workers=2))
    procs = list(iter_batches(ds, rows, SMALL, batch_size=5, workers=2, processes=True))
    assert [b.rows.tolist() for b in procs] == [b.rows.tolist() for b in threads]
    assert [sorted(b.errors) for b in procs] == [sorted(b.errors) for b in threads]
    assert [[(e.path, e.reason) for e in b.errors.values()] for b in procs] == [
        [(e.path, e.reason) for e in b.errors.values()] for b in threads
    ]
    a, b = _inputs(threads), _inputs(procs)
    assert a.keys() == b.keys() and len(a) == len(ds) - len(threads[0].errors) - sum(
        len(t.errors) for t in threads[1:]
    )
    assert all(torch.equal(a[r], b[r]) for r in a)
    assert all(im is None or isinstance(im, ImageError) for batch in procs for im in batch.images)


def test_a_subset_of_prepared_inputs_is_what_threads_would_build(image_tree):
    ds = folder_dataset(image_tree)
    (proc,) = iter_batches(ds, np.arange(6), SMALL, batch_size=6, workers=0, processes=True)
    (thread,) = iter_batches(ds, np.arange(6), SMALL, batch_size=6, workers=0)
    keep = [0, 2, 3]
    for (pa, xa), (pb, xb) in zip(proc.network_inputs(keep, SMALL), thread.network_inputs(keep, SMALL)):
        assert pa == pb and torch.equal(xa, xb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pinned_batches_from_worker_processes(image_tree):
    ds = folder_dataset(image_tree)
    batches = list(iter_batches(ds, np.arange(len(ds)), SMALL, batch_size=4, processes=True, pin_memory=True))
    assert all(x.is_pinned() for b in batches for _, x in b.inputs)
