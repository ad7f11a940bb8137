"""Every result carries the environment: versions, command line, threads (torch and BLAS), device,
allocator; stored features carry it too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import ArrayDataset
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import extract
from deepfeat.features.store import FeatureStore
from deepfeat.report.provenance import environment
from deepfeat.report.writer import write_result
from tests.conftest import SMALL, photo


def test_environment_names_versions_threads_device_and_allocator(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    env = environment()
    for package in ("numpy", "torch", "torchvision", "timm", "pillow", "scikit-learn", "deepfeat"):
        assert env["versions"][package]
    assert env["threads"]["torch"] == torch.get_num_threads() == env["torch_threads"]
    blas = [lib for lib in env["threads"]["libraries"] if lib["user_api"] == "blas"]
    assert blas and all(isinstance(lib["num_threads"], int) for lib in blas)
    assert env["device"] == "cpu" and env["command"]
    assert env["allocator"]["env"]["OMP_NUM_THREADS"] == "2" and "tuned" in env["allocator"]


def test_result_files_and_store_entries_carry_it(tmp_path):
    paths = write_result(tmp_path, "x", {"value": float("nan")}, kind="analysis", provenance={"seed": 1})
    doc = json.loads(paths["json"].read_text())
    assert doc["schema"] == 1 and doc["result"] == {"value": None}
    assert doc["versions"]["timm"] and doc["environment"]["threads"]["libraries"] is not None
    data = ArrayDataset(
        name="a",
        ids=["a", "b"],
        classes=["x", "y"],
        targets=np.array([0, 1]),
        images=np.stack([photo(0), photo(1)]),
    )
    bb = load_backbone("efficientnet_lite0", weights="random")
    extract(data, bb, [LayerActivations(["stage2"])], store=tmp_path / "s", preprocess=SMALL, progress=False)
    (meta,) = FeatureStore(tmp_path / "s").entries()
    # beside meta.json, so the entry's own files stay identical whichever process computed them
    environment = json.loads((Path(meta["path"]) / "environment.json").read_text())
    assert meta["complete"] and "environment" not in meta
    assert environment["versions"]["torch"] == torch.__version__ and environment["threads"]["torch"] >= 1
