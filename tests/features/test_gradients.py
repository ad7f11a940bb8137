"""Deep Fishing gradient features against torch.autograd on the full network, image by image."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import ArrayDataset
from deepfeat.errors import ConfigError, UnknownNameError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.gradients import GradientFeatures, uniform_target_loss
from deepfeat.features.pipeline import extract
from tests.conftest import SMALL, photo


@pytest.fixture(scope="module")
def alexnet():
    return load_backbone("alexnet", weights="random", seed=0)


@pytest.fixture(scope="module")
def effnet():
    return load_backbone("efficientnet_lite0")


def dataset(n: int = 6) -> ArrayDataset:
    images = np.stack([photo(i, (80, 72)) for i in range(n)])
    return ArrayDataset(
        name="grad",
        ids=[f"g/{i}" for i in range(n)],
        classes=["a", "b"],
        targets=np.arange(n) % 2,
        images=images,
    )


def reference_gradient(network64, module_path: str, image: torch.Tensor) -> torch.Tensor:
    """dE/dW of one image by autograd on the whole (float64 copy of the) network, (d_in, d_out)."""
    weight = network64.get_submodule(module_path).weight
    weight.requires_grad_(True)
    try:
        with torch.enable_grad():
            logits = network64(image[None].double())
            loss = -F.log_softmax(logits, dim=1).mean()
            (grad,) = torch.autograd.grad(loss, weight)
    finally:
        weight.requires_grad_(False)
    return grad.reshape(grad.shape[0], grad.shape[1]).t()  # torch keeps W as (d_out, d_in)


def batch_tensor(ds, backbone) -> torch.Tensor:
    return SMALL.to_batch([SMALL(ds.load(i)) for i in range(len(ds))], channels_last=backbone.channels_last)


@pytest.mark.parametrize(
    ("name", "layers"),
    [("alexnet", ["fc6", "fc7", "fc8"]), ("effnet", ["head", "logits"])],
)
def test_factors_and_explicit_match_autograd(name, layers, request):
    torch.manual_seed(0)
    backbone = request.getfixturevalue(name)
    ds = dataset()
    small = [layer for layer in layers if layer != "fc6" and layer != "fc7"]  # explicit only where small
    methods = [GradientFeatures(layers, forms="factored"), GradientFeatures(small, forms="explicit")]
    result = extract(ds, backbone, methods, preprocess=SMALL, batch_size=4, progress=False)
    x = batch_tensor(ds, backbone)
    network64 = copy.deepcopy(backbone.module).double()
    for layer in layers:
        info = backbone.catalog.get(layer)
        factored = result[f"{layer}/grad"]
        explicit = result[f"{layer}/grad-explicit"].features if layer in small else None
        d_in, d_out = factored.provenance["d_in"], factored.provenance["d_out"]
        for i in range(len(ds)):
            ref = reference_gradient(network64, info.linear, x[i])
            rows = torch.from_numpy(np.asarray(factored.features[i])).double().reshape(factored.layer_shape)
            fw, bw = rows[:d_in], rows[d_in:]
            assert rows.shape[0] == d_in + d_out
            ours = fw @ bw.t()  # sum over positions of x_p g_p^T
            scale = ref.abs().max()
            assert scale > 0
            torch.testing.assert_close(ours / scale, ref / scale, atol=1e-5, rtol=0)
            if explicit is not None:
                exp = torch.from_numpy(np.asarray(explicit[i])).double().reshape(d_in, d_out)
                torch.testing.assert_close(exp / scale, ref / scale, atol=1e-5, rtol=0)


def test_head_is_spatial_and_logits_backward_factor_is_closed_form(effnet):
    ds = dataset(4)
    result = extract(ds, effnet, [GradientFeatures(["head", "logits"])], preprocess=SMALL, progress=False)
    head = result["head/grad"]
    assert head.layer_shape == (320 + 1280, 4)  # 64 px input: a 2 x 2 map at stride 32
    logits = result["logits/grad"]
    rows = torch.from_numpy(np.asarray(logits.features)).reshape(len(ds), 1280 + 1000)
    x = batch_tensor(ds, effnet)
    with torch.no_grad():
        out = effnet.module(x)
    expected = out.softmax(dim=1) - 1.0 / 1000  # dE/dy of the output layer with the uniform target
    torch.testing.assert_close(rows[:, 1280:], expected, atol=1e-6, rtol=1e-4)
    # the forward factor of the classifier is the pooled head; the baselines are x_{k-1} and x_k (y_k at
    # the output layer, which has no non-linearity)
    pooled = extract(
        ds, effnet, [LayerActivations(["stage7", "pool", "logits"])], preprocess=SMALL, progress=False
    )
    np.testing.assert_allclose(rows[:, :1280].numpy(), pooled["pool"].features, atol=1e-5)
    np.testing.assert_allclose(result["logits/x_in"].features, pooled["pool"].features, atol=1e-5)
    np.testing.assert_allclose(result["logits/x_out"].features, pooled["logits"].features, atol=1e-4)
    # at the hidden head layer: x_in is the pooled stage7, x_out the pooled head after BN + ReLU6 (= pool),
    # y the 1x1 convolution's output before them
    np.testing.assert_allclose(result["head/x_in"].features, pooled["stage7/avg"].features, atol=1e-5)
    np.testing.assert_allclose(result["head/x_out"].features, pooled["pool"].features, atol=1e-5)
    pre = extract(
        ds, effnet, [GradientFeatures(["head"], forms=["preact"])], preprocess=SMALL, progress=False
    )
    assert np.abs(pre["head/y"].features - result["head/x_out"].features).max() > 0.1
    assert (result["head/x_out"].features >= 0).all() and (pre["head/y"].features < 0).any()


def test_one_forward_and_one_backward_per_batch(alexnet):
    ds = dataset(6)
    forward_calls = []
    handle = alexnet.module.register_forward_pre_hook(lambda *_: forward_calls.append(1))
    backward_calls = []
    original = torch.autograd.grad

    def counting(*args, **kwargs):
        backward_calls.append(1)
        return original(*args, **kwargs)

    torch.autograd.grad = counting
    try:
        extract(
            ds,
            alexnet,
            [GradientFeatures(["fc6", "fc7", "fc8"]), LayerActivations(["pool5", "fc7"])],
            preprocess=SMALL,
            batch_size=3,
            progress=False,
        )
    finally:
        torch.autograd.grad = original
        handle.remove()
    assert len(forward_calls) == 2 and len(backward_calls) == 2  # two batches of three


def test_gradients_are_stored_and_read_back(alexnet, tmp_path):
    ds = dataset(4)
    method = GradientFeatures("fc7")
    first = extract(ds, alexnet, [method], store=tmp_path, preprocess=SMALL, progress=False)
    again = extract(ds, alexnet, [method], store=tmp_path, preprocess=SMALL, progress=False)
    assert again.n_forward == 0 and set(again.origins.values()) == {"store"}
    np.testing.assert_array_equal(first["fc7/grad"].features, again["fc7/grad"].features)
    assert again["fc7/grad"].layer_shape == (8192, 1)


def test_uniform_target_loss_is_cross_entropy_with_soft_target():
    logits = torch.randn(3, 7)
    soft = torch.full((3, 7), 1 / 7)
    assert uniform_target_loss(logits).item() == pytest.approx(
        F.cross_entropy(logits, soft, reduction="sum").item(), rel=1e-6
    )


def test_bad_requests(alexnet, effnet):
    with pytest.raises(ConfigError, match=r"'conv5'.*valid: fc6, fc7, fc8"):
        GradientFeatures("conv5").outputs(alexnet)
    with pytest.raises(UnknownNameError, match="gradient feature form"):
        GradientFeatures("fc7", forms="outer").outputs(alexnet)
    with pytest.raises(ConfigError, match="use the factored form"):
        GradientFeatures("fc7", forms="explicit").outputs(alexnet)
    with pytest.raises(ConfigError, match="power"):
        GradientFeatures("logits", power=0).outputs(effnet)
    with pytest.raises(ConfigError, match="power normalises the explicit form only"):  # (was ignored)
        GradientFeatures("logits", power=0.5).outputs(effnet)
    assert not GradientFeatures("fc7", forms=["input", "preact"]).needs_backward


def test_dense_alexnet_gives_gradients_and_activeness_over_positions():
    from deepfeat.data.transforms import Preprocess
    from deepfeat.features.activeness import Activeness

    dense = load_backbone("alexnet", weights="random", seed=0, fully_convolutional=True)
    warp = Preprocess(resize="warp", size=256, crop=None, interpolation="bilinear")
    result = extract(
        dataset(2),
        dense,
        [GradientFeatures(["fc7", "fc8"]), Activeness(["conv5", "fc6"], "last"), LayerActivations(["fc6"])],
        preprocess=warp,
        progress=False,
    )
    # 256 px: pool5 is 7x7, so the 6x6 fc6 convolution leaves 2x2 positions for fc6, fc7 and fc8
    assert result["fc7/grad"].layer_shape == (4096 + 4096, 4)
    assert result["fc8/grad"].layer_shape == (4096 + 1000, 4)
    assert result["fc6/avg"].dim == 4096 and result["fc6/last-p2"].dim == 4096
    assert result["fc6/last-p2"].provenance["top"] == "fc7"
    with pytest.raises(ConfigError, match=r"support nn\.Linear and 1x1"):
        GradientFeatures(["fc6"]).outputs(dense)  # fc6 is a 6x6 convolution: no outer-product form
