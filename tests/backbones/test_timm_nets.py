"""timm models by any name, weights from local Hugging Face / torch caches built in tmp folders, and
vision transformers whose blocks become maps and class tokens for every feature method."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import ArrayDataset
from deepfeat.data.transforms import Preprocess
from deepfeat.errors import BackboneError, UnknownNameError
from deepfeat.features import FisherEncoder
from deepfeat.features.activations import LayerActivations
from deepfeat.features.activeness import Activeness, activeness_maps
from deepfeat.features.capture import LayerCapture
from deepfeat.features.gradients import GradientFeatures
from deepfeat.features.pipeline import extract
from tests.conftest import photo


@pytest.fixture
def caches(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Empty Hugging Face and torch caches in tmp, online mode unless a test sets HF_HUB_OFFLINE."""
    hf, th = tmp_path / "hf", tmp_path / "torch"
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.setenv("TORCH_HOME", str(th))
    for name in ("HF_HUB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return hf, th


def cache_repo(hf: Path, repo: str, files: dict[str, callable]) -> Path:
    """A hub cache entry as huggingface_hub lays it out: refs/main -> snapshots/<commit>/files."""
    root = hf / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0123456789abcdef")
    for name, write in files.items():
        write(snapshot / name)
    return snapshot


def sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tags_and_typos():
    with pytest.raises(UnknownNameError) as info:
        load_backbone("timm:vit_tiny_patch16_22")
    assert "vit_tiny_patch16_224" in str(info.value)
    with pytest.raises(UnknownNameError, match="pretrained tag") as info:
        load_backbone("timm:resnet18.a1_in1kk")
    assert str(info.value).split("valid: ")[1].startswith("a1_in1k")


def test_tagged_name_loads_the_hf_cache_offline(caches, monkeypatch):
    hf, _ = caches
    source = timm.create_model("test_vit")  # weights to find: not those of seed 0
    snapshot = cache_repo(
        hf, "timm/test_vit.r160_in1k", {"model.safetensors": lambda p: save_file(source.state_dict(), p)}
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bb = load_backbone("timm:test_vit.r160_in1k")
    assert same_weights(bb.module, source)
    assert bb.weights_id == sha(snapshot / "model.safetensors")
    assert bb.preprocess.crop == 160 and bb.preprocess.mean == (0.5, 0.5, 0.5)


def test_missing_weights_offline_is_one_line_naming_the_cache(caches, monkeypatch):
    hf, _ = caches
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneError) as info:
        load_backbone("timm:test_vit.r160_in1k", weights="pretrained")
    message = str(info.value)
    assert "\n" not in message and "HF_HUB_OFFLINE" in message
    assert str(hf / "hub" / "models--timm--test_vit.r160_in1k") in message
    with pytest.warns(UserWarning, match="no pretrained weights in the local caches") as record:
        bb = load_backbone("timm:test_vit.r160_in1k")
    assert bb.weights_id == "random:seed=0" and str(hf) in str(record[0].message)


def test_torch_hub_cache_and_hf_hub_names(caches, monkeypatch):
    hf, th = caches
    source = timm.create_model("lcnet_050")
    url_file = th / "hub" / "checkpoints" / "lcnet_050-f447553b.pth"  # lcnet_050.ra2_in1k's URL
    url_file.parent.mkdir(parents=True)
    torch.save(source.state_dict(), url_file)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bb = load_backbone("timm:lcnet_050.ra2_in1k")
    assert same_weights(bb.module, source) and bb.weights_id == sha(url_file)

    vit = timm.create_model("test_vit", num_classes=3)
    snapshot = cache_repo(hf, "someone/tiny-vit", {})
    timm.models.save_for_hf(vit, str(snapshot), safe_serialization=True)
    hub = load_backbone("timm:hf-hub:someone/tiny-vit")
    assert same_weights(hub.module, vit) and hub.catalog["logits"].channels == 3
    assert hub.weights_id == sha(snapshot / "model.safetensors")
    with pytest.raises(BackboneError, match="not in the Hugging Face cache"):
        load_backbone("timm:hf-hub:someone/absent", weights="pretrained")


@pytest.fixture(scope="module")
def vit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_backbone("timm:test_vit", weights="random")


def test_vit_catalog_matches_forward_intermediates(vit):
    names = vit.catalog.names
    assert names[:4] == ["stage1", "stage1_cls", "stage2", "stage2_cls"]
    assert names[-3:] == ["pool", "logits", "prob"] and vit.catalog["logits"].linear == "head"
    x = torch.randn(2, 3, 160, 160)
    with LayerCapture(vit, vit.catalog.resolve("all")) as cap, torch.inference_mode():
        out = cap.run(x)
        _, inter = vit.module.forward_intermediates(x, return_prefix_tokens=True)
        logits = vit.module(x)
    for i, (maps, prefix) in enumerate(inter):
        assert out[f"stage{i + 1}"].shape == (2, 64, 10, 10)
        torch.testing.assert_close(out[f"stage{i + 1}"], maps, rtol=0, atol=0)
        torch.testing.assert_close(out[f"stage{i + 1}_cls"], prefix[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(out["logits"], logits)
    torch.testing.assert_close(vit.module.head(out["pool"]), logits)


def test_vit_activeness_gamma_equals_autograd_on_the_tokens(vit):
    """gamma of a block map = d(score)/d(patch tokens) by plain autograd, reshaped to the grid."""
    x = torch.randn(2, 3, 160, 160)
    gamma = activeness_maps(vit, x, ["stage3"], config="last")["stage3"]
    tokens = {}

    def leaf(_m, _i, out):
        tokens["t"] = out.detach().requires_grad_(True)
        return tokens["t"]

    handle = vit.module.blocks[2].register_forward_hook(leaf)
    try:
        with torch.enable_grad():
            feats = vit.module.forward_head(vit.module.forward_features(x), pre_logits=True)
            (grad,) = torch.autograd.grad(feats.pow(2).sum(), tokens["t"])
    finally:
        handle.remove()
    expected = -grad[:, 1:].transpose(1, 2).reshape(2, 64, 10, 10).sum(dim=1)  # ln f = -||x||^2
    torch.testing.assert_close(gamma, expected, rtol=1e-4, atol=1e-6)


def test_every_feature_method_on_a_vit(vit):
    images = np.stack([photo(i, (160, 160)) for i in range(6)])
    data = ArrayDataset(
        name="v", ids=[f"v{i}" for i in range(6)], classes=["a", "b"], targets=np.arange(6) % 2, images=images
    )
    prep = Preprocess(resize="shorter", size=160, crop=160, mean=(0.5,) * 3, std=(0.5,) * 3)
    methods = [
        LayerActivations(["stage2", "stage6_cls", "pool"], pool=["avg", "unroll"]),
        GradientFeatures(["logits"]),
        Activeness(["stage4"], config="next"),
    ]
    res = extract(data, vit, methods, preprocess=prep, progress=False, workers=0, batch_size=3)
    assert res["stage2/avg"].features.shape == (6, 64) and res["stage6_cls"].features.shape == (6, 64)
    assert res["stage2/unroll"].layer_shape == (64, 10, 10)
    assert res["logits/grad"].layer_shape == (64 + 1000, 1) and res["stage4/next-p2"].dim == 64
    assert all(
        np.isfinite(fs.features).all() and np.abs(fs.features).sum() > 0 for fs in res.features.values()
    )
    maps = res["stage2/unroll"]
    fv = FisherEncoder(n_components=2, pca_dim=8, layer_shape=maps.layer_shape, random_state=0)
    assert fv.fit(maps.features).transform(maps.features).shape == (6, 2 * (2 * 8 + 1))
