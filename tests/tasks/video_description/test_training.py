"""Training through the shared loop: every architecture trains and lowers its perplexity, exact resume
(encoder included), settings checked before any work, model folder usable."""

from __future__ import annotations

import pytest
import torch

from deepfeat.errors import ConfigError, DataError
from deepfeat.tasks.text.training import TrainingOptions
from deepfeat.tasks.video_description import (
    DescribeOptions,
    DescribeTrainJob,
    DescriptionModel,
    read_descriptions,
    train,
)


def options(arch: str, epochs: int = 2, **kw) -> DescribeOptions:
    training = TrainingOptions(epochs=epochs, batch_size=8, patience=5, monitor="bleu_4", seed=0)
    return DescribeOptions(arch=arch, hidden=16, embed=8, dropout=0.0, training=training, **kw)


@pytest.mark.parametrize("arch", ["a", "b", "c"])
def test_each_architecture_trains(arch, described, slot_preds, tmp_path):
    result = train(
        DescribeTrainJob(described, options(arch, 2), slots=slot_preds, out=tmp_path), progress=False
    )
    hist = result.training.history
    assert len(hist) == 2 and {"val_bleu_4", "val_perplexity"} <= set(hist[0])
    assert hist[-1]["train_perplexity"] < hist[0]["train_perplexity"]
    assert result.n_train == 16 and result.n_val == 4
    back = DescriptionModel.load(tmp_path)
    assert back.arch == arch and back.meta["best_epoch"] == result.training.best_epoch
    preds = slot_preds.select(read_descriptions(described).ids[:3])
    assert back.describe(preds) == result.model.describe(preds)


def _weights(model: DescriptionModel) -> dict:
    out = {f"d.{k}": v for k, v in model.decoder.state_dict().items()}
    if model.encoder is not None:
        out |= {f"e.{k}": v for k, v in model.encoder.state_dict().items()}
    return out


def test_interrupted_and_resumed_equals_uninterrupted(described, slot_preds, tmp_path):
    straight = train(
        DescribeTrainJob(described, options("a", 3), slots=slot_preds, out=tmp_path / "s"), progress=False
    )
    train(DescribeTrainJob(described, options("a", 2), slots=slot_preds, out=tmp_path / "r"), progress=False)
    resumed = train(
        DescribeTrainJob(described, options("a", 3), slots=slot_preds, out=tmp_path / "r"), progress=False
    )
    assert resumed.training.resumed_from == 2
    a, b = _weights(straight.model), _weights(resumed.model)
    assert a.keys() == b.keys() and any(k.startswith("e.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert straight.training.history[-1]["val_bleu_4"] == resumed.training.history[-1]["val_bleu_4"]


def test_other_settings_in_the_same_folder_refused(described, slot_preds, tmp_path):
    train(DescribeTrainJob(described, options("b", 1), slots=slot_preds, out=tmp_path), progress=False)
    with pytest.raises(ConfigError, match="another training run"):
        train(DescribeTrainJob(described, options("c", 1), slots=slot_preds, out=tmp_path), progress=False)


def test_settings_checked_before_any_work(described, slot_preds, tmp_path):
    with pytest.raises(ConfigError, match="architecture"):
        train(DescribeTrainJob(described, options("d"), slots=slot_preds), progress=False)
    with pytest.raises(ConfigError, match="either as a file"):
        train(DescribeTrainJob(described, options("b")), progress=False)
    with pytest.raises(ConfigError, match="monitor"):
        bad = options("b")
        bad.training.monitor = "cider_d"
        train(DescribeTrainJob(described, bad, slots=slot_preds), progress=False)
    few = slot_preds.select(slot_preds.ids[:5])
    with pytest.raises(DataError, match="training videos have no slot prediction"):
        train(DescribeTrainJob(described, options("b"), slots=few), progress=False)
