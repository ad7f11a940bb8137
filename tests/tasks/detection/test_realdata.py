"""R-CNN on a small subset of the real voc07_5class photos (skipped when ../shared is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from deepfeat.data.detection import open_detection
from deepfeat.tasks import detection as det
from tests.conftest import SHARED_DATASETS

VOC = Path(os.environ.get("DEEPFEAT_DATASETS", SHARED_DATASETS)) / "voc07_5class"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not VOC.is_dir(), reason="../shared/datasets absent"),
]


def test_train_and_evaluate_on_a_voc5_subset(tmp_path):
    train = open_detection(VOC, split="trainval").subset(range(16))
    test = open_detection(VOC, split="test").subset(range(12))
    options = det.DetectionOptions(
        region=det.RegionOptions(mode="shared", shared_size=320, shared_max=600),
        proposals=det.ProposalOptions(width=250, max_proposals=100),
        features="stage7/grid3",  # head/avg pooled from the shared map is near chance (see README)
        bbox_features="stage7/grid3",
        workers=2,
    )
    trained = det.train(train, options, tmp_path / "model", progress=False)
    assert trained.recall["all"]["recall"] > 0.5 and trained.counts["regions_per_image"] > 50
    result = det.evaluate(tmp_path / "model", test, progress=False)
    assert result.map("plain") is not None and result.map("bbox") is not None
    # the SVM ranking beats chance: the same detections with their scores shuffled over the test set
    found = result.detections("plain")
    keys = list(found)
    cuts = np.cumsum([len(found[k].scores) for k in keys])[:-1]
    scores = np.concatenate([found[k].scores for k in keys])
    rng = np.random.default_rng(0)
    chance = []
    for _ in range(20):
        parts = np.split(rng.permutation(scores), cuts)
        shuffled = {k: det.Detections(found[k].boxes, p, found[k].labels) for k, p in zip(keys, parts)}
        aps = [a.ap11 for a in det.voc_ap(test, shuffled).values() if a.ap11 is not None]
        chance.append(np.mean(aps))
    assert result.map("plain") > np.max(chance), (result.map("plain"), chance)
    assert result.variants["plain"]["coco"]["AP50"] is not None
    paths = det.write_report(result, tmp_path / "eval", n_examples=2)
    assert paths["report"].is_file() and (tmp_path / "eval" / "pr_curves.png").is_file()
