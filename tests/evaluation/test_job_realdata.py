"""The whole evaluation job on real photos from ../shared/datasets (skipped when absent)."""

from __future__ import annotations

import pytest

from deepfeat.evaluation import ActivationsRecipe, DomainAdaptation, EvaluationJob, FixedSplit, run
from tests.conftest import SHARED_DATASETS

pytestmark = pytest.mark.realdata


@pytest.mark.skipif(not (SHARED_DATASETS / "hymenoptera").is_dir(), reason="../shared/datasets absent")
def test_hymenoptera_fixed_split(tmp_path):
    result = run(
        EvaluationJob(
            SHARED_DATASETS / "hymenoptera",
            recipe=ActivationsRecipe(["stage6", "pool"]),
            protocol=FixedSplit(),
            probes=["svm", "logreg"],
            out=tmp_path,
        ),
        progress=False,
    )
    rows = {(r["features"], r["probe"]): r for r in result.summary()}
    # ImageNet features separate ants from bees well (the tutorial's fine-tuned model reaches ~95%)
    assert rows[("pool", "logreg")]["mean_class_accuracy"]["mean"] > 0.85
    assert rows[("pool", "svm")]["mean_class_accuracy"]["mean"] > 0.85
    assert result.records[0]["n_test"] == 153


@pytest.mark.skipif(not (SHARED_DATASETS / "pacs").is_dir(), reason="../shared/datasets absent")
def test_pacs_photo_to_art_painting_s_t_st(tmp_path):
    result = run(
        EvaluationJob(
            SHARED_DATASETS / "pacs" / "photo",
            target=SHARED_DATASETS / "pacs" / "art_painting",
            recipe=ActivationsRecipe(["pool"]),
            protocol=DomainAdaptation(n_splits=2),
            probes=["svm"],
            out=tmp_path,
        ),
        progress=False,
    )
    modes = {r["mode"]: r["mean_class_accuracy"]["mean"] for r in result.summary()}
    assert set(modes) == {"S", "T", "ST"}
    assert all(v > 1 / 7 + 0.15 for v in modes.values()), modes  # well above chance (7 classes)
    assert modes["ST"] >= modes["T"] - 0.02, modes  # source data helps, or at least does not hurt
