"""Training: features through the store, checkpoints that resume exactly, saved models that load
without running code, fine-tuned top stages, options refused before any work."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import deepfeat.tasks.video.training as train_module
from deepfeat.errors import CheckpointError, ConfigError
from deepfeat.tasks.video import TrainJob, TrainOptions, load_classifier, stream_features, train
from tests.tasks.video.conftest import tiny_features


def job(videos, store, out, **options) -> TrainJob:
    opts = {"epochs": 2, "batch_size": 4, "clip_length": 4, "clip_stride": 2, "hidden": 8, **options}
    return TrainJob(videos, TrainOptions(**opts), tiny_features(), store=store, out=out)


def state(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state"]["net"]


def test_train_save_and_load(tiny_videos, tiny_store, tmp_path):
    result = train(job(tiny_videos, tiny_store, tmp_path / "m", model="single"), progress=False)
    assert result.n_videos == 6 and len(result.history) == 2  # the 6 training videos
    assert result.model_path == tmp_path / "m" / "model.pt" and (tmp_path / "m" / "history.json").exists()
    rng = torch.get_rng_state()
    clf = load_classifier(tmp_path / "m")
    assert torch.equal(rng, torch.get_rng_state())  # the caller's random stream is not advanced
    assert clf.classes == ["0-left", "0-right"] and clf.name == "single/rgb" and clf.frame_shape == (40,)
    from deepfeat.backbones import load_backbone
    from deepfeat.data.videosets import open_videos

    videos = open_videos(tiny_videos).split("test")
    backbone = load_backbone("efficientnet_lite0")
    feats = stream_features(videos, "rgb", tiny_features(), backbone, store=tiny_store)
    # the session's store may hold the test videos' frames already (other tests evaluate them);
    # at most their 16 frames are computed, and a second call computes nothing
    assert feats.n_forward in (0, 16)
    assert stream_features(videos, "rgb", tiny_features(), backbone, store=tiny_store).n_forward == 0
    probs = clf.predict_proba(feats.sequences)
    np.testing.assert_allclose(probs, result.classifier.predict_proba(feats.sequences), rtol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)


def test_resumed_training_equals_uninterrupted(tiny_videos, tiny_store, tmp_path, monkeypatch):
    train(job(tiny_videos, tiny_store, tmp_path / "whole", epochs=3), progress=False)
    # stopped after one epoch, then asked for three
    train(job(tiny_videos, tiny_store, tmp_path / "steps", epochs=1), progress=False)
    resumed = train(job(tiny_videos, tiny_store, tmp_path / "steps", epochs=3), progress=False)
    assert resumed.resumed_from == 1
    # killed in the middle of the third epoch (Ctrl-C), then run again
    real = train_module._epoch

    def interrupted(*args):
        if args[7] == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train_module, "_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(job(tiny_videos, tiny_store, tmp_path / "killed", epochs=3), progress=False)
    monkeypatch.setattr(train_module, "_epoch", real)
    again = train(job(tiny_videos, tiny_store, tmp_path / "killed", epochs=3), progress=False)
    assert again.resumed_from == 2
    whole = state(tmp_path / "whole" / "model.pt")
    for other in ("steps", "killed"):
        for k, v in state(tmp_path / other / "model.pt").items():
            torch.testing.assert_close(v, whole[k], rtol=0, atol=0)
    losses = [h["loss"] for h in resumed.history]
    assert (
        losses
        == [h["loss"] for h in again.history]
        == [h["loss"] for h in load_classifier_history(tmp_path / "whole")]
    )


def load_classifier_history(folder: Path) -> list[dict]:
    import json

    doc = json.loads((folder / "history.json").read_text())
    assert doc["schema"] == 1 and doc["kind"] == "video-training"
    return doc["result"]["history"]


def test_other_settings_are_refused_and_options_checked(tiny_videos, tiny_store, tmp_path):
    train(job(tiny_videos, tiny_store, tmp_path / "m", epochs=1), progress=False)
    with pytest.raises(ConfigError, match="other settings"):
        train(job(tiny_videos, tiny_store, tmp_path / "m", epochs=1, lr=0.5), progress=False)
    for bad, match in [
        ({"model": "gru"}, "lrcn"),
        ({"stream": "depth"}, "flow"),
        ({"dropout": 1.0}, "dropout"),
    ]:
        with pytest.raises(ConfigError, match=match):
            train(job(tiny_videos, tiny_store, tmp_path / "new", **bad), progress=False)
    assert not (tmp_path / "new").exists()  # refused before any work


def test_model_files_never_run_code(tmp_path):
    (tmp_path / "m").mkdir()

    class Boom:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(tmp_path / "m" / "model.pt", "wb") as fh:
        pickle.dump({"state": Boom()}, fh)
    with pytest.raises(CheckpointError, match="raw Python pickle"):
        load_classifier(tmp_path / "m")


def test_flow_model_and_fine_tuned_top_stages(tiny_videos, tiny_store, tmp_path):
    flow = train(job(tiny_videos, tiny_store, tmp_path / "flow", stream="flow", epochs=1), progress=False)
    assert flow.classifier.name == "lrcn/flow" and flow.classifier.config["hidden"] == 8
    assert list((tiny_store / "flow").glob("*.npz"))  # flow images cached in the store
    top_job = TrainJob(
        tiny_videos,
        TrainOptions(model="single", epochs=1, batch_size=4, clip_length=4, fine_tune="top"),
        tiny_features(layer="head", grid=1),
        store=tiny_store,
        out=tmp_path / "top",
    )
    result = train(top_job, progress=False)
    clf = result.classifier
    assert clf.config["top"] == "stage7" and clf.frame_shape == (320, 1, 1)  # cached maps of stage7
    from deepfeat.backbones import load_backbone

    original = load_backbone("efficientnet_lite0").module.conv_head.weight
    assert not torch.equal(clf.net.top.stages[0].weight, original)  # the top stage trained
    loaded = load_classifier(tmp_path / "top")
    seq = [np.random.default_rng(0).normal(size=(5, 320, 1, 1)).astype(np.float32)]
    np.testing.assert_allclose(loaded.predict_proba(seq), clf.predict_proba(seq), rtol=1e-5)


def test_devices_are_checked(tiny_videos, tiny_store, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            train(job(tiny_videos, tiny_store, tmp_path / "m", device="cuda"), progress=False)
    with pytest.raises(ConfigError, match="device must be"):
        TrainOptions(device="tpu").validate()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_features_and_training_match_the_cpu(tiny_videos, tmp_path):
    from deepfeat.backbones import load_backbone
    from deepfeat.data.videosets import open_videos

    videos = open_videos(tiny_videos).split("test")
    backbone = load_backbone("efficientnet_lite0")
    cpu = stream_features(videos, "rgb", tiny_features(), backbone)
    gpu = stream_features(videos, "rgb", tiny_features(device="cuda"), backbone)
    for a, b in zip(cpu.sequences, gpu.sequences):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    assert next(backbone.module.parameters()).device.type == "cpu"  # the caller's backbone stays put
    result = train(
        job(tiny_videos, tmp_path / "store", tmp_path / "m", device="cuda", epochs=1), progress=False
    )
    assert next(result.classifier.net.parameters()).device.type == "cuda"
    assert load_classifier(tmp_path / "m", device="cuda").predict_proba(gpu.sequences).shape == (2, 2)


def test_a_class_without_training_videos_is_named(tiny_videos, tiny_store, tmp_path):
    """(the model trained on the other classes without a word; detect train warns alike)"""
    from dataclasses import replace

    from deepfeat.data.videosets import open_videos

    videos = open_videos(tiny_videos)
    splits = np.where(videos.targets == 0, "test", videos.splits)  # class 0's videos: test only
    lines: list[str] = []
    train(job(replace(videos, splits=splits), tiny_store, None, epochs=1), progress=False, echo=lines.append)
    warning = next(line for line in lines if "without a training video" in line)
    assert repr(videos.classes[0]) in warning and repr(videos.classes[1]) not in warning
