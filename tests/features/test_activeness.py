"""InterActive activeness against autograd on a small network, the two configurations, heatmaps."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from deepfeat.backbones import load_backbone
from deepfeat.backbones.backbone import Backbone, prepare_for_inference
from deepfeat.backbones.layers import LayerCatalog, LayerInfo
from deepfeat.data.datasets import ArrayDataset
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import ConfigError, UnknownNameError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.activeness import Activeness, activeness_maps
from deepfeat.features.pipeline import extract
from tests.conftest import SMALL, photo

TINY_PREP = Preprocess(
    resize="warp", size=24, crop=None, interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3
)


def tiny_backbone() -> Backbone:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),  # 0
        nn.ReLU(),  # 1: c1
        nn.Conv2d(6, 8, 3, stride=2, padding=1),  # 2
        nn.ReLU(),  # 3: c2
        nn.Conv2d(8, 5, 3, padding=1),  # 4
        nn.ReLU(),  # 5: c3
        nn.AdaptiveAvgPool2d(1),  # 6
        nn.Flatten(),  # 7: pool
        nn.Linear(5, 4),  # 8: logits
    )
    catalog = LayerCatalog(
        [
            LayerInfo("c1", "1", "conv", 6, 1),
            LayerInfo("c2", "3", "conv", 8, 2),
            LayerInfo("c3", "5", "conv", 5, 2),
            LayerInfo("pool", "7", "pool", 5),
            LayerInfo("logits", "8", "logits", 4, linear="8"),
        ]
    )
    return Backbone(
        name="tiny",
        module=prepare_for_inference(net),
        catalog=catalog,
        preprocess=TINY_PREP,
        weights_id="test:tiny",
        weights_source="test",
        channels_last=False,
    )


def tiny_dataset(n: int = 5) -> ArrayDataset:
    images = np.stack([photo(i, (30, 26)) for i in range(n)])
    return ArrayDataset(
        name="tiny",
        ids=[str(i) for i in range(n)],
        classes=["a", "b"],
        targets=np.arange(n) % 2,
        images=images,
    )


def reference(net: nn.Sequential, image: torch.Tensor, layer_end: int, top_end: int, p: int) -> torch.Tensor:
    """Spatial average of X * gamma for one image, X the output of net[:layer_end] and gamma the gradient
    d||avg X_T||_p^p / dX, scaled to mean |gamma| = 1."""
    with torch.enable_grad():
        x = net[:layer_end](image[None].double()).detach().requires_grad_(True)
        top = net[layer_end:top_end](x)
        avg = top.flatten(2).mean(2) if top.dim() > 2 else top
        energy = avg.abs().pow(p).sum()
        (gamma,) = torch.autograd.grad(energy, x)
    gamma = gamma / gamma.abs().mean()  # the per-image scale of gamma is fixed to mean |gamma| = 1
    return (x * gamma).flatten(2).mean(2)[0].detach()


@pytest.mark.parametrize("p", [1, 2])
def test_features_equal_autograd_of_the_derived_formula(p):
    bb = tiny_backbone()
    net64 = copy.deepcopy(bb.module).double()
    ds = tiny_dataset()
    methods = [
        Activeness(["c1", "c2", "c3"], config="last", p=p),
        Activeness(["c1", "c2"], config="next", p=p),
    ]
    result = extract(ds, bb, methods, preprocess=TINY_PREP, batch_size=2, progress=False)
    batch = TINY_PREP.to_batch([TINY_PREP(ds.load(i)) for i in range(len(ds))], channels_last=False)
    ends = {"c1": 2, "c2": 4, "c3": 6}
    for i in range(len(ds)):
        for layer, end in ends.items():  # last: T = pool (net[:8])
            expected = reference(net64, batch[i], end, 8, p)
            np.testing.assert_allclose(
                result[f"{layer}/last-p{p}"].features[i], expected, rtol=1e-4, atol=1e-7
            )
        for layer, top_end in (("c1", 4), ("c2", 6)):  # next: T = the next catalog layer
            expected = reference(net64, batch[i], ends[layer], top_end, p)
            np.testing.assert_allclose(
                result[f"{layer}/next-p{p}"].features[i], expected, rtol=1e-4, atol=1e-7
            )


def test_next_and_last_differ_as_specified():
    bb = tiny_backbone()
    ds = tiny_dataset()
    specs = {s.key: s for s in Activeness(["c1", "c2", "c3"], config="next").outputs(bb)}
    assert {k: s.params["top"] for k, s in specs.items()} == {
        "c1/next-p2": "c2",
        "c2/next-p2": "c3",
        "c3/next-p2": "pool",
    }
    assert {s.params["top"] for s in Activeness(["c1", "c2", "c3"]).outputs(bb)} == {"pool"}
    result = extract(
        ds,
        bb,
        [Activeness(["c1", "c3"], "last"), Activeness(["c1", "c3"], "next")],
        preprocess=TINY_PREP,
        progress=False,
    )
    # c3's next layer is pool, the 'last' top: the same feature; c1 gets a different score
    np.testing.assert_allclose(result["c3/last-p2"].features, result["c3/next-p2"].features, rtol=1e-6)
    a, b = result["c1/last-p2"].features, result["c1/next-p2"].features
    assert np.abs(a / np.linalg.norm(a) - b / np.linalg.norm(b)).max() > 1e-2


def test_one_backward_for_last_and_one_per_layer_for_next():
    bb = load_backbone("efficientnet_lite0")
    ds = ArrayDataset(
        name="e",
        ids=["0", "1"],
        classes=["a"],
        targets=np.zeros(2, int),
        images=np.stack([photo(0), photo(1)]),
    )
    calls = []
    original = torch.autograd.grad

    def counting(*args, **kwargs):
        calls.append(len(args[1]) if isinstance(args[1], list | tuple) else 1)
        return original(*args, **kwargs)

    torch.autograd.grad = counting
    try:
        extract(ds, bb, [Activeness(["stage4", "stage6", "head"], "last")], preprocess=SMALL, progress=False)
        assert calls == [3]
        calls.clear()
        extract(ds, bb, [Activeness(["stage4", "stage6", "head"], "next")], preprocess=SMALL, progress=False)
        assert calls == [1, 1, 1]
    finally:
        torch.autograd.grad = original


def test_variable_sizes_batch_without_padding():
    """Images of several sizes at the InterActive resolution: batched by shape, identical to one by one."""
    bb = load_backbone("efficientnet_lite0")
    sizes = [(60, 40), (40, 60), (60, 40), (50, 50), (40, 60), (60, 40)]
    images = [photo(i, s) for i, s in enumerate(sizes)]
    prep = Preprocess(resize="area", size=96, crop=None, multiple=32, mean=(0.5,) * 3, std=(0.5,) * 3)

    class Ragged(ArrayDataset):
        def load(self, index, **kwargs):
            from PIL import Image

            return Image.fromarray(images[index])

        def image_size(self, index):
            h, w = images[index].shape[:2]
            return w, h

    ds = Ragged(
        name="ragged",
        ids=[str(i) for i in range(6)],
        classes=["a"],
        targets=np.zeros(6, int),
        images=np.zeros((6, 1, 1), np.uint8),
    )
    methods = [Activeness(["stage6", "head"], "last"), LayerActivations("head")]
    together = extract(ds, bb, methods, preprocess=prep, batch_size=6, progress=False, workers=0)
    alone = extract(ds, bb, methods, preprocess=prep, batch_size=1, progress=False, workers=0)
    for key in together.features:
        scale = np.abs(alone[key].features).max()  # float round-off of batched convolutions only
        np.testing.assert_allclose(together[key].features, alone[key].features, rtol=1e-4, atol=1e-5 * scale)


def test_heatmaps_and_cli(tmp_path):
    bb = tiny_backbone()
    batch = TINY_PREP.to_batch([TINY_PREP(tiny_dataset(1).load(0))], channels_last=False)
    maps = activeness_maps(bb, batch, ["c1", "c2"], config="last", p=2)
    assert maps["c1"].shape == (1, 24, 24) and maps["c2"].shape == (1, 12, 12)
    net64 = copy.deepcopy(bb.module).double()
    with torch.enable_grad():
        x = net64[:2](batch.double()).detach().requires_grad_(True)
        energy = net64[2:8](x).pow(2).sum()
        (gamma,) = torch.autograd.grad(energy, x)
    np.testing.assert_allclose(maps["c1"][0].numpy(), gamma.sum(1)[0].numpy(), rtol=1e-4, atol=1e-8)
    # (the message said to choose a pool layer; for the top layer it spoke of the layer order)
    for vector in ("pool", "logits"):
        expected = f"'{vector}' is a vector, with no spatial map to draw; choose a layer with one: c1, c2, c3"
        with pytest.raises(ConfigError, match=expected):
            activeness_maps(bb, batch, vector)

    from PIL import Image

    from deepfeat.cli.main import app

    image = tmp_path / "cat.png"
    Image.fromarray(photo(3, (120, 90))).save(image)
    out = tmp_path / "maps"
    result = CliRunner().invoke(
        app,
        ["heatmap", str(image), "--layer", "stage4,head", "--config", "next", "--p", "1", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert (out / "cat-stage4-next-p1.png").exists() and (out / "cat-head-next-p1.png").exists()
    written = json.loads((out / "cat-next-p1.json").read_text())
    assert (
        written["kind"] == "heatmap" and written["schema"] == 1 and written["provenance"]["config"] == "next"
    )
    meta = written["result"]
    assert meta["input_size"] == [448, 576] and np.array(meta["maps"]["head"]).shape == (14, 18)
    bad = CliRunner().invoke(app, ["heatmap", str(image), "--config", "middle", "--out", str(out)])
    assert bad.exit_code == 2 and "middle" in bad.output and "next" in bad.output
    # --top: the score's layer for 'last' (backbones without logits have no default one)
    topped = CliRunner().invoke(
        app, ["heatmap", str(image), "--layer", "stage4", "--top", "stage6", "--out", str(tmp_path / "t")]
    )
    assert topped.exit_code == 0, topped.output
    written = json.loads((tmp_path / "t" / "cat-last-p2.json").read_text())
    assert written["provenance"]["top"] == "stage6"
    default = CliRunner().invoke(
        app, ["heatmap", str(image), "--layer", "stage4", "--out", str(tmp_path / "d")]
    )
    assert default.exit_code == 0, default.output
    maps = [
        json.loads((tmp_path / d / "cat-last-p2.json").read_text())["result"]["maps"]["stage4"] for d in "td"
    ]
    assert not np.allclose(maps[0], maps[1])  # another top layer, another map
    bad = CliRunner().invoke(app, ["heatmap", str(image), "--top", "stage99", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "stage99" in bad.output
    # --collect unweighted, as evaluate and activeness_maps offer
    plain = CliRunner().invoke(
        app,
        ["heatmap", str(image), "--layer", "stage4", "--collect", "unweighted", "--out", str(tmp_path / "u")],
    )
    assert plain.exit_code == 0, plain.output
    written = json.loads((tmp_path / "u" / "cat-last-p2-unweighted.json").read_text())
    assert written["provenance"]["collect"] == "unweighted"
    assert not np.allclose(written["result"]["maps"]["stage4"], maps[1])
    bad = CliRunner().invoke(app, ["heatmap", str(image), "--collect", "all", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "unweighted" in bad.output


def test_bad_parameters():
    bb = tiny_backbone()
    with pytest.raises(UnknownNameError, match="activeness configuration"):
        Activeness("c1", config="first").outputs(bb)
    with pytest.raises(ConfigError, match="p must be 1 or 2"):
        Activeness("c1", p=3).outputs(bb)
    with pytest.raises(ConfigError, match="p must be 1 or 2"):
        Activeness("c1", p=True).outputs(bb)  # (True == 1: it ran as p = 1, keyed 'last-pTrue')
    with pytest.raises(ConfigError, match="is below"):
        Activeness("c3", top="c1").outputs(bb)
    with pytest.raises(ConfigError, match="last layer"):
        Activeness("logits", config="next").outputs(bb)
    # p = 2.0 is p = 2: one key, one store entry (it was keyed 'last-p2.0', computed again)
    assert [s.key for s in Activeness("c1", p=2.0).outputs(bb)] == ["c1/last-p2"]


def unweighted_reference(net: nn.Sequential, image, layer_end: int, top_end: int, p: int) -> torch.Tensor:
    """The unweighted collection by its definition: gamma_n = sum of d E / dZ_m over every unit m that
    neuron n feeds through the next convolution (net[layer_end]), by autograd through an all-ones
    copy of that convolution; scaled to mean |gamma| = 1."""
    reader = net[layer_end]
    with torch.enable_grad():
        x = net[:layer_end](image[None].double()).detach()
        z = net[layer_end](x).detach().requires_grad_(True)
        top = net[layer_end + 1 : top_end](z)
        avg = top.flatten(2).mean(2) if top.dim() > 2 else top
        (dz,) = torch.autograd.grad(avg.abs().pow(p).sum(), z)
        xx = x.clone().requires_grad_(True)
        ones = torch.nn.functional.conv2d(
            xx, torch.ones_like(reader.weight), stride=reader.stride, padding=reader.padding
        )
        (gamma,) = torch.autograd.grad((ones * dz).sum(), xx)
    gamma = gamma / gamma.abs().mean()
    return (x * gamma).flatten(2).mean(2)[0].detach()


@pytest.mark.parametrize("p", [1, 2])
def test_unweighted_collection_equals_its_definition(p):
    bb = tiny_backbone()
    net64 = copy.deepcopy(bb.module).double()
    ds = tiny_dataset(3)
    result = extract(
        ds,
        bb,
        [Activeness(["c1", "c2"], "last", p=p, collect="unweighted")],
        preprocess=TINY_PREP,
        progress=False,
    )
    assert result["c1/last-p2-u" if p == 2 else "c1/last-p1-u"].provenance["collect"] == "unweighted"
    batch = TINY_PREP.to_batch([TINY_PREP(ds.load(i)) for i in range(3)], channels_last=False)
    for layer, end in (("c1", 2), ("c2", 4)):
        got = torch.from_numpy(np.asarray(result[f"{layer}/last-p{p}-u"].features)).double()
        want = torch.stack([unweighted_reference(net64, batch[i].double(), end, 8, p) for i in range(3)])
        torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-3)
    # a 3x3 convolution over all channels reads every channel alike: one weight per position
    maps = activeness_maps(bb, batch, ["c2"], collect="unweighted")["c2"]
    assert maps.shape == (3, 12, 12)
    with pytest.raises(ConfigError, match="no weight layer reads 'logits'"):
        Activeness(["logits"], "last", collect="unweighted", top="logits").outputs(bb)
