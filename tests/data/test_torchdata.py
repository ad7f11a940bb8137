"""PyTorch map-style datasets of (image, label) as inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import folder_dataset
from deepfeat.data.source import as_dataset
from deepfeat.data.torchdata import to_pil, torch_dataset
from deepfeat.errors import ConfigError, ImageError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.pipeline import extract
from tests.conftest import SMALL, photo


class Tensors(Dataset):
    """(C, H, W) float tensors in [0, 1] and int labels; no targets attribute; item 2 raises, item 4 is
    normalised."""

    def __init__(self, n=6, broken=2, normalised=4):
        self.n, self.broken, self.normalised = n, broken, normalised

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.broken:
            raise OSError("disk error")
        x = torch.from_numpy(photo(i)).permute(2, 0, 1).float() / 255
        if i == self.normalised:
            x = (x - 0.5) / 0.25
        return x, torch.tensor(i % 3)


def test_image_folder_gives_the_same_features_as_the_folder(image_tree):
    from torchvision.datasets import ImageFolder

    wrapped = as_dataset(ImageFolder(str(image_tree)))
    plain = folder_dataset(image_tree)
    assert wrapped.classes == plain.classes and wrapped.targets.tolist() == plain.targets.tolist()
    bb = load_backbone("efficientnet_lite0", weights="random")
    method = [LayerActivations(["stage3"])]
    a = extract(wrapped, bb, method, preprocess=SMALL, progress=False, workers=0)["stage3"]
    b = extract(plain, bb, method, preprocess=SMALL, progress=False, workers=0)["stage3"]
    np.testing.assert_array_equal(a.features, b.features)
    again = torch_dataset(ImageFolder(str(image_tree)))
    assert again.fingerprint() == wrapped.fingerprint()
    (image_tree / "ants" / "img0.jpg").write_bytes((image_tree / "ants" / "img2.jpg").read_bytes())
    assert torch_dataset(ImageFolder(str(image_tree))).fingerprint() != wrapped.fingerprint()


def test_tensors_labels_by_a_pass_and_bad_items_reported():
    ds = torch_dataset(Tensors(), name="tensors", progress=False)
    assert ds.ids == [
        "tensors/000000",
        "tensors/000001",
        "tensors/000003",
        "tensors/000004",
        "tensors/000005",
    ]
    assert ds.classes == ["0", "1", "2"] and ds.targets.tolist() == [0, 1, 0, 1, 2]
    assert ds.ignored == [("tensors[2]", "cannot read the item (OSError: disk error)")]
    assert np.array_equal(np.asarray(ds.load(1)), photo(1))
    with pytest.raises(ImageError, match=r"tensors\[4\].*not \[0, 1\].*without its normalising transform"):
        ds.load(3)
    bb = load_backbone("efficientnet_lite0", weights="random")
    res = extract(ds, bb, [LayerActivations(["pool"])], preprocess=SMALL, progress=False, workers=0)
    assert [p for p, _ in res.failures] == ["tensors[4]"] and len(res["pool"]) == 4
    assert ds.fingerprint() == torch_dataset(Tensors(), name="tensors", progress=False).fingerprint()


def test_conversions_and_refusals():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.asarray(to_pil(gray, "x")).shape == (3, 4, 3)
    chw = torch.zeros(1, 5, 7)
    assert to_pil(chw, "x").size == (7, 5)
    with pytest.raises(ImageError, match="not an image"):
        to_pil("a string", "x")
    with pytest.raises(ConfigError, match="is a list"):
        as_dataset(["a.jpg", "b.jpg"])
    with pytest.raises(ConfigError, match="map-style"):
        torch_dataset(iter([1, 2]))
