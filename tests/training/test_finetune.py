"""Fine-tuning: the trainable scope, resuming from checkpoints, checkpoints loaded as backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import ArrayDataset
from deepfeat.errors import BackboneError, ConfigError, DataError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import extract
from deepfeat.training.finetune import FineTuner, trainable_prefixes
from tests.conftest import SMALL, photo


def two_class_data(n: int = 12) -> ArrayDataset:
    """Class 0: smooth photos; class 1: the same photos with a bright square (learnable quickly)."""
    images = []
    for i in range(n):
        im = photo(i, (64, 64)).copy()
        if i % 2:
            im[16:48, 16:48] = 255
        images.append(im)
    return ArrayDataset(
        name="squares",
        ids=[str(i) for i in range(n)],
        classes=["plain", "square"],
        targets=np.arange(n) % 2,
        images=np.stack(images),
    )


def tuner(tmp_path, **kw) -> FineTuner:
    params = {
        "epochs": 2,
        "batch_size": 4,
        "preprocess": SMALL,
        "progress": False,
        "out": tmp_path,
        "lr": 0.01,
    }
    return FineTuner(**{**params, **kw})


def test_fc_scope_trains_only_classifier_side_layers(tmp_path):
    before = load_backbone("efficientnet_lite0").module.state_dict()
    ft = tuner(tmp_path / "fc", scope="fc").fit(two_class_data())
    after = ft.backbone_.module.state_dict()
    scope = trainable_prefixes(ft.backbone_, "fc")
    assert scope == ("conv_head", "bn2", "classifier")
    changed = {
        k
        for k in before
        if k in after and before[k].shape == after[k].shape and not torch.equal(before[k], after[k])
    }
    assert changed and all(k.startswith(("conv_head", "bn2")) for k in changed)
    assert not any(k.startswith("bn2.running") for k in changed)  # BatchNorm statistics stay frozen
    assert after["classifier.weight"].shape == (2, 1280)
    assert len(ft.history_) == 2 and 0 <= ft.val_accuracy_ <= 1


def test_ft_scope_trains_convolutions_too(tmp_path):
    before = load_backbone("efficientnet_lite0").module.state_dict()
    ft = tuner(tmp_path / "ft", scope="ft", epochs=1).fit(two_class_data())
    after = ft.backbone_.module.state_dict()
    assert not torch.equal(before["conv_stem.weight"], after["conv_stem.weight"])
    assert ft.n_trainable_ > 3_000_000


def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path):
    data = two_class_data()
    whole = tuner(tmp_path / "whole", epochs=2).fit(data)
    tuner(tmp_path / "parts", epochs=1).fit(data)
    # a checkpoint written with other settings is not resumed, and the message names them
    with pytest.raises(ConfigError, match=r"other settings \(lr\)"):
        tuner(tmp_path / "parts", epochs=2, lr=0.02).fit(data)
    # a finished run is extended with more epochs (the step of the rate decay kept): the same as
    # one run of that many epochs
    from deepfeat.fileio import is_output_dir

    assert is_output_dir(tmp_path / "parts")  # (kept inside an image folder, not read as a class)
    longer = tuner(tmp_path / "parts", epochs=2).fit(data)
    assert [h["epoch"] for h in longer.history_] == [1, 2]
    for key in ("classifier.weight", "conv_head.weight"):
        assert torch.equal(
            whole.backbone_.module.state_dict()[key], longer.backbone_.module.state_dict()[key]
        )
    # more epochs keep the run's decay step where none is given (the default would become 2), as the
    # README says: the same as one run of that many epochs with that step
    extended = tuner(tmp_path / "parts", epochs=4).fit(data)
    straight = tuner(tmp_path / "whole4", epochs=4, step_size=1).fit(data)
    assert [h["epoch"] for h in extended.history_] == [1, 2, 3, 4] and extended.step_size_ == 1
    for key in ("classifier.weight", "conv_head.weight"):
        assert torch.equal(
            straight.backbone_.module.state_dict()[key], extended.backbone_.module.state_dict()[key]
        )
    with pytest.raises(ConfigError, match=r"to train it longer, leave step_size out or give 1"):
        tuner(tmp_path / "parts", epochs=6, step_size=2).fit(data)
    # an interrupted run: epoch 2 never finished, last.pt is epoch 1's checkpoint
    tuner(tmp_path / "again", epochs=2).fit(data)
    (tmp_path / "again" / "last.pt").unlink()
    import shutil

    shutil.copy(tmp_path / "again" / "epoch-1.pt", tmp_path / "again" / "last.pt")
    resumed = tuner(tmp_path / "again", epochs=2).fit(data)
    assert [h["epoch"] for h in resumed.history_] == [1, 2]
    a = whole.backbone_.module.state_dict()
    b = resumed.backbone_.module.state_dict()
    for key in ("classifier.weight", "conv_head.weight"):  # the random states resume too: exact
        assert torch.equal(a[key], b[key]), key
    assert [h["train_loss"] for h in resumed.history_] == [h["train_loss"] for h in whole.history_]


def test_a_checkpoint_of_other_data_is_not_resumed(tmp_path):
    data = two_class_data()
    tuner(tmp_path / "run", epochs=1).fit(data)
    swapped = ArrayDataset(
        name="swapped", ids=data.ids, classes=data.classes, targets=1 - data.targets, images=data.images
    )
    with pytest.raises(ConfigError, match=r"trained on other data .*'squares'.*not 'swapped'"):
        tuner(tmp_path / "run", epochs=1).fit(swapped)
    renamed = ArrayDataset(
        name="renamed", ids=data.ids, classes=["a", "b"], targets=data.targets, images=data.images
    )
    with pytest.raises(ConfigError, match="other data"):
        tuner(tmp_path / "run", epochs=1).fit(renamed)
    again = tuner(tmp_path / "run", epochs=1).fit(data)  # the same data: nothing left to train
    assert [h["epoch"] for h in again.history_] == [1]


def test_history_records_the_rate_each_epoch_trained_at(tmp_path):
    ft = tuner(tmp_path / "lr", epochs=3, step_size=1, gamma=0.5, out=None).fit(two_class_data())
    assert [h["lr"] for h in ft.history_] == pytest.approx([0.01, 0.005, 0.0025])


def test_checkpoint_loads_as_a_backbone(tmp_path):
    ft = tuner(tmp_path / "fc", epochs=1).fit(two_class_data())
    bb = load_backbone("efficientnet_lite0", weights=str(tmp_path / "fc" / "last.pt"))
    assert bb.catalog.get("logits").channels == 2 and bb.class_names == ["plain", "square"]
    assert bb.weights_id.startswith("sha256:")
    torch.testing.assert_close(
        bb.module.state_dict()["classifier.weight"], ft.backbone_.module.state_dict()["classifier.weight"]
    )
    feats = extract(
        two_class_data(4), bb, [LayerActivations(["head", "logits"])], preprocess=SMALL, progress=False
    )
    assert feats["logits"].features.shape == (4, 2)
    with pytest.raises(BackboneError, match="use --backbone efficientnet_lite0"):
        load_backbone("alexnet", weights=str(tmp_path / "fc" / "last.pt"))


def test_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="scope"):
        tuner(tmp_path, scope="conv").fit(two_class_data())
    with pytest.raises(ConfigError, match="epochs"):
        tuner(tmp_path, epochs=0).fit(two_class_data())
    one = two_class_data(3)
    with pytest.raises(DataError, match="need 2"):
        tuner(tmp_path / "x").fit(
            ArrayDataset(
                name="t",
                ids=["0", "1", "2"],
                classes=["a", "b"],
                targets=np.array([0, 0, 1]),
                images=one.images,
            )
        )


def test_finetune_cli(image_tree, tmp_path):
    from typer.testing import CliRunner

    from deepfeat.cli.main import app

    out = tmp_path / "ck"
    args = [
        "finetune",
        str(image_tree),
        "--scope",
        "fc",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "val accuracy" in result.output and (out / "last.pt").exists() and (out / "history.json").exists()
    again = CliRunner().invoke(app, args)  # finished: resumes at the end, trains nothing
    assert again.exit_code == 0 and "after 1 epochs" in again.output
    bad = CliRunner().invoke(app, [*args[:-2], "--scope", "all", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "unknown fine-tuning scope 'all'; valid: ft, fc" in bad.output


def test_frozen_scope_trains_what_follows_the_layer_from_a_fresh_start(tmp_path):
    """``frozen:LAYER`` keeps everything up to the layer (its BatchNorm too) and re-initialises and
    trains every parameter after it; a bad layer name or an empty one is refused early."""
    bb = load_backbone("efficientnet_lite0")
    names = trainable_prefixes(bb, "frozen:stage5")
    params = [n for n, _ in bb.module.named_parameters()]
    assert names == tuple(params[params.index(names[0]) :])
    assert names[0].startswith("blocks.5.") and "conv_head.weight" in names and "classifier.weight" in names
    with pytest.raises(ConfigError, match="frozen:LAYER"):
        tuner(tmp_path / "empty", scope="frozen:").fit(two_class_data())
    with pytest.raises(Exception, match="stage5"):  # the error lists the valid layers
        trainable_prefixes(bb, "frozen:stage9")
    with pytest.raises(ConfigError, match="derived from another layer"):
        trainable_prefixes(bb, "frozen:prob")
    with pytest.raises(ConfigError, match="only the new output layer"):
        trainable_prefixes(bb, "frozen:pool")
    ft = tuner(tmp_path / "frozen", scope="frozen:stage5", epochs=1).fit(two_class_data())
    before, after = bb.module.state_dict(), ft.backbone_.module.state_dict()
    assert torch.equal(before["blocks.4.0.conv_pw.weight"], after["blocks.4.0.conv_pw.weight"])
    assert torch.equal(before["blocks.4.0.bn1.running_mean"], after["blocks.4.0.bn1.running_mean"])
    assert not torch.allclose(before["conv_head.weight"], after["conv_head.weight"], atol=1e-3)
