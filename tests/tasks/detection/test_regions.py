"""Region warping and region features (warped crops and the shared-map extension)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from deepfeat.errors import ConfigError
from deepfeat.features.capture import LayerCapture
from deepfeat.tasks.detection.boxes import context_boxes
from deepfeat.tasks.detection.regions import (
    RegionEncoder,
    RegionOptions,
    normalised,
    output_key,
    parse_output,
    region_pool,
    warp_regions,
)
from tests.conftest import photo


def _bilinear(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """Independent bilinear sample of an (H, W, C) array at index coordinates (x, y)."""
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    return (
        img[y0, x0] * (1 - fx) * (1 - fy)
        + img[y0, x0 + 1] * fx * (1 - fy)
        + img[y0 + 1, x0] * (1 - fx) * fy
        + img[y0 + 1, x0 + 1] * fx * fy
    )


def test_warp_is_a_crop_when_no_scaling_is_needed():
    image = np.random.default_rng(0).normal(size=(3, 40, 50)).astype(np.float32)
    out = warp_regions(torch.from_numpy(image), [[10, 5, 26, 21]], size=16, padding=0)
    np.testing.assert_allclose(out[0].numpy(), image[:, 5:21, 10:26], atol=1e-6)


def test_warp_with_context_matches_an_independent_bilinear_warp():
    rng = np.random.default_rng(1)
    hwc = rng.normal(size=(60, 80, 3)).astype(np.float32)
    box = np.array([[12.0, 9.0, 47.0, 50.0]])
    size, p = 24, 4
    out = warp_regions(torch.from_numpy(hwc).permute(2, 0, 1), box, size, p)[0].permute(1, 2, 0).numpy()
    x1, y1, x2, y2 = context_boxes(box, size, p)[0]
    checked = 0
    for i in range(0, size, 3):
        for j in range(0, size, 3):
            x = x1 + (j + 0.5) * (x2 - x1) / size - 0.5  # continuous coordinate -> pixel index
            y = y1 + (i + 0.5) * (y2 - y1) / size - 0.5
            if 0 <= x < 79 and 0 <= y < 59:  # inside the image (the border is clamped, not extrapolated)
                checked += 1
                np.testing.assert_allclose(out[i, j], _bilinear(hwc, x, y), atol=1e-5)
    assert checked >= 16


def test_outside_the_image_is_the_mean():
    image = torch.ones(3, 30, 30)
    out = warp_regions(image, [[-40, 0, 10, 30]], size=20, padding=0)[0]
    assert torch.all(out[:, :, :10] == 0)  # far outside: zero = the mean after normalisation
    assert torch.allclose(out[:, :, 18:], torch.ones(3, 20, 2))


def test_names_and_poolings():
    assert parse_output("stage7/grid3") == ("stage7", "grid3")
    assert parse_output("pool") == ("pool", "avg")
    with pytest.raises(ConfigError):
        parse_output("/avg")
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    assert region_pool(x, "grid2").shape == (2, 12)
    np.testing.assert_allclose(region_pool(x, "grid1").numpy(), x.mean(dim=(2, 3)).numpy(), rtol=1e-6)


def test_warped_features_equal_the_network_on_the_same_crops(lite0):
    image = photo(5, (90, 70))
    boxes = np.array([[5, 5, 40, 50], [30, 10, 88, 69], [0, 0, 90, 70]], np.float32)
    opts = RegionOptions(size=48, padding=6)
    enc = RegionEncoder(lite0, [("stage4", "avg"), ("pool", "avg"), ("stage6", "grid2")], opts, batch_size=2)
    assert enc.keys == ["stage4/avg", "pool", "stage6/grid2"]
    got = enc.encode(image, boxes)
    crops = warp_regions(normalised(image, lite0.preprocess), boxes, 48, 6)
    layers = lite0.catalog.resolve(["stage4", "stage6", "pool"])
    with torch.inference_mode(), LayerCapture(lite0, layers) as cap:
        ref = cap.run(crops)
    np.testing.assert_allclose(got["stage4/avg"], ref["stage4"].mean(dim=(2, 3)).numpy(), atol=1e-4)
    np.testing.assert_allclose(got["pool"], ref["pool"].numpy(), atol=1e-4)
    assert got["stage6/grid2"].shape == (3, 192 * 4)


def test_shared_map_features_pool_one_forward_pass(lite0):
    image = photo(6, (96, 64))
    boxes = np.array([[0, 0, 40, 40], [20, 10, 96, 64]], np.float32)
    x = normalised(image, lite0.preprocess)  # shorter side 64 already: scale 1
    with torch.inference_mode(), LayerCapture(lite0, lite0.catalog.resolve(["stage6"])) as cap:
        fmap = cap.run(x)["stage6"]
    for sampling in (0, 2):  # adaptive (the default) and fixed samples per cell
        opts = RegionOptions(
            mode="shared", size=64, padding=0, shared_size=64, shared_max=200, sampling=sampling
        )
        enc = RegionEncoder(lite0, [("stage6", "unroll")], opts)
        assert enc.grids["stage6"] == (2, 2)  # the stride-32 map of a 64-pixel input
        got = enc.encode(image, boxes)["stage6/unroll"]
        ref = roi_align(
            fmap.float(),
            [torch.from_numpy(boxes)],
            (2, 2),
            spatial_scale=1 / 32,
            sampling_ratio=sampling,
            aligned=True,
        )
        np.testing.assert_allclose(got, ref.flatten(1).numpy(), atol=1e-5)
    with pytest.raises(ConfigError, match="no spatial map"):
        RegionEncoder(lite0, [("pool", "avg")], opts)


def test_output_key(lite0):
    assert output_key(lite0.catalog.get("pool"), "avg") == "pool"
    assert output_key(lite0.catalog.get("head"), "max") == "head/max"
    with pytest.raises(ConfigError):
        output_key(lite0.catalog.get("pool"), "grid2")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["warp", "shared"])
def test_cuda_region_features_equal_the_cpu_ones(mode):
    from deepfeat.backbones import load_backbone

    image = photo(7, (90, 70))
    boxes = np.array([[5, 5, 40, 50], [30, 10, 88, 69]], np.float32)
    opts = RegionOptions(mode=mode, size=64, padding=4, shared_size=70, shared_max=200)
    cpu = RegionEncoder(load_backbone("efficientnet_lite0"), [("stage6", "avg")], opts).encode(image, boxes)
    gpu = RegionEncoder(load_backbone("efficientnet_lite0"), [("stage6", "avg")], opts, device="cuda")
    np.testing.assert_allclose(gpu.encode(image, boxes)["stage6/avg"], cpu["stage6/avg"], atol=1e-3)
