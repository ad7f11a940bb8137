"""Trials 1 and 9 (checkpoints): no loading path runs code planted in a file, and every refusal is one
line naming the file, never PyTorch's advice to load with weights_only=False."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfeat.backbones import load_backbone
from deepfeat.backbones.backbone import read_state_dict
from deepfeat.backbones.finetuned import is_finetune_checkpoint, load_finetuned, read_finetuned
from deepfeat.checkpoint import checkpoint_kind, load_checkpoint, read_torch_file
from deepfeat.data.datasets import ArrayDataset
from deepfeat.errors import DeepfeatError
from deepfeat.training.finetune import FineTuner
from tests.reliability.conftest import TINY, make_tree
from tests.test_checkpoint import Planted

SRC = Path(__file__).resolve().parents[2] / "src"


def planted_files(folder: Path, marker: Path) -> dict[str, Path]:
    """A file of every hostile kind; each would create ``marker`` if its pickle were run."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    # the file: a fine-tuning checkpoint whose config holds an object with __reduce__
    state = {"model": {"w": torch.ones(2)}}
    ck = {"deepfeat_checkpoint": {"format": 1, "kind": "finetune"}, "meta": "{}", "state": state}
    torch.save({**ck, "config": Planted(marker)}, folder / "config.pt")
    files["config.pt"] = folder / "config.pt"
    legacy = {
        "deepfeat_finetune": {"backbone": "efficientnet_lite0"},
        "state_dict": {},
        "cfg": Planted(marker),
    }
    torch.save(legacy, folder / "old-layout.pt")
    files["old-layout.pt"] = folder / "old-layout.pt"
    torch.save({"w": Planted(marker)}, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    files["legacy.pt"] = folder / "legacy.pt"
    for protocol in (0, 2, 5):
        path = folder / f"raw{protocol}.pkl"
        path.write_bytes(pickle.dumps(Planted(marker), protocol=protocol))
        files[path.name] = path
    return files


def assert_one_line(exc: BaseException, path: Path) -> str:
    message = str(exc)
    assert str(path) in message and "\n" not in message, message
    assert "weights_only" not in message and "file an issue" not in message.lower(), message
    assert "Unsupported operand" not in message and "pop from empty list" not in message, message
    return message


def test_planted_code_can_run_outside_deepfeat(tmp_path):
    """The control: the planted files do run code when unpickled the ordinary way."""
    marker = tmp_path / "MARKER"
    files = planted_files(tmp_path / "f", marker)
    pickle.loads(files["raw2.pkl"].read_bytes())
    assert marker.exists()
    marker.unlink()
    torch.load(files["config.pt"], weights_only=False)  # what finetune's resume used to do
    assert marker.exists()


def test_no_loading_path_runs_planted_code(tmp_path):
    marker = tmp_path / "MARKER"
    files = planted_files(tmp_path / "f", marker)
    loaders = {
        "read_torch_file": read_torch_file,
        "load_checkpoint": load_checkpoint,
        "checkpoint_kind": checkpoint_kind,
        "read_state_dict (--weights, --after, --checkpoints)": read_state_dict,
        "read_finetuned": read_finetuned,
        "load_finetuned": lambda p: load_finetuned("efficientnet_lite0", p, build=None),
        "load_backbone": lambda p: load_backbone("alexnet", weights=p),
    }
    for name, path in files.items():
        assert not is_finetune_checkpoint(path), name
        for what, load in loaders.items():
            with pytest.raises(DeepfeatError) as info:
                load(path)
            message = assert_one_line(info.value, path)
            if name in ("config.pt", "old-layout.pt", "legacy.pt"):
                assert "refused" in message and "could run code" in message, (what, message)
            else:
                assert "raw Python pickle" in message or "not a PyTorch file" in message, (what, message)
    assert not marker.exists()


def squares() -> ArrayDataset:
    images = np.stack([np.full((32, 32, 3), 40 * i, np.uint8) for i in range(6)])
    return ArrayDataset(
        name="sq", ids=[str(i) for i in range(6)], classes=["a", "b"], targets=np.arange(6) % 2, images=images
    )


def test_finetune_resume_refuses_a_planted_last_pt(tmp_path):
    marker = tmp_path / "MARKER"
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(planted_files(tmp_path / "f", marker)["config.pt"].read_bytes())
    tuner = FineTuner(epochs=1, batch_size=4, preprocess=TINY, out=out, progress=False)
    with pytest.raises(DeepfeatError) as info:
        tuner.fit(squares())
    assert "refused" in assert_one_line(info.value, out / "last.pt")
    assert not marker.exists()


def test_cli_finetune_resume_and_weights_exit_2_without_running_code(tmp_path):
    from typer.testing import CliRunner

    from deepfeat.cli.main import app

    marker = tmp_path / "MARKER"
    files = planted_files(tmp_path / "f", marker)
    tree = make_tree(tmp_path / "tree")
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(files["config.pt"].read_bytes())
    runs = [
        ["finetune", str(tree), "--epochs", "1", "--batch-size", "4", "--out", str(out)],
        ["extract", str(tree), "--weights", str(files["legacy.pt"]), "--out", str(tmp_path / "s")],
        ["extract", str(tree), "--weights", str(files["raw5.pkl"]), "--out", str(tmp_path / "s")],
    ]
    for args in runs:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "weights_only" not in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_text_and_truncated_weights_give_one_line(tmp_path):
    (tmp_path / "notes.pt").write_text("these are my notes\n")
    torch.save({"w": torch.ones(3)}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    for name, words in (("notes.pt", "holds text"), ("cut.pt", "truncated or damaged")):
        with pytest.raises(DeepfeatError) as info:
            load_backbone("alexnet", weights=tmp_path / name)
        assert words in assert_one_line(info.value, tmp_path / name)


def test_nothing_in_the_source_loads_with_weights_only_false():
    offenders = [
        f"{p.relative_to(SRC)}:{i}"
        for p in SRC.rglob("*.py")
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"weights_only\s*=\s*False", line) or re.search(r"\bpickle\.loads?\(", line)
    ]
    assert not offenders, offenders
