from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from deepfeat.data.transforms import Preprocess, preset
from deepfeat.errors import ConfigError, UnknownNameError
from tests.conftest import photo


def test_shorter_side_resize_and_centre_crop_match_torchvision():
    from torchvision.transforms import v2 as T

    img = Image.fromarray(photo(0, (300, 200)))
    prep = Preprocess(resize="shorter", size=256, crop=224, interpolation="bilinear")
    ours = prep(img)
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    ref = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224)])(img)
    np.testing.assert_array_equal(ours, np.asarray(ref))


def test_decaf_warps_to_256_then_crops_224():
    base = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3)
    decaf = preset("decaf", base)
    assert decaf.resize == "warp" and decaf.size == 256 and decaf.crop == 224
    assert decaf.mean == base.mean  # the network's own normalisation is kept
    img = Image.fromarray(photo(1, (500, 100)))
    assert decaf.resized_size(500, 100) == (256, 256)
    ref = np.asarray(img.resize((256, 256), Image.Resampling.BILINEAR))[16:240, 16:240]
    np.testing.assert_array_equal(decaf(img), ref)


def test_to_batch_normalises_in_channels_last():
    prep = Preprocess(crop=4, size=4, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    arr = np.zeros((4, 4, 3), np.uint8)
    arr[..., 0] = 255
    batch = prep.to_batch([arr, arr])
    assert batch.shape == (2, 3, 4, 4) and batch.dtype == torch.float32
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(batch[0, :, 0, 0], torch.tensor([1.0, -1.0, 0.0]))
    assert prep.to_batch([arr], channels_last=False).is_contiguous()


def test_validation_errors():
    with pytest.raises(UnknownNameError, match="valid: shorter, warp"):
        Preprocess(resize="stretch")
    with pytest.raises(ConfigError, match="crop must be"):
        Preprocess(size=100, crop=200)
    with pytest.raises(UnknownNameError, match="valid: backbone, decaf"):
        preset("imagenet", Preprocess())
    with pytest.raises(ConfigError, match="size must be a whole number, got '256'"):
        Preprocess(size="256")  # was a TypeError from a comparison
    assert Preprocess(size=np.int64(256)).size == 256
    with pytest.raises(ConfigError, match="interpolation must be a name"):
        Preprocess(interpolation=["bicubic"])
    for mean in ("abc", 5, None, b"abc", (True, False, True), (float("nan"), 0.5, 0.5)):
        with pytest.raises(ConfigError, match="mean must be 3 finite numbers"):
            Preprocess(mean=mean)
    with pytest.raises(ConfigError, match="jpeg_draft"):
        Preprocess(jpeg_draft="no")


def test_draft_size_is_the_resized_size():
    prep = Preprocess(resize="shorter", size=256, crop=224)
    assert prep.draft_size(1000, 500) == (512, 256)


@pytest.mark.parametrize(
    ("width", "height"),
    [(1000, 100), (100, 1000), (5120, 512), (512, 5120), (8, 8), (3, 5), (1, 1), (640, 480), (333, 500)],
)
def test_interactive_resize_rule(width, height):
    prep = preset("interactive", Preprocess())
    w, h = prep.resized_size(width, height)
    assert w % 32 == 0 and h % 32 == 0 and w >= 32 and h >= 32
    assert abs(w * h / 512**2 - 1) < 0.05  # area within 5% of 512^2 for aspect ratios up to 10:1
    aspect_error = abs(math.log((w / h) / (width / height)))
    assert aspect_error < math.log(1.1)  # aspect ratio kept within 10%
    # no candidate one multiple away is better on both counts
    for dw, dh in [(32, 0), (-32, 0), (0, 32), (0, -32)]:
        W, H = w + dw, h + dh
        if W >= 32 and H >= 32:
            other_area = abs(math.log(W * H / 512**2))
            other_aspect = abs(math.log((W / H) / (width / height)))
            assert not (other_area < abs(math.log(w * h / 512**2)) and other_aspect < aspect_error)


def test_interactive_keeps_the_whole_image():
    prep = preset("interactive", Preprocess())
    assert prep.crop is None and prep.resize == "area"
    out = prep(Image.new("RGB", (300, 100)))
    assert out.shape == (288, 896, 3)
    with pytest.raises(ConfigError, match="whole image"):
        Preprocess(resize="area", crop=224)


def test_exact_decoding_matches_timm_transforms(tmp_path):
    """With jpeg_draft=False the backbone preprocessing equals timm's eval transform of the same model
    (shorter side to 256 bicubic, centre crop 224, mean = std = 0.5) to float rounding."""
    import dataclasses

    import skimage.data
    import timm
    import torch
    from PIL import Image

    from deepfeat.backbones import load_backbone
    from deepfeat.data.images import load_image

    bb = load_backbone("efficientnet_lite0")
    exact = dataclasses.replace(bb.preprocess, jpeg_draft=False)
    config = timm.data.resolve_data_config({}, model=bb.module)
    reference = timm.data.create_transform(**config)
    for i, array in enumerate([skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut()]):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(array).resize((array.shape[1] * 2, array.shape[0] * 2)).save(path, quality=92)
        ours = exact.to_batch([exact(load_image(path))], channels_last=False)[0]
        with Image.open(path) as img:
            theirs = reference(img.convert("RGB"))
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        drafted = bb.preprocess.to_batch([bb.preprocess(load_image(path, draft=bb.preprocess.draft_size))])[0]
        assert (drafted - theirs).abs().max() > 1e-3  # the default (draft decoding) differs slightly


def test_warp_preset_keeps_the_whole_image():
    from PIL import Image

    from deepfeat.data.transforms import Preprocess, preset

    warp = preset("warp", Preprocess(size=256, crop=224))
    assert (warp.resize, warp.size, warp.crop) == ("warp", 224, None)
    assert warp(Image.new("RGB", (640, 200))).shape == (224, 224, 3)


def test_a_very_elongated_image_resamples_only_its_crop(monkeypatch):
    # 8,000 x 1 pixels resized to a 256 shorter side is 2,048,000 x 256: 1.5 GB of RGB formed only to
    # keep its centre 224 x 224 (a 24 KB file took extraction to 3 GB)
    from deepfeat.data import transforms

    rng = np.random.default_rng(0)
    prep = Preprocess()
    sizes = []
    real = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        sizes.append(size[0] * size[1])
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    wide = Image.fromarray(rng.integers(0, 256, (1, 8000, 3), dtype=np.uint8))
    assert prep(wide).shape == (224, 224, 3) and max(sizes) == 224 * 224
    # the same pixels as resize-then-crop (checked at a size where that is cheap: 1,000 x 2)
    small = Image.fromarray(rng.integers(0, 256, (2, 1000, 3), dtype=np.uint8))
    monkeypatch.setattr(transforms, "CROP_FIRST_PIXELS", 1 << 20)
    cropped = prep(small)
    monkeypatch.setattr(transforms, "CROP_FIRST_PIXELS", 1 << 62)
    np.testing.assert_array_equal(cropped, prep(small))
    assert max(sizes) == 128_000 * 256


@pytest.mark.parametrize("size", [(30000, 1), (1, 40000), (8000, 1)])
def test_interactive_keeps_the_area_of_extremely_elongated_images(size):
    # the short side held at 32 with the aspect kept made a 32 x 88,672 input from 30,000 x 1 (11x the
    # area; peak memory 1.5 -> 2.5 GB for one 90 KB file)
    from deepfeat.data.transforms import area_size

    w, h = area_size(*size, 512**2, 32)
    assert w % 32 == 0 and h % 32 == 0 and min(w, h) == 32
    assert 0.9 * 512**2 <= w * h <= 1.1 * 512**2
