"""FeatureExtractor's inputs (deepfeat.features.transformer): datasets, paths, uint8 image arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deepfeat.backbones import load_backbone
from deepfeat.errors import DataError
from deepfeat.features.transformer import FeatureExtractor
from tests.conftest import SMALL, photo


@pytest.fixture(scope="module")
def fitted():
    return FeatureExtractor(load_backbone("efficientnet_lite0"), layers=["pool"], preprocess=SMALL).fit()


def test_a_uint8_image_array_gives_the_features_of_the_same_images_as_files(fitted, tmp_path):
    images = np.stack([photo(i, (40, 36)) for i in range(3)])
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")  # lossless: the same pixels
        Image.fromarray(image).save(paths[-1])
    from_files = fitted.transform([str(p) for p in paths])
    np.testing.assert_array_equal(fitted.transform(images), from_files)
    np.testing.assert_array_equal(fitted.transform(torch.from_numpy(images)), from_files)
    # paths in an array or a pandas column, as in cross-validation over a DataFrame
    np.testing.assert_array_equal(fitted.transform(np.array([str(p) for p in paths])), from_files)
    np.testing.assert_array_equal(fitted.transform(np.array(paths, dtype=object)), from_files)
    pd = pytest.importorskip("pandas")
    np.testing.assert_array_equal(fitted.transform(pd.Series([str(p) for p in paths])), from_files)
    frame = pd.DataFrame({"path": [str(p) for p in paths]})
    np.testing.assert_array_equal(fitted.transform(frame[["path"]]), from_files)  # ColumnTransformer's
    with pytest.raises(DataError, match="image paths go in one column"):
        fitted.transform(np.array([[str(paths[0]), str(paths[1])]]))
    gray = images[..., 0]
    np.testing.assert_array_equal(fitted.transform(gray[..., None]), fitted.transform(gray))


def test_inputs_that_are_not_images_are_refused_with_what_would_do(fitted, tmp_path):
    images = np.stack([photo(i, (40, 36)) for i in range(2)])
    with pytest.raises(DataError, match=r"must be uint8 .* got float64 \(2, 36, 40, 3\).*astype\(np.uint8\)"):
        fitted.transform(images / 255.0)
    with pytest.raises(DataError, match=r"got uint8 \(2, 36, 40, 2\)"):
        fitted.transform(images[..., :2])
    # a single path used to be read character by character ("paths[4] (/) is the same file as ...")
    with pytest.raises(DataError, match=r"got the single path .*wrap one image in a list.*open_dataset"):
        fitted.transform(str(tmp_path))
    with pytest.raises(DataError, match=r"X\[1\] is int 3, not an image path"):
        fitted.transform([str(tmp_path / "a.png"), 3])


def test_one_colour_image_and_a_list_of_arrays_are_refused_with_what_would_do(fitted):
    """(An (H, W, 3) image was read as H grey images W x 3 pixels: 300 rows for one cat photo.)"""
    image = photo(0, (40, 36))
    with pytest.raises(
        DataError, match=r"shape \(36, 40, 3\): one colour image, not a batch; pass X\[None\]"
    ):
        fitted.transform(image)
    assert fitted.transform(image[None]).shape == (1, 1280)
    with pytest.raises(DataError, match=r"X\[0\] is an array of shape \(36, 40, 3\), not an image path"):
        fitted.transform([image, image])


def test_set_params_after_fit_takes_effect():
    fe = FeatureExtractor(load_backbone("efficientnet_lite0"), layers=["pool"], preprocess=SMALL).fit()
    images = np.stack([photo(i, (40, 36)) for i in range(2)])
    assert fe.transform(images).shape == (2, 1280)
    fe.set_params(layers=["stage6"])  # (transform kept the fitted pool layer)
    assert fe.transform(images).shape == (2, 192)
    assert len(fe.get_feature_names_out()) == 192
