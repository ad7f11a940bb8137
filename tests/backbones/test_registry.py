from __future__ import annotations

import pytest
import torch

from deepfeat.backbones import list_backbones, load_backbone
from deepfeat.errors import BackboneError, ConfigError, UnknownNameError
from deepfeat.features.capture import LayerCapture


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        load_backbone("alexnett")
    message = str(info.value)
    assert "alexnett" in message and "efficientnet_lite0" in message and "vgg16" in message


@pytest.mark.parametrize("name", [None, 42])
def test_a_backbone_name_of_another_type_is_named(name):
    with pytest.raises(ConfigError, match="backbone name must be a string such as 'efficientnet_lite0'"):
        load_backbone(name)


def test_weights_and_seed_of_another_type_are_named():
    with pytest.raises(ConfigError, match="weights must be None, 'random'"):
        load_backbone("efficientnet_lite0", weights=42)
    with pytest.raises(ConfigError, match="seed must be a whole number"):
        load_backbone("efficientnet_lite0", weights="random", seed="x")


def test_unknown_layer_lists_valid_names():
    bb = load_backbone("efficientnet_lite0", weights="random")
    with pytest.raises(UnknownNameError) as info:
        bb.catalog.resolve(["stage6", "fc7"])
    assert "'fc7'" in str(info.value) and "stage6, stage7, head, pool, logits, prob" in str(info.value)


def test_list_backbones():
    names = list_backbones()
    assert {"efficientnet_lite0", "alexnet", "vgg16", "resnet50"} <= set(names)


def test_random_weights_warn_and_are_seeded():
    with pytest.warns(UserWarning, match="random initialisation"):
        a = load_backbone("alexnet")
    b = load_backbone("alexnet", weights="random")
    assert a.weights_id == b.weights_id == "random:seed=0"
    pa, pb = next(a.module.parameters()), next(b.module.parameters())
    assert torch.equal(pa, pb)
    c = load_backbone("alexnet", weights="random", seed=1)
    assert not torch.equal(pa, next(c.module.parameters()))


@pytest.mark.parametrize(
    "name, size, expected",
    [
        (
            "alexnet",
            224,
            {
                "conv1": (64, 55),
                "pool1": (64, 27),
                "conv5": (256, 13),
                "pool5": (256, 6),
                "fc6": (4096,),
                "fc7": (4096,),
                "fc8": (1000,),
                "prob": (1000,),
            },
        ),
        (
            "vgg16",
            64,
            {
                "conv3_3": (256, 16),
                "pool3": (256, 8),
                "conv4_3": (512, 8),
                "pool4": (512, 4),
                "conv5_3": (512, 4),
                "pool5": (512, 2),
                "fc6": (4096,),
                "fc8": (1000,),
            },
        ),
        (
            "resnet50",
            64,
            {"res2": (256, 16), "res5": (2048, 2), "pool": (2048,), "logits": (1000,)},
        ),
    ],
)
def test_torchvision_catalogs_match_real_shapes(name, size, expected):
    bb = load_backbone(name, weights="random")
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode(), LayerCapture(bb, list(bb.catalog)) as cap:
        out = cap.run(x)
    for layer in bb.catalog:
        assert out[layer.name].shape[1] == layer.channels, layer.name
    for layer_name, shape in expected.items():
        got = out[layer_name].shape[1:]
        assert tuple(got[:2]) == shape, (layer_name, got)
    assert torch.allclose(out["prob"].sum(1), torch.ones(2))


def test_fc_layers_are_rectified_and_fc8_is_not():
    bb = load_backbone("alexnet", weights="random")
    with torch.inference_mode(), LayerCapture(bb, bb.catalog.resolve(["conv1", "fc6", "fc8"])) as cap:
        out = cap.run(torch.randn(2, 3, 224, 224))
    assert out["conv1"].min() >= 0 and out["fc6"].min() >= 0
    assert out["fc8"].min() < 0


def test_weights_file_roundtrip_and_mismatch(tmp_path):
    src = load_backbone("alexnet", weights="random", seed=3)
    path = tmp_path / "alexnet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.module.state_dict().items()}}, path)
    loaded = load_backbone("alexnet", weights=path)
    assert loaded.weights_id.startswith("sha256:")
    assert torch.equal(next(loaded.module.parameters()), next(src.module.parameters()))
    with pytest.raises(BackboneError, match="do not fit the architecture"):
        load_backbone("vgg16", weights=path)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(BackboneError, match=r"junk\.pth"):
        load_backbone("alexnet", weights=tmp_path / "junk.pth")
    with pytest.raises(BackboneError, match="not found"):
        load_backbone("alexnet", weights=tmp_path / "missing.pth")


def test_timm_model_by_name():
    bb = load_backbone("timm:resnet18", weights="random")
    assert bb.catalog.names[:2] == ["stage1", "stage2"] and "logits" in bb.catalog
    with torch.inference_mode(), LayerCapture(bb, list(bb.catalog)) as cap:
        out = cap.run(torch.randn(1, 3, 64, 64))
    assert out["pool"].shape == (1, 512)
    with pytest.raises(UnknownNameError, match="timm model"):
        load_backbone("timm:no_such_net_xyz")


@pytest.mark.parametrize("name,side", [("alexnet", 224), ("vgg16", 224)])
def test_fully_convolutional_equals_the_network_at_224_and_runs_densely_above(name, side):
    from deepfeat.backbones.dense import VARIANT

    plain = load_backbone(name, weights="random", seed=3)
    dense = load_backbone(name, weights="random", seed=3, fully_convolutional=True)
    assert dense.variant == VARIANT and dense.provenance()["variant"] == VARIANT
    assert "variant" not in plain.provenance()
    assert dense.catalog.get("fc6").spatial and not plain.catalog.get("fc6").spatial
    x = torch.randn(2, 3, side, side)
    names = ["pool5", "fc6", "fc7", "fc8"]
    with torch.inference_mode():
        with LayerCapture(plain, plain.catalog.resolve(names)) as cap:
            a = cap.run(x)
        with LayerCapture(dense, dense.catalog.resolve(names)) as cap:
            b = cap.run(x)
    for layer in names:
        torch.testing.assert_close(b[layer].flatten(1), a[layer].flatten(1), atol=2e-4, rtol=1e-4)
    big = torch.randn(1, 3, 320, 416)
    with torch.inference_mode(), LayerCapture(dense, dense.catalog.resolve(["fc7", "fc8"])) as cap:
        out = cap.run(big)
    assert out["fc7"].shape[-2:] == (4, 7)  # pool5 10x13 (VGG16) / 9x12 (AlexNet) under a 7x7 / 6x6 fc6
    assert out["fc8"].shape == (1, 1000)
    with pytest.raises(ConfigError, match="fully convolutional network needs pool5 maps"):
        dense.module(torch.randn(1, 3, 96, 96))


def test_catalog_membership_takes_names_and_the_layers_it_yields():
    catalog = load_backbone("efficientnet_lite0", weights="random").catalog
    first = next(iter(catalog))
    assert first in catalog and first.name in catalog and "stage99" not in catalog
    assert [1] not in catalog and None not in catalog  # (an unhashable list raised TypeError)
