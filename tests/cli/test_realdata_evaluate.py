"""The whole path on real photos from ../shared/datasets (skipped when absent)."""

from __future__ import annotations

import json

import pytest

from deepfeat.cli.evaluate import JobOptions, run_job
from tests.conftest import SHARED_DATASETS

pytestmark = pytest.mark.realdata


@pytest.mark.skipif(not (SHARED_DATASETS / "hymenoptera").is_dir(), reason="../shared/datasets absent")
def test_hymenoptera_fixed_split(tmp_path):
    paths = run_job(
        JobOptions(
            data=str(SHARED_DATASETS / "hymenoptera"),
            layers="stage6,pool",
            probes="svm,logreg",
            protocol="fixed",
            out=tmp_path,
        ),
        echo=lambda *a: None,
    )
    data = json.loads(paths["results"].read_text())
    rows = {(r["features"], r["probe"]): r for r in data["summary"]}
    # ImageNet features separate ants from bees well (the tutorial's fine-tuned model reaches ~95%)
    assert rows[("pool", "logreg")]["mean_class_accuracy"]["mean"] > 0.85
    assert rows[("pool", "svm")]["mean_class_accuracy"]["mean"] > 0.85
    assert data["records"][0]["n_test"] == 153


@pytest.mark.skipif(not (SHARED_DATASETS / "pacs").is_dir(), reason="../shared/datasets absent")
def test_pacs_photo_to_art_painting_s_t_st(tmp_path):
    paths = run_job(
        JobOptions(
            data=str(SHARED_DATASETS / "pacs" / "photo"),
            target=str(SHARED_DATASETS / "pacs" / "art_painting"),
            layers="pool",
            probes="svm",
            protocol="da",
            splits=2,
            out=tmp_path,
        ),
        echo=lambda *a: None,
    )
    data = json.loads(paths["results"].read_text())
    modes = {r["mode"]: r["mean_class_accuracy"]["mean"] for r in data["summary"]}
    assert set(modes) == {"S", "T", "ST"}
    assert all(v > 1 / 7 + 0.15 for v in modes.values()), modes  # well above chance (7 classes)
    assert modes["ST"] >= modes["T"] - 0.02, modes  # source data helps, or at least does not hurt
