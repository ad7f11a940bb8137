"""A conv BiGAN run's encoder (and the GAN baseline's discriminator) as a deepfeat backbone."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from deepfeat.backbones import list_backbones, load_backbone
from deepfeat.backbones.backbone import sha256_file
from deepfeat.errors import BackboneError
from deepfeat.evaluation import ActivationsRecipe, EvaluationJob, KShot, run
from deepfeat.features.capture import LayerCapture
from deepfeat.tasks.bigan import load_run, open_training_data, train
from tests.tasks.bigan.conftest import tiny


@pytest.fixture
def conv_run(image_tree, tmp_path):
    data = open_training_data(image_tree, "conv", 32)
    train(tiny(arch="conv", batch_size=4), data, tmp_path / "run", progress=False)
    return tmp_path / "run" / "last.pt"


def test_bigan_checkpoint_loads_as_a_backbone(conv_run, image_tree):
    rng = torch.get_rng_state()
    bb = load_backbone(f"bigan:{conv_run}")
    assert torch.equal(rng, torch.get_rng_state())  # folding the batch norms built a network
    assert bb.name == "bigan" and bb.variant == "encoder"
    assert bb.weights_id == f"sha256:{sha256_file(conv_run)}"
    assert bb.catalog.names == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "output"]
    assert [bb.catalog[n].channels for n in ("conv1", "conv5", "output")] == [4, 4, 4]
    p = bb.preprocess
    assert (p.resize, p.size, p.crop, p.mean, p.std) == ("shorter", 36, 32, (0.5,) * 3, (0.5,) * 3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bb.module.modules())  # folded
    # the folded backbone computes what the trained encoder computes in evaluation mode
    encoder = load_run(conv_run).networks.encoder
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(bb.module(x), encoder(x), rtol=1e-4, atol=1e-5)
    with LayerCapture(bb, bb.catalog.resolve(["conv3", "output"])) as cap:
        out = cap.run(x)
    assert out["conv3"].shape == (2, 8, 8, 8) and out["output"].shape == (2, 4)


def test_random_weights_and_refusals(conv_run, tmp_path):
    rnd = load_backbone(f"bigan:{conv_run}", weights="random", seed=3)
    assert rnd.weights_id == "random:seed=3"
    trained = load_backbone(f"bigan:{conv_run}")
    x = torch.rand(1, 3, 32, 32)
    assert not torch.allclose(rnd.module(x), trained.module(x))
    with pytest.raises(BackboneError, match="weights may only be 'random'"):
        load_backbone(f"bigan:{conv_run}", weights=str(conv_run))
    with pytest.raises(BackboneError, match="not found"):
        load_backbone(f"bigan:{tmp_path}/missing.pt")
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps({"state": {}}))
    with pytest.raises(BackboneError, match="raw Python pickle"):
        load_backbone(f"bigan:{pickled}")  # refused before anything is unpickled
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(BackboneError, match="deepfeat bigan train"):
        load_backbone(f"bigan:{plain}")
    assert "bigan:<checkpoint>" in list_backbones()


def test_gan_baseline_gives_its_discriminator(image_tree, tmp_path):
    data = open_training_data(image_tree, "conv", 32)
    train(tiny(arch="conv", method="gan", batch_size=4), data, tmp_path, progress=False)
    bb = load_backbone(f"bigan:{tmp_path / 'last.pt'}")
    assert bb.variant == "discriminator" and bb.catalog["output"].channels == 1
    d = load_run(tmp_path).networks.discriminator
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(bb.module(x), d(x), rtol=1e-4, atol=1e-5)


def test_mlp_runs_are_not_backbones(mnist_file, tmp_path):
    data = open_training_data(f"mnist:{mnist_file}", "mlp")
    train(tiny(), data, tmp_path, progress=False)
    with pytest.raises(BackboneError, match="only convolutional runs"):
        load_backbone(f"bigan:{tmp_path / 'last.pt'}")


def test_evaluation_job_runs_on_the_bigan_backbone(conv_run, image_tree, tmp_path):
    result = run(
        EvaluationJob(
            image_tree,
            recipe=ActivationsRecipe(["conv1", "conv3", "conv5"], pool=["avg", "max"]),
            protocol=KShot(k=2, n_splits=1),
            probes=["logreg"],
            backbone=f"bigan:{conv_run}",
            out=tmp_path / "eval",
        ),
        progress=False,
    )
    features = {r["features"] for r in result.summary()}
    assert features == {f"{layer}/{pool}" for layer in ("conv1", "conv3", "conv5") for pool in ("avg", "max")}
    assert result.provenance["weights_id"] == f"sha256:{sha256_file(conv_run)}"
    assert all(np.isfinite(r["mean_class_accuracy"]["mean"]) for r in result.summary())


def test_frozen_prefix_transfer_of_the_encoder(conv_run, image_tree, tmp_path):
    """The thesis' Table 5.2 protocol on a BiGAN encoder: conv1..conv3 kept frozen as trained,
    conv4, conv5 and a new class output initialised afresh and trained; the output layer (E's
    prediction of z) is the one replaced by the classifier."""
    from deepfeat.data.datasets import open_dataset
    from deepfeat.training.finetune import FineTuner, trainable_prefixes

    data = open_dataset(image_tree)
    bb = load_backbone(f"bigan:{conv_run}")
    names = trainable_prefixes(bb, "frozen:conv3")
    assert names == (
        "conv4.0.weight",
        "conv4.0.bias",
        "conv5.0.weight",
        "conv5.0.bias",
        "output.weight",
        "output.bias",
    )
    assert trainable_prefixes(bb, "frozen:pool2") == (
        "conv3.0.weight", "conv3.0.bias", *names,
    )  # fmt: skip
    with pytest.raises(Exception, match="only the new output layer"):
        trainable_prefixes(bb, "frozen:conv5")
    ft = FineTuner(
        f"bigan:{conv_run}", scope="frozen:conv3", epochs=1, batch_size=4, lr=0.01,
        progress=False, out=tmp_path / "ft", val_fraction=0.25,
    ).fit(data)  # fmt: skip
    before, after = bb.module.state_dict(), ft.backbone_.module.state_dict()
    for key in ("conv1.0.weight", "conv2.0.bias", "conv3.0.weight"):
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    # re-initialised, then trained: neither the trained encoder's nor unchanged from a fresh start
    assert not torch.allclose(after["conv4.0.weight"], before["conv4.0.weight"])
    assert after["output.weight"].shape == (3, before["output.weight"].shape[1])
    assert ft.backbone_.catalog["output"].channels == 3
    assert ft.n_trainable_ == sum(after[k].numel() for k in names)


def test_fine_tuned_encoder_loads_back_as_a_backbone(conv_run, image_tree, tmp_path):
    """The fine-tuning CLI's hint (--backbone bigan:RUN --weights OUT/last.pt) gives the fine-tuned
    network: its new output layer and its trained weights, outputs equal to the tuner's."""
    from deepfeat.data.datasets import open_dataset
    from deepfeat.training.finetune import FineTuner

    data = open_dataset(image_tree)
    ft = FineTuner(
        f"bigan:{conv_run}", scope="fc", epochs=1, batch_size=4, lr=0.01,
        progress=False, out=tmp_path / "ft", val_fraction=0.25,
    ).fit(data)  # fmt: skip
    ck = tmp_path / "ft" / "last.pt"
    bb = load_backbone(f"bigan:{conv_run}", weights=ck)
    assert bb.weights_id == f"sha256:{sha256_file(ck)}"
    assert bb.catalog["output"].channels == 3 and bb.class_names == list(data.classes)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bb.module(x), ft.backbone_.module.eval()(x))
    # the encoder as trained is a different network from the fine-tuned one
    with torch.no_grad():
        assert load_backbone(f"bigan:{conv_run}").module(x).shape[1] != 3
    with pytest.raises(BackboneError, match="use --backbone bigan:RUN"):
        load_backbone("efficientnet_lite0", weights=ck)


def test_heatmaps_of_the_encoder_name_their_top_layer(conv_run, image_tree, tmp_path):
    """A BiGAN encoder has no logits: the 'last' configuration needs --top (the heatmap command had
    no such option, though its error asked for one)."""
    from typer.testing import CliRunner

    from deepfeat.cli.main import app

    image = str(next(image_tree.rglob("*.jpg")))
    common = [
        "heatmap",
        image,
        "--backbone",
        f"bigan:{conv_run}",
        "--layer",
        "conv3",
        "--preprocess",
        "backbone",
    ]
    missing = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "a")])
    assert missing.exit_code == 2 and "--top" in missing.output
    result = CliRunner().invoke(app, [*common, "--top", "conv5", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "b").glob("*-conv3-last-p2.png"))
