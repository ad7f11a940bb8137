"""Detection fine-tuning on warped windows: labels, trainable scope, exact resume, loads as a backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.backbones import load_backbone
from deepfeat.checkpoint import load_checkpoint
from deepfeat.data.detection import voc_dataset
from deepfeat.errors import ConfigError
from deepfeat.tasks.detection import finetune as ft
from deepfeat.tasks.detection.extract import RegionSet
from deepfeat.tasks.detection.finetune import (
    FinetuneOptions,
    finetune_detector,
    trainable_names,
    window_labels,
)
from deepfeat.tasks.detection.proposals import ProposalOptions, compute_proposals
from deepfeat.tasks.detection.regions import RegionOptions

REGION = RegionOptions(size=32, padding=4)


@pytest.fixture
def data(voc_root):
    ds = voc_dataset(voc_root, split="trainval")
    props = compute_proposals(ds, ProposalOptions(width=None, max_proposals=12), workers=0, progress=False)
    return ds, RegionSet.build(ds, props, with_gt=True)


def test_window_labels_follow_the_best_box_at_0_5(data):
    ds, regions = data
    labels = window_labels(ds, regions, 0.5)
    for t, lab in zip(ds.images, labels):
        np.testing.assert_array_equal(lab[: len(t)], t.labels + 1)  # annotated boxes: their class + 1
        assert set(np.unique(lab)) <= {0, 1, 2}


def test_trainable_scope(lite0):
    names = trainable_names(lite0, "stage7")
    assert names[0].startswith("blocks.6.") and "classifier.weight" in names
    assert not any(n.startswith("blocks.5.") for n in names)
    assert len(trainable_names(lite0, None)) == len(list(lite0.module.parameters()))
    with pytest.raises(ConfigError, match="no module"):
        trainable_names(lite0, "prob")


def _opts(**kw):
    base = dict(iterations=4, train_from="head", positives=3, background=5, checkpoint_every=2, seed=1)
    return FinetuneOptions(**{**base, **kw})


def test_resumed_run_equals_the_uninterrupted_one(data, tmp_path, monkeypatch):
    ds, regions = data
    whole, _, hist_a = finetune_detector(
        "efficientnet_lite0", ds, regions, _opts(), REGION, tmp_path / "a", progress=False
    )
    original = ft._batch
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # during the 4th iteration, after the checkpoint of iteration 2
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(ft, "_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune_detector("efficientnet_lite0", ds, regions, _opts(), REGION, tmp_path / "b", progress=False)
    assert load_checkpoint(tmp_path / "b" / "last.pt").meta["iteration"] == 2
    monkeypatch.setattr(ft, "_batch", original)
    resumed, path_b, hist_b = finetune_detector(
        "efficientnet_lite0", ds, regions, _opts(), REGION, tmp_path / "b", progress=False
    )
    assert [h["loss"] for h in hist_b] == [h["loss"] for h in hist_a]
    assert [h["lr"] for h in hist_a] == [0.001] * 4  # the rate each iteration trained at
    for (name, a), b in zip(whole.module.state_dict().items(), resumed.module.state_dict().values()):
        assert torch.equal(a, b), name
    # the checkpoint is a backbone with a (classes + 1)-way output
    bb = load_backbone("efficientnet_lite0", weights=path_b)
    assert bb.catalog.get("logits").channels == 3 and bb.class_names == ["background", "blue", "red"]
    # layers below the trained scope did not move
    base = load_backbone("efficientnet_lite0")
    assert torch.equal(
        bb.module.state_dict()["blocks.6.0.conv_pw.weight"],
        base.module.state_dict()["blocks.6.0.conv_pw.weight"],
    )
    assert not torch.equal(
        bb.module.state_dict()["conv_head.weight"], base.module.state_dict()["conv_head.weight"]
    )


def test_other_settings_refuse_the_old_checkpoint(data, tmp_path):
    ds, regions = data
    finetune_detector(
        "efficientnet_lite0", ds, regions, _opts(iterations=2), REGION, tmp_path, progress=False
    )
    with pytest.raises(ConfigError, match="other settings"):
        finetune_detector(
            "efficientnet_lite0", ds, regions, _opts(iterations=2, lr=0.01), REGION, tmp_path, progress=False
        )


def test_history_records_the_rate_each_iteration_trained_at(data, tmp_path):
    ds, regions = data
    *_, history = finetune_detector(
        "efficientnet_lite0", ds, regions, _opts(iterations=3, step_size=1), REGION, tmp_path, progress=False
    )
    assert [h["lr"] for h in history] == pytest.approx([1e-3, 1e-4, 1e-5])
