"""Training every method for a few steps on tiny data, checkpoints that resume exactly, the step-size
schedule, the sample PNGs and refused inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.checkpoint import load_checkpoint, save_checkpoint
from deepfeat.errors import ConfigError, DataError
from deepfeat.tasks.bigan import METHODS, load_run, open_training_data, train
from deepfeat.tasks.bigan import steps as steps_module
from deepfeat.tasks.bigan.data import TrainingData
from tests.tasks.bigan.conftest import tiny


@pytest.fixture
def mnist_data(mnist_file):
    return open_training_data(f"mnist:{mnist_file}", "mlp")


@pytest.fixture
def image_data(image_tree):
    return open_training_data(image_tree, "conv", 32)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_on_digits(method, mnist_data, tmp_path):
    epochs = 0 if method == "random" else 1
    result = train(tiny(method=method, epochs=epochs), mnist_data, tmp_path / method, progress=False)
    assert len(result.history) == epochs
    for h in result.history:
        assert all(np.isfinite(v) for v in h["losses"].values())
        assert h["images_per_second"] > 0
    expected = {"bigan": {"D", "G", "E"}, "gan": {"D", "G"}, "lr": {"D", "G", "E"}, "jlr": {"D", "G", "E"}}
    if method in expected:
        assert set(result.history[0]["losses"]) == expected[method]
    ck = load_checkpoint(tmp_path / method / "last.pt", kind="bigan")
    assert ck.meta["epoch"] == epochs and ck.meta["deepfeat_bigan"]["method"] == method
    if method in ("bigan", "jlr", "ae-l2"):
        pngs = sorted(p.name for p in (tmp_path / method / "samples").iterdir())
        assert pngs == ["epoch-1-reconstructions.png", "epoch-1-samples.png"]


@pytest.mark.parametrize("method", ["bigan", "gan", "ae-l1"])
def test_conv_methods_train_on_an_image_folder(method, image_data, tmp_path):
    result = train(tiny(method=method, arch="conv", batch_size=4), image_data, tmp_path, progress=False)
    assert len(result.history) == 1 and all(np.isfinite(v) for v in result.history[0]["losses"].values())
    assert (tmp_path / "samples" / "epoch-1-samples.png").is_file()


def _states(nets) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n, net in nets.items() for k, v in net.state_dict().items()}


class Interrupt(Exception):
    pass


@pytest.mark.parametrize(
    ("arch", "method"), [("mlp", "bigan"), ("mlp", "jlr"), ("conv", "bigan"), ("mlp", "ae-l2")]
)
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(
    arch, method, mnist_data, image_data, tmp_path, monkeypatch
):
    data = mnist_data if arch == "mlp" else image_data
    opts = tiny(arch=arch, method=method, epochs=3, batch_size=32 if arch == "mlp" else 4)
    whole = train(opts, data, tmp_path / "whole", progress=False)

    calls = {"n": 0}
    real_step = steps_module.STEPS[method]
    steps_per_epoch = len(data) // opts.batch_size

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 2:  # in the middle of the second epoch
            raise Interrupt
        return real_step(*args)

    monkeypatch.setitem(steps_module.STEPS, method, failing)
    with pytest.raises(Interrupt):
        train(opts, data, tmp_path / "cut", progress=False)
    assert load_checkpoint(tmp_path / "cut" / "last.pt").meta["epoch"] == 1
    monkeypatch.setitem(steps_module.STEPS, method, real_step)
    resumed = train(opts, data, tmp_path / "cut", progress=False)
    assert resumed.resumed_from == 1
    a, b = _states(whole.networks), _states(resumed.networks)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["losses"] for h in whole.history] == [h["losses"] for h in resumed.history]


def test_a_finished_run_is_not_trained_again_and_other_settings_are_refused(mnist_data, tmp_path):
    first = train(tiny(), mnist_data, tmp_path, progress=False)
    again = train(tiny(), mnist_data, tmp_path, progress=False)
    assert again.resumed_from == 1 and len(again.history) == 1
    a, b = _states(first.networks), _states(again.networks)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="lr"):
        train(tiny(lr=1e-3), mnist_data, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="other data"):
        train(tiny(), mnist_data.subset(np.arange(128)), tmp_path, progress=False)


def test_a_checkpoint_from_before_a_new_setting_resumes_with_its_default(mnist_data, tmp_path):
    """A run written before ``latent_init_scale`` existed (no such key in its options) was trained
    with the default: it continues; a non-default value is still refused."""
    train(tiny(epochs=1), mnist_data, tmp_path, progress=False)
    ck = load_checkpoint(tmp_path / "last.pt", kind="bigan")
    meta = dict(ck.meta)
    meta["options"] = {k: v for k, v in meta["options"].items() if k != "latent_init_scale"}
    save_checkpoint(tmp_path / "last.pt", ck.state, kind="bigan", meta=meta)
    resumed = train(tiny(epochs=1), mnist_data, tmp_path, progress=False)
    assert resumed.resumed_from == 1 and len(resumed.history) == 1
    with pytest.raises(ConfigError, match="latent_init_scale"):
        train(tiny(epochs=1, latent_init_scale=1.0), mnist_data, tmp_path, progress=False)


def test_loaded_run_gives_the_trained_networks(mnist_data, tmp_path):
    result = train(tiny(method="bigan"), mnist_data, tmp_path, progress=False)
    run = load_run(tmp_path)
    x = mnist_data.batch(np.arange(8))
    torch.testing.assert_close(run.networks.encoder(x), result.networks.encoder(x))
    assert run.epoch == 1 and run.options.method == "bigan"


def test_a_run_trained_on_a_gpu_loads_where_there_is_none(mnist_data, tmp_path):
    """The device a run trained on is recorded, not required: its checkpoint loads on the CPU."""
    result = train(tiny(epochs=1), mnist_data, tmp_path, progress=False)
    ck = load_checkpoint(tmp_path / "last.pt", kind="bigan")
    meta = dict(ck.meta)
    meta["options"] = {**meta["options"], "device": "cuda:3"}
    save_checkpoint(tmp_path / "last.pt", ck.state, kind="bigan", meta=meta)
    run = load_run(tmp_path, device="cpu")
    x = mnist_data.batch(np.arange(4))
    torch.testing.assert_close(run.networks.encoder(x), result.networks.encoder(x))


def test_learning_rate_schedule_is_constant_then_exponential():
    opts = tiny(epochs=4, lr=2e-4)
    rates = [opts.learning_rate(e) for e in range(4)]
    assert rates == pytest.approx([2e-4, 2e-4, 2e-5, 2e-6])  # to 2e-6 at the end, from halfway
    assert tiny(epochs=1).learning_rate(0) == 2e-4
    assert [tiny(epochs=3, decay="none").learning_rate(e) for e in range(3)] == [2e-4] * 3


def test_alternating_updates_differ_from_simultaneous_ones(mnist_data):
    a = train(tiny(), mnist_data, progress=False)
    b = train(tiny(simultaneous=False), mnist_data, progress=False)
    x = mnist_data.batch(np.arange(8))
    assert not torch.allclose(a.networks.encoder(x), b.networks.encoder(x))


def test_batchnorm_statistics_are_the_average_over_the_refresh_batches(mnist_data):
    opts = tiny(method="random", epochs=0, bn_batches=4)
    E = train(opts, mnist_data, progress=False).networks.encoder
    gen = torch.Generator().manual_seed(opts.seed * 100_003)  # the refresh's own generator
    means, variances = [], []
    with torch.no_grad():
        for _ in range(4):
            rows = torch.randint(0, len(mnist_data), (opts.batch_size,), generator=gen).numpy()
            x = mnist_data.batch(rows, gen)
            torch.rand(opts.batch_size, opts.latent, generator=gen)  # the prior draw it makes too
            pre = E.hidden2[0](E.hidden1(x))
            means.append(pre.mean(0))
            variances.append(pre.var(0, unbiased=True))
    norm = E.hidden2[1]
    torch.testing.assert_close(norm.running_mean, torch.stack(means).mean(0), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(norm.running_var, torch.stack(variances).mean(0), rtol=1e-5, atol=1e-7)


def test_inputs_are_checked_before_training(mnist_data, image_data, image_tree, tmp_path):
    with pytest.raises(DataError, match="vectors"):
        train(tiny(arch="conv"), mnist_data, progress=False)
    with pytest.raises(DataError, match="MNIST"):
        open_training_data(image_tree, "mlp")
    with pytest.raises(DataError, match="fewer than one batch"):
        train(tiny(arch="conv", batch_size=64), image_data, progress=False)
    with pytest.raises(ConfigError, match="method"):
        tiny(method="vae").validate()
    with pytest.raises(ConfigError, match="input_size"):
        tiny(arch="conv", input_size=48).validate()
    with pytest.raises(ConfigError, match="device must be 'cpu', 'cuda' or 'cuda:<index>', got 'gpu'"):
        train(tiny(device="gpu"), mnist_data, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available here"):
            train(tiny(device="cuda"), mnist_data, progress=False)
    with pytest.raises(DataError, match="mnist:PATH"):
        open_training_data("mnist:/nonexistent/mnist.npz", "mlp")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.npz: not a readable \.npz file"):
        open_training_data(f"mnist:{tmp_path / 'empty.npz'}", "mlp")


def test_image_batches_are_random_crops_and_flips_in_range(image_data):
    assert image_data.images.shape[1:] == (36, 36, 3)  # shorter side to 72/64 of 32, centre square
    gen = torch.Generator().manual_seed(0)
    x = image_data.batch(np.arange(6), gen)
    assert x.shape == (6, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    centre = image_data.batch(np.arange(6))
    np.testing.assert_array_equal(
        centre[0].permute(1, 2, 0).add(1).mul(127.5).round().numpy().astype(np.uint8),
        image_data.images[0, 2:34, 2:34],
    )


def test_data_with_too_few_pixels_kinds_are_refused():
    data = TrainingData("x", "vectors", np.zeros((10, 28, 28), np.uint8))
    with pytest.raises(DataError, match="fewer than one batch"):
        train(tiny(), data, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_training_and_evaluation_on_cuda(mnist_data, mnist_file, tmp_path):
    from deepfeat.tasks.bigan import evaluate_run

    result = train(tiny(device="cuda"), mnist_data, tmp_path, progress=False)
    assert next(result.networks.encoder.parameters()).is_cuda
    ev = evaluate_run(tmp_path, device="cuda", metrics=("l2",), pixels=False)
    assert ev.nearest_neighbor and ev.reconstruction is not None
