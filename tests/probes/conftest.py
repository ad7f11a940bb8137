"""Probe tests solve many tiny problems: one thread (torch and BLAS) avoids threading overhead on
shared cores, where it made these tests some 20 times slower."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)
