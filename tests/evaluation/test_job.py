"""The evaluation job through the library API: typed options, recipes, in-memory results."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin

from deepfeat.errors import ConfigError, DataError
from deepfeat.evaluation import (
    ActivationsRecipe,
    DomainAdaptation,
    EvaluationJob,
    ExtractionOptions,
    FisherRecipe,
    GradientRecipe,
    KShot,
    evaluate,
    run,
)
from deepfeat.evaluation.encoders import encode_split
from deepfeat.features.featureset import FeatureKind, FeatureSet
from deepfeat.probes import LinearProbe
from tests.conftest import SMALL, photo, truncated_jpeg

FAST = {"svm": LinearProbe(loss="squared_hinge", Cs=(0.1, 1.0))}


def test_a_complete_evaluation_in_a_few_lines(image_tree, tmp_path):
    job = EvaluationJob(
        image_tree,
        recipe=ActivationsRecipe(["stage6", "pool"], concat=True),
        protocol=KShot(k=2, n_splits=2),
        probes=FAST,
        preprocess=SMALL,
        out=tmp_path / "out",
    )
    result = run(job, progress=False)
    assert {r["features"] for r in result.summary()} == {"stage6/avg", "pool", "concat/avg"}
    assert len(result.records) == 3 * 2
    assert result.provenance["backbone"] == "efficientnet_lite0" and result.provenance["n_items"] == 12
    assert result.provenance["recipe"]["name"] == "activations"
    assert result.extraction["source"]["failures"] == []
    assert all(r["C"] in (0.1, 1.0) for r in result.records)
    assert (tmp_path / "out" / "store").is_dir() and (tmp_path / "out" / "checkpoint.jsonl").is_file()
    again = run(job, progress=False)  # resumes: the same records, nothing refitted
    assert [r["metrics"] for r in again.records] == [r["metrics"] for r in result.records]


def test_validation_happens_before_any_work(image_tree, tmp_path):
    with pytest.raises(ConfigError, match=r"batch_size .* at least 1"):
        EvaluationJob(image_tree, extraction=ExtractionOptions(batch_size=0)).validate()
    with pytest.raises(ConfigError, match="unknown on_bad_image 'bogus'; valid: skip, fail"):
        EvaluationJob(image_tree, extraction=ExtractionOptions(on_bad_image="bogus")).validate()
    with pytest.raises(ConfigError, match="unknown probe 'forest'"):
        EvaluationJob(image_tree, probes=["forest"]).validate()
    for option in ("backbone", "preprocess", "store", "weights", "out", "probes"):  # raw errors in the run
        with pytest.raises(ConfigError, match=f"{option} must be .*, got int 42"):
            EvaluationJob(image_tree, **{option: 42}).validate()
    with pytest.raises(ConfigError, match=r"\(--protocol da\) needs target-domain data"):
        EvaluationJob(image_tree, protocol=DomainAdaptation()).validate()
    with pytest.raises(ConfigError, match=r"goes with the domain-adaptation protocol .* only"):
        EvaluationJob(image_tree, target=image_tree, protocol=KShot(2)).validate()
    with pytest.raises(ConfigError, match=r"weights file 'nope\.pth' not found \(weights= / --weights\)"):
        EvaluationJob(image_tree, weights="nope.pth").validate()
    with pytest.raises(DataError, match=r"target data \(target= / --target\): .*nosuch"):
        run(
            EvaluationJob(image_tree, target=tmp_path / "nosuch", protocol=DomainAdaptation()), progress=False
        )
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"out .*file: exists and is not a folder"):
        run(EvaluationJob(image_tree, out=tmp_path / "file"), progress=False)
    with pytest.raises(ConfigError, match="list of names"):
        ActivationsRecipe("stage6,pool")
    # the protocol's label checks (4 images a class cannot give 30 training images) come before the
    # extraction, not after it
    with pytest.raises(DataError, match="30-shot protocol"):
        run(EvaluationJob(image_tree, protocol=KShot(k=30), out=tmp_path / "k"), progress=False)
    assert not (tmp_path / "k" / "store").exists()
    # Fisher vectors of a layer without positions: refused before the network ran (it ran first)
    fisher = EvaluationJob(image_tree, FisherRecipe(["pool"]), protocol=KShot(k=2), out=tmp_path / "f")
    with pytest.raises(ConfigError, match="layer 'pool' has no spatial map"):
        run(fisher, progress=False)
    assert not (tmp_path / "f" / "store").exists()


def test_a_class_whose_every_image_is_bad_is_refused_or_reported(image_tree, tmp_path):
    for i, name in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        (image_tree / "moths").mkdir(exist_ok=True)
        (image_tree / "moths" / name).write_bytes(truncated_jpeg(i) if i else b"")
    job = EvaluationJob(
        image_tree, protocol=KShot(k=2, n_splits=1), probes=FAST, preprocess=SMALL, out=tmp_path / "o"
    )
    with pytest.raises(DataError, match=r"1 class without a usable image \('moths'\)"):
        run(job, progress=False)
    job.allow_missing_classes = True
    result = run(job, progress=False)
    assert result.extraction["source"]["excluded_classes"] == ["moths"]
    assert len(result.extraction["source"]["failures"]) == 3
    assert result.records[0]["per_class"][result.classes.index("moths")] is None


def test_features_read_from_the_store_bring_the_files_their_extraction_skipped(image_tree, tmp_path):
    """With extract=False (--no-extract) the record lists the files skipped when the store was filled,
    as a run that extracts does (it listed none, while the splits left them out)."""
    for i, name in enumerate(["bad0.jpg", "bad1.jpg"]):
        (image_tree / "ants" / name).write_bytes(truncated_jpeg(i + 1) if i else b"")
    store = tmp_path / "store"
    first = EvaluationJob(
        image_tree, protocol=KShot(k=2, n_splits=1), probes=FAST, preprocess=SMALL, store=store
    )
    extracted = run(first, progress=False).extraction["source"]["failures"]
    again = EvaluationJob(
        image_tree, protocol=KShot(k=2, n_splits=1), probes=FAST, preprocess=SMALL, store=store
    )
    again.extraction.extract = False
    lines = []
    stored = run(again, progress=False, echo=lines.append).extraction["source"]["failures"]
    assert len(extracted) == 2 and stored == extracted
    assert any("skipped 2 files" in line for line in lines)
    from deepfeat.evaluation.report import build_report

    text = build_report(run(again, progress=False), "t").to_markdown()
    assert "skipped files" in text and "bad0.jpg: empty file (0 bytes)" in text


def test_gradient_recipe_builds_the_table_rows(image_tree):
    recipe = GradientRecipe(["logits"])
    result = run(
        EvaluationJob(image_tree, recipe=recipe, protocol=KShot(k=2, n_splits=1), preprocess=SMALL),
        progress=False,
    )
    pairs = {(r["features"], r["probe"]) for r in result.summary()}
    assert pairs == {
        ("logits/grad", "ksvm"),
        ("logits/x_in", "ksvm"),
        ("logits/x_out", "ksvm"),
        ("logits/x_in;x_out", "ksvm"),
    }
    assert result.features["logits/grad"]["kind"] == "factored"
    assert result.probes["ksvm"]["normalize"] == "gradient"


def test_normalize_with_the_kernel_probe_alone_is_refused_not_ignored(image_tree):
    # the kernel probe normalises through kernel_normalize; 'normalize' would have had no effect
    job = EvaluationJob(
        image_tree, recipe=GradientRecipe(["logits"]), probes=["ksvm"], probe_params={"normalize": True}
    )
    with pytest.raises(ConfigError, match="kernel_normalize"):
        job.make_probes()
    # beside a linear probe it applies to that probe
    job = EvaluationJob(
        image_tree,
        recipe=GradientRecipe(["logits"]),
        probes=["ksvm", "svm"],
        probe_params={"normalize": True},
    )
    assert job.make_probes()["svm"].normalize is True


def test_kernel_normalize_reaches_the_kernel_probe_of_any_method_and_needs_one(image_tree):
    job = EvaluationJob(
        image_tree,
        recipe=ActivationsRecipe(["pool"]),
        probes=["ksvm", "svm"],
        probe_params={"kernel_normalize": "none"},
    )
    probes = job.make_probes()
    assert probes["ksvm"].normalize == "none"  # it was always 'gradient' for activations
    job = EvaluationJob(
        image_tree,
        recipe=ActivationsRecipe(["pool"]),
        probes=["svm"],
        probe_params={"kernel_normalize": "none"},
    )
    with pytest.raises(ConfigError, match="ksvm"):
        job.make_probes()


class RowSpy(TransformerMixin, BaseEstimator):
    """An encoder that remembers which rows it was fitted on (their first feature is the row id)."""

    fitted_on: ClassVar[list] = []

    def __init__(self, layer_shape=None):
        self.layer_shape = layer_shape

    def fit(self, X, y=None):
        RowSpy.fitted_on.append(sorted(int(v) for v in np.asarray(X)[:, 0]))
        return self

    def transform(self, X):
        return np.asarray(X).reshape(len(X), -1)[:, 1:] * 1.0


def test_per_split_encoders_see_only_training_rows():
    n = 40
    y = np.repeat(np.arange(2), n // 2)
    rng = np.random.default_rng(0)
    X = np.hstack([np.arange(n)[:, None], y[:, None] * 3 + rng.normal(size=(n, 3))]).astype(np.float32)
    fs = FeatureSet(
        "m", X, [str(i) for i in range(n)], y, ["a", "b"], np.arange(n), {}, layer_shape=(4, 1, 1)
    )
    fs.kind = FeatureKind.MAPS
    RowSpy.fitted_on = []
    res = evaluate({"m": fs}, KShot(k=5, n_splits=2), FAST, encoders={"m": RowSpy()}, progress=False)
    assert len(RowSpy.fitted_on) == 2
    for rows, split in zip(RowSpy.fitted_on, res.splits):
        assert rows == sorted(split.train["data"].tolist())
    assert res.features["m"]["encoder"]["class"] == "RowSpy"
    _, _, fitted = encode_split(RowSpy(), fs, X[:4], X[4:])
    assert fitted.layer_shape == (4, 1, 1)  # set from the feature set


def test_fisher_recipe_names_and_scales():
    recipe = FisherRecipe(["stage6"], components=8, pca_dim=16, scales=[224, 320])
    assert recipe.rename("stage6/unroll") == "stage6/fv8"
    from deepfeat.data.transforms import Preprocess

    preps = recipe.preprocesses(Preprocess(size=256, crop=224))
    assert [(p.size, p.crop) for p in preps] == [(256, 224), (366, 320)]
    assert recipe.encoder().get_params()["n_components"] == 8
    with pytest.raises(ConfigError, match=r"scales .* at least 32"):
        FisherRecipe(["stage6"], scales=[16])


def test_parallel_fits_equal_serial_fits(tmp_path):
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 20)
    X = (y[:, None] * 2.0 + rng.normal(size=(60, 6))).astype(np.float32)
    sets = {
        k: FeatureSet(k, X + i, [str(j) for j in range(60)], y, ["a", "b", "c"], np.arange(60), {"k": k})
        for i, k in enumerate(["f1", "f2"])
    }
    serial = evaluate(sets, KShot(k=5, n_splits=2), FAST, progress=False)
    parallel = evaluate(sets, KShot(k=5, n_splits=2), FAST, n_jobs=2, progress=False)
    assert [r["key"] for r in serial.records] == [r["key"] for r in parallel.records]
    for a, b in zip(serial.records, parallel.records):
        assert a["metrics"] == pytest.approx(b["metrics"]) and a["C"] == b["C"]


def test_files_with_odd_names_and_modes_reach_the_report(tmp_path):
    root = tmp_path / "tree"
    for c, name in enumerate(["x", "y"]):
        for i in range(4):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo(10 * c + i)).save(root / name / f"{i}.png")
    from deepfeat.evaluation import write_report

    result = run(
        EvaluationJob(root, protocol=KShot(k=2, n_splits=1), probes=FAST, preprocess=SMALL), progress=False
    )
    paths = write_report(result, tmp_path / "out")
    assert "| features | svm |" in paths["report"].read_text()


def test_scale_options_are_checked_before_any_work_and_reach_the_extraction(
    image_tree, tmp_path, monkeypatch
):
    for bad, match in [
        (ExtractionOptions(cluster="local:0"), "local:N"),
        (ExtractionOptions(cluster="a b"), "cluster"),
        (ExtractionOptions(device="tpu"), "device"),
        (ExtractionOptions(loader="fibres"), "loader"),
    ]:
        with pytest.raises(ConfigError, match=match):
            EvaluationJob(image_tree, extraction=bad).validate()
    pytest.importorskip("distributed")  # a valid cluster spelling needs the extra
    import deepfeat.evaluation.job as job_module

    seen = []
    real = job_module.extract

    def spy(*args, cluster=None, device=None, **kwargs):
        seen.append((cluster, device, kwargs["amp"], kwargs["loader"]))
        return real(*args, device=device, **kwargs)  # here, in this process: the options only are checked

    monkeypatch.setattr(job_module, "extract", spy)
    job = EvaluationJob(
        image_tree,
        protocol=KShot(k=2, n_splits=1),
        probes=FAST,
        preprocess=SMALL,
        out=tmp_path / "o",
        extraction=ExtractionOptions(cluster="tcp://10.0.0.5:8786", device="cpu", loader="threads"),
    )
    result = run(job, progress=False)
    assert seen == [("tcp://10.0.0.5:8786", "cpu", False, "threads")]
    assert result.provenance["cluster"] == "tcp://10.0.0.5:8786"
