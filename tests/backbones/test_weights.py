"""torchvision weights enums through the one weights resolver, read from a torch hub cache in tmp."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torchvision.models import AlexNet_Weights, ResNet50_Weights, resnet50

from deepfeat.backbones import load_backbone
from deepfeat.backbones.caches import hf_cache_dir, hub_offline, torch_hub_file
from deepfeat.backbones.weights import torchvision_weights
from deepfeat.errors import BackboneError, UnknownNameError


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_enum_from_the_torch_hub_cache(torch_home):
    torch.manual_seed(7)
    source = resnet50()
    path = torch_home / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    for spelling in ("ResNet50_Weights.IMAGENET1K_V2", ResNet50_Weights.IMAGENET1K_V2):
        bb = load_backbone("resnet50", weights=spelling)
        assert torch.equal(bb.module.fc.weight, source.fc.weight)
        assert bb.weights_id == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert (bb.preprocess.size, bb.preprocess.crop, bb.preprocess.interpolation) == (232, 224, "bilinear")
    assert bb.class_names[:2] == ["tench", "goldfish"] and len(bb.class_names) == 1000


def test_missing_or_wrong_enum_is_one_line(torch_home):
    with pytest.raises(BackboneError) as info:
        load_backbone("resnet50", weights="ResNet50_Weights.IMAGENET1K_V1")
    expected = torch_home / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert str(expected) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(BackboneError, match="another architecture"):
        load_backbone("resnet50", weights=AlexNet_Weights.IMAGENET1K_V1)
    with pytest.raises(UnknownNameError, match=r"ResNet50_Weights\.IMAGENET1K_V1"):
        load_backbone("resnet50", weights="ResNet50_Weights.IMAGENET1K_V3")
    assert torchvision_weights("alexnet", None) is None and torchvision_weights("alexnet", "random") is None
    assert torchvision_weights("alexnet", "DEFAULT") is AlexNet_Weights.IMAGENET1K_V1


def test_cache_locations_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "h"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert hf_cache_dir() == tmp_path / "h" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hf_cache_dir() == tmp_path / "c"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "t"))
    assert (
        torch_hub_file("https://x/y/file-abc.pth") == tmp_path / "t" / "hub" / "checkpoints" / "file-abc.pth"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()
