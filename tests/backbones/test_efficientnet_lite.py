"""The bundled EfficientNet-Lite0 weights are mapped right: ImageNet predictions on real photos."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import skimage.data
import timm
import torch
from PIL import Image

from deepfeat.backbones import load_backbone
from deepfeat.backbones.backbone import read_state_dict
from deepfeat.backbones.efficientnet_lite import bundled_weights_path, convert_state_dict, timm_key

CAT_CLASSES = [281, 282, 283, 284, 285]  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = [967, 968, 504]  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("efficientnet_lite0")


def _probs(module, preprocess, image: np.ndarray) -> torch.Tensor:
    x = preprocess.to_batch([preprocess(Image.fromarray(image))], channels_last=False)
    with torch.no_grad():
        return module(x).softmax(-1)[0]


def test_every_tensor_maps_by_name_and_shape():
    source = read_state_dict(bundled_weights_path())
    converted = convert_state_dict(source)
    target = timm.create_model("tf_efficientnet_lite0").state_dict()
    assert set(converted) == set(target)
    assert all(converted[k].shape == target[k].shape for k in target)
    learned = [k for k in source if not k.endswith("num_batches_tracked")]
    assert len(learned) == 247
    # the name mapping agrees with the order-based one (same order in both state dicts)
    target_learned = [k for k in target if not k.endswith("num_batches_tracked")]
    assert [timm_key(k) for k in learned] == target_learned


def test_cat_and_coffee_photos(backbone):
    cat = _probs(backbone.module, backbone.preprocess, skimage.data.chelsea())
    coffee = _probs(backbone.module, backbone.preprocess, skimage.data.coffee())
    assert int(cat.argmax()) in CAT_CLASSES, backbone.class_names[int(cat.argmax())]
    assert int(coffee.argmax()) in COFFEE_CLASSES, backbone.class_names[int(coffee.argmax())]
    assert backbone.class_names[967].startswith("espresso")
    assert cat[CAT_CLASSES].sum() > 0.8 and coffee[COFFEE_CLASSES].sum() > 0.8


def test_chosen_variant_and_normalisation_beat_the_alternatives(backbone):
    """TF 'same' padding with mean/std 0.5 puts more probability on the right classes than symmetric
    padding (timm's efficientnet_lite0) or ImageNet mean/std, on both photos."""
    state = backbone.module.state_dict()
    imagenet_norm = replace(backbone.preprocess, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    symmetric = timm.create_model("efficientnet_lite0").eval()
    symmetric.load_state_dict(state)
    configs = {
        "chosen": (backbone.module, backbone.preprocess),
        "imagenet-norm": (backbone.module, imagenet_norm),
        "symmetric-pad": (symmetric, backbone.preprocess),
    }
    mass = {
        name: (
            float(_probs(m, p, skimage.data.chelsea())[CAT_CLASSES].sum()),
            float(_probs(m, p, skimage.data.coffee())[COFFEE_CLASSES].sum()),
        )
        for name, (m, p) in configs.items()
    }
    for other in ("imagenet-norm", "symmetric-pad"):
        assert mass["chosen"][0] > mass[other][0] and mass["chosen"][1] > mass[other][1], mass


def test_weights_id_is_file_sha256(backbone):
    import hashlib

    digest = hashlib.sha256(bundled_weights_path().read_bytes()).hexdigest()
    assert backbone.weights_id == f"sha256:{digest}"
    assert load_backbone("efficientnet_lite0", weights="random").weights_id == "random:seed=0"


def test_catalog_matches_real_shapes(backbone):
    from deepfeat.features.capture import LayerCapture

    x = torch.zeros(1, 3, 224, 224)
    with torch.inference_mode(), LayerCapture(backbone, list(backbone.catalog)) as cap:
        out = cap.run(x)
    for layer in backbone.catalog:
        t = out[layer.name]
        assert t.shape[1] == layer.channels, layer.name
        if layer.spatial:
            assert t.shape[2] == 224 // layer.stride, layer.name
        else:
            assert t.dim() == 2
