"""Fine-tuning checkpoints as backbones: the current layout and the layout before deepfeat.checkpoint."""

from __future__ import annotations

import torch

from deepfeat.backbones import load_backbone
from deepfeat.backbones.finetuned import MARKER, is_finetune_checkpoint, read_finetuned, replace_classifier
from deepfeat.checkpoint import save_checkpoint


def test_both_layouts_load_as_backbones(tmp_path):
    torch.manual_seed(0)
    bb = replace_classifier(load_backbone("efficientnet_lite0", weights="random"), 3, ["a", "b", "c"])
    meta = {"backbone": "efficientnet_lite0", "n_classes": 3, "classes": ["a", "b", "c"], "scope": "fc"}
    state = bb.module.state_dict()
    save_checkpoint(tmp_path / "new.pt", {"model": state}, kind="finetune", meta={MARKER: meta})
    torch.save({MARKER: meta, "state_dict": state, "config": {"epochs": 1}}, tmp_path / "old.pt")
    for name in ("new.pt", "old.pt"):
        path = tmp_path / name
        assert is_finetune_checkpoint(path)
        assert read_finetuned(path)[0] == meta
        loaded = load_backbone("efficientnet_lite0", weights=path)
        assert loaded.class_names == ["a", "b", "c"] and loaded.catalog.get("logits").channels == 3
        torch.testing.assert_close(
            loaded.module.state_dict()["classifier.weight"], state["classifier.weight"]
        )
    torch.save(state, tmp_path / "plain.pt")
    assert not is_finetune_checkpoint(tmp_path / "plain.pt")
