"""The network step: worker-process loading, devices and mixed precision (CUDA tests skip without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import folder_dataset
from deepfeat.errors import ConfigError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.activeness import Activeness
from deepfeat.features.gradients import GradientFeatures
from deepfeat.features.pipeline import extract
from deepfeat.features.store import FeatureStore
from tests.conftest import SMALL

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def effnet():
    return load_backbone("efficientnet_lite0")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_process_loader_extracts_what_the_thread_loader_does(effnet, bad_tree):
    ds = folder_dataset(bad_tree)
    methods = [LayerActivations(["stage4", "head"], ["avg"])]
    threads = extract(ds, effnet, methods, preprocess=SMALL, batch_size=5, progress=False)
    procs = extract(ds, effnet, methods, preprocess=SMALL, batch_size=5, progress=False, loader="processes")
    assert procs.failures == threads.failures and len(procs.failures) >= 3
    for key, fs in threads.features.items():
        np.testing.assert_array_equal(procs[key].features, fs.features)


def test_device_and_loader_options_are_checked_before_any_work(effnet, image_tree, tmp_path):
    ds = folder_dataset(image_tree)
    method = [LayerActivations("stage4", "avg")]
    for bad, match in [
        ({"device": "tpu"}, "device"),
        ({"loader": "fibres"}, "loader"),
        ({"amp": "yes"}, "amp"),
    ]:
        with pytest.raises(ConfigError, match=match):
            extract(ds, effnet, method, store=tmp_path / "s", preprocess=SMALL, **bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            extract(ds, effnet, method, store=tmp_path / "s", preprocess=SMALL, device="cuda")
    assert not (tmp_path / "s").exists()
    cpu = extract(ds, effnet, method, preprocess=SMALL, progress=False, device="cpu")
    assert cpu.device == "cpu"


def test_mixed_precision_is_close_to_float32_and_stored_apart(effnet, image_tree, tmp_path):
    ds = folder_dataset(image_tree)
    methods = [LayerActivations(["stage4", "pool"], ["avg"])]
    f32 = extract(ds, effnet, methods, store=tmp_path / "s", preprocess=SMALL, progress=False)
    amp = extract(ds, effnet, methods, store=tmp_path / "s", preprocess=SMALL, progress=False, amp=True)
    assert all(origin == "network" for origin in amp.origins.values())  # not read from the float32 rows
    entries = FeatureStore(tmp_path / "s").entries()
    assert len(entries) == 4 and [e["provenance"].get("amp") for e in entries].count("bfloat16") == 2
    for key in f32.features:
        a, b = f32[key].features, amp[key].features
        assert not np.array_equal(a, b)  # bfloat16 on the CPU: a real change of precision
        assert cosines(a, b).min() > 0.99


@CUDA
@pytest.mark.parametrize(
    "method",
    [
        LayerActivations(["stage4", "head", "pool"], ["avg", "sp-shuffle"]),
        GradientFeatures(["head", "logits"], forms=["factored", "input", "output"]),
        Activeness(["stage5", "stage6"], config="last", p=2),
        Activeness(["stage5"], config="next", p=1, collect="unweighted"),
    ],
    ids=["activations", "gradients", "activeness", "activeness-unweighted"],
)
def test_cuda_features_equal_cpu_features_within_tolerance(effnet, image_tree, method):
    ds = folder_dataset(image_tree)
    cpu = extract(ds, effnet, [method], preprocess=SMALL, progress=False, device="cpu")
    gpu = extract(ds, effnet, [method], preprocess=SMALL, progress=False, device="cuda")
    effnet.module.to("cpu")
    for key, fs in cpu.features.items():
        a, b = fs.features, gpu[key].features
        assert np.abs(a - b).max() <= 1e-2 * np.abs(a).max(), key  # TF32 convolutions on recent GPUs
        assert cosines(a, b).min() > 0.9999, key


@CUDA
def test_cuda_mixed_precision_and_thread_loader(effnet, image_tree):
    ds = folder_dataset(image_tree)
    method = [LayerActivations(["stage6", "pool"], ["avg"])]
    cpu = extract(ds, effnet, method, preprocess=SMALL, progress=False, device="cpu")
    amp = extract(
        ds, effnet, method, preprocess=SMALL, progress=False, device="cuda", amp=True, loader="threads"
    )
    effnet.module.to("cpu")
    for key, fs in cpu.features.items():
        assert cosines(fs.features, amp[key].features).min() > 0.999
