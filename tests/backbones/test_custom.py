"""Backbone.from_module: any nn.Module, kinds / channels / strides found by one dummy forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from deepfeat.backbones import Backbone, LayerCatalog, LayerInfo
from deepfeat.data.datasets import ArrayDataset
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import BackboneError, ConfigError, UnknownNameError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.capture import LayerCapture
from deepfeat.features.gradients import GradientFeatures
from deepfeat.features.pipeline import extract
from tests.conftest import photo

PREP = Preprocess(resize="shorter", size=64, crop=64)


class Tokens(nn.Module):
    """A toy transformer: 8x8 patches of a 64x64 image, a class token, one mixing layer, a head."""

    num_prefix_tokens = 1

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 8, stride=8)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = self.mix(torch.cat([self.cls.expand(len(x), -1, -1), t], dim=1)).relu()
        return self.head(t[:, 0])


def test_kinds_channels_and_strides_are_inferred():
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small()
    bb = Backbone.from_module(
        net, layers=["features.3", "features.12", "avgpool", "classifier.3"], preprocess=PREP
    )
    got = {x.name: (x.kind, x.channels, x.stride, x.linear) for x in bb.catalog}
    assert got == {
        "features.3": ("conv", 24, 8, None),
        "features.12": ("conv", 576, 32, None),
        "avgpool": ("pool", 576, None, None),
        "classifier.3": ("logits", 1000, None, "classifier.3"),
        "prob": ("prob", 1000, None, None),
    }
    assert bb.weights_id.startswith("state-sha256:") and not net.training
    x = torch.randn(2, 3, 64, 64)
    with LayerCapture(bb, bb.catalog.resolve("all")) as cap, torch.inference_mode():
        out = cap.run(x)
        torch.testing.assert_close(out["classifier.3"], net(x))
    assert out["features.3"].shape == (2, 24, 8, 8)
    named = Backbone.from_module(net, layers={"mid": "features.3"}, preprocess=PREP)
    assert named.catalog.names == ["mid"]
    torch.nn.init.zeros_(net.classifier[3].bias)
    torch.nn.init.ones_(net.classifier[3].bias)
    assert Backbone.from_module(net, layers=["features.3"], preprocess=PREP).weights_id != bb.weights_id


def test_token_outputs_and_feature_methods():
    torch.manual_seed(0)
    bb = Backbone.from_module(Tokens(), layers={"mix": "mix", "logits": "head"}, preprocess=PREP)
    assert [(x.name, x.kind, x.stride, x.layout) for x in bb.catalog] == [
        ("mix", "block", 8, "tokens"),
        ("mix_cls", "token", None, "class-token"),
        ("logits", "logits", None, "nchw"),
        ("prob", "prob", None, "nchw"),
    ]
    data = ArrayDataset(
        name="t",
        ids=["a", "b", "c"],
        classes=["x", "y"],
        targets=np.array([0, 1, 0]),
        images=np.stack([photo(i, (64, 64)) for i in range(3)]),
    )
    res = extract(
        data,
        bb,
        [LayerActivations(["mix", "mix_cls"]), GradientFeatures(["logits"])],
        preprocess=PREP,
        progress=False,
        workers=0,
    )
    assert res["mix/avg"].dim == 16 and res["mix_cls"].dim == 16 and res["logits/grad"].dim == 16 + 5


def test_refusals():
    net = torchvision.models.mobilenet_v3_small()
    with pytest.raises(UnknownNameError, match=r"features\.3"):
        Backbone.from_module(net, layers=["features.33"], preprocess=PREP)
    with pytest.raises(ConfigError, match="list of submodule paths"):
        Backbone.from_module(net, layers="features.3", preprocess=PREP)
    with pytest.raises(BackboneError, match=r"must be a torch\.nn\.Module"):
        Backbone.from_module("resnet", layers=["x"])

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 4, batch_first=True)

        def forward(self, x):
            return self.lstm(x.flatten(2).transpose(1, 2))[0]

    with pytest.raises(BackboneError, match="returns a tuple"):
        Backbone.from_module(Pair(), layers=["lstm"], preprocess=PREP)


def test_channels_last_outputs_are_permuted():
    class Nhwc(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 4, stride=4)
            self.stage = nn.Identity()

        def forward(self, x):
            return self.stage(self.conv(x).permute(0, 2, 3, 1)).mean(dim=(1, 2))

    net = Nhwc().eval()
    catalog = LayerCatalog([LayerInfo("stage", "stage", "conv", 6, 4, layout="nhwc")])
    bb = Backbone("nhwc", net, catalog, PREP, "x", "x", channels_last=False)
    x = torch.randn(2, 3, 64, 64)
    with LayerCapture(bb, list(catalog)) as cap, torch.inference_mode():
        torch.testing.assert_close(cap.run(x)["stage"], net.conv(x))
    final = {}
    handle = net.register_forward_hook(lambda _m, _i, y: final.setdefault("y", y))
    try:
        with LayerCapture(bb, list(catalog), grad_layers=["stage"]) as cap, torch.enable_grad():
            out = cap.run(x)
            (g,) = torch.autograd.grad(final["y"].sum(), out["stage"])  # flows through the rebuilt output
    finally:
        handle.remove()
    torch.testing.assert_close(g, torch.full_like(g, 1 / 256))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_from_module_probes_on_the_module_device():
    bb = Backbone.from_module(Tokens().cuda(), layers={"mix": "mix"}, preprocess=PREP)
    assert bb.catalog["mix"].stride == 8 and bb.catalog["mix_cls"].kind == "token"
