"""Checkpoints: state dicts, JSON metadata and random states round-trip; nothing in a file ever runs."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from deepfeat.checkpoint import (
    checkpoint_kind,
    load_checkpoint,
    read_torch_file,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from deepfeat.errors import CheckpointError


class Planted:
    """Unpickling this creates ``marker`` (stands for any code an attacker would run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_roundtrip_of_state_meta_and_random_states(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    meta = {"epoch": 3, "history": [{"loss": 0.5}], "lr": float("nan"), "config": {"mean": (0.5, 0.5)}}
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    path = save_checkpoint(tmp_path / "ck.pt", state, kind="demo", meta=meta)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    ck = load_checkpoint(path, kind="demo")
    assert ck.kind == "demo" and checkpoint_kind(path) == "demo"
    assert ck.meta == {"epoch": 3, "history": [{"loss": 0.5}], "lr": None, "config": {"mean": [0.5, 0.5]}}
    torch.testing.assert_close(ck.state["model"]["weight"], model.weight.detach())
    opt2 = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(ck.state["optimizer"])
    ck.restore_rng()
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically


def test_state_with_objects_is_refused_at_save(tmp_path):
    with pytest.raises(CheckpointError, match=r"state\['model'\]\['w'\]: a Planted"):
        save_checkpoint(tmp_path / "x.pt", {"model": {"w": Planted(tmp_path / "m")}}, kind="demo")
    assert not (tmp_path / "x.pt").exists()


def test_kind_is_checked(tmp_path):
    save_checkpoint(tmp_path / "a.pt", {}, kind="bigan")
    with pytest.raises(CheckpointError, match="a 'bigan' checkpoint, not a 'finetune' one"):
        load_checkpoint(tmp_path / "a.pt", kind="finetune")
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a deepfeat 'finetune' checkpoint"):
        load_checkpoint(tmp_path / "plain.pt", kind="finetune")
    assert checkpoint_kind(tmp_path / "plain.pt") is None


def hostile_files(tmp_path, marker) -> dict:
    """Every kind of file that must be refused, with the words its message must hold."""
    torch.save({"w": torch.ones(2)}, tmp_path / "good.pt")
    good = (tmp_path / "good.pt").read_bytes()
    files = {
        "text.pt": (b"these are not weights\n", "holds text"),
        "empty.pt": (b"", "empty"),
        "raw.pkl": (pickle.dumps({"w": [1, 2]}, protocol=5), "raw Python pickle"),
        "raw-planted.pkl": (pickle.dumps(Planted(marker), protocol=4), "raw Python pickle"),
        "proto0-planted.pkl": (pickle.dumps(Planted(marker), protocol=0), "not a PyTorch file"),
        "truncated.pt": (good[: len(good) // 2], "truncated or damaged"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    planted = {"deepfeat_checkpoint": {"format": 1, "kind": "finetune"}, "meta": "{}", "state": {}}
    torch.save({**planted, "config": Planted(marker)}, tmp_path / "planted.pt")
    torch.save({"w": Planted(marker)}, tmp_path / "legacy-planted.pt", _use_new_zipfile_serialization=False)
    files["planted.pt"] = (None, "refused")
    files["legacy-planted.pt"] = (None, "refused")
    return {tmp_path / name: words for name, (_, words) in files.items()}


def test_hostile_files_give_one_line_and_run_nothing(tmp_path):
    marker = tmp_path / "MARKER"
    # the planted pickle does run code when unpickled the ordinary way: the test can fail
    pickle.loads(pickle.dumps(Planted(marker)))
    assert marker.exists()
    marker.unlink()
    for path, words in hostile_files(tmp_path, marker).items():
        for load in (read_torch_file, load_checkpoint, checkpoint_kind):
            with pytest.raises(CheckpointError) as info:
                load(path)
            message = str(info.value)
            assert words in message and str(path) in message and "\n" not in message, message
            assert "weights_only" not in message and "file an issue" not in message.lower()
    assert not marker.exists()


def test_rng_state_roundtrip():
    state = rng_state()
    a = (torch.rand(2), np.random.rand(2), random.random())
    set_rng_state(state)
    b = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    with pytest.raises(CheckpointError, match="damaged random states"):
        set_rng_state({"torch": state["torch"]})
