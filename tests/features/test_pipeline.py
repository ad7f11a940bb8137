from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone

from deepfeat.backbones import load_backbone
from deepfeat.data.datasets import ArrayDataset, folder_dataset
from deepfeat.errors import ConfigError, DataError, StoreError
from deepfeat.features.activations import LayerActivations
from deepfeat.features.capture import LayerCapture
from deepfeat.features.pipeline import extract
from deepfeat.features.store import FeatureStore
from deepfeat.features.transformer import FeatureExtractor
from tests.conftest import SMALL, photo

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def effnet():
    return load_backbone("efficientnet_lite0")


def array_dataset(n: int = 20, name: str = "arr") -> ArrayDataset:
    images = np.stack([photo(i, (40, 30)) for i in range(n)])
    return ArrayDataset(
        name=name,
        ids=[f"{name}/{i}" for i in range(n)],
        classes=["a", "b"],
        targets=np.arange(n) % 2,
        images=images,
    )


class CountingForward:
    def __init__(self, backbone):
        self.calls = 0
        self.handle = backbone.module.register_forward_pre_hook(self._count)

    def _count(self, *_):
        self.calls += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_features_equal_pooled_module_outputs(effnet, image_tree):
    ds = folder_dataset(image_tree)
    res = extract(
        ds,
        effnet,
        [LayerActivations(["stage5", "head", "logits"], ["avg", "max"])],
        preprocess=SMALL,
        batch_size=5,
        progress=False,
    )
    batch = SMALL.to_batch([SMALL(ds.load(i)) for i in range(len(ds))])
    with (
        torch.inference_mode(),
        LayerCapture(effnet, effnet.catalog.resolve(["stage5", "head", "logits"])) as cap,
    ):
        direct = cap.run(batch)
    for layer in ("stage5", "head"):
        np.testing.assert_allclose(
            res[f"{layer}/avg"].features, direct[layer].mean((2, 3)).numpy(), atol=1e-4
        )
        np.testing.assert_allclose(
            res[f"{layer}/max"].features, direct[layer].amax((2, 3)).numpy(), atol=1e-4
        )
    np.testing.assert_allclose(res["logits"].features, direct["logits"].numpy(), atol=1e-3)
    assert res["logits/avg"] is res["logits"]  # a vector layer under a pooling spelling, as the CLI takes
    with pytest.raises(KeyError, match="available"):
        res["logits/bogus"]  # not a pooling: a typo, not the vector layer's set
    with pytest.raises(KeyError, match="available"):
        res["head"]  # two poolings: ambiguous
    fs = res["head/avg"]
    assert fs.features.dtype == np.float32
    assert fs.ids == ds.ids and fs.targets.tolist() == ds.targets.tolist()


def test_one_pass_per_batch_for_all_layers(effnet):
    ds = array_dataset(10)
    with CountingForward(effnet) as counter:
        extract(
            ds,
            effnet,
            [LayerActivations(["stage2", "stage6", "head", "prob"], ["avg", "bin"])],
            preprocess=SMALL,
            batch_size=4,
            progress=False,
        )
    assert counter.calls == 3  # ceil(10 / 4)


def test_repeated_run_reads_the_store(effnet, tmp_path):
    ds = array_dataset(12)
    method = LayerActivations(["stage6", "pool"], "avg")
    first = extract(ds, effnet, [method], store=tmp_path, preprocess=SMALL, batch_size=5, progress=False)
    assert first.n_forward == 12
    with CountingForward(effnet) as counter:
        second = extract(ds, effnet, [method], store=tmp_path, preprocess=SMALL, progress=False)
    assert counter.calls == 0 and second.n_forward == 0
    assert set(second.origins.values()) == {"store"}
    assert isinstance(second["stage6/avg"].features, np.memmap)
    np.testing.assert_array_equal(second["stage6/avg"].features, first["stage6/avg"].features)
    # a new layer only computes what is missing
    third = extract(
        ds,
        effnet,
        [LayerActivations(["stage6", "pool", "stage4"], "avg")],
        store=tmp_path,
        preprocess=SMALL,
        progress=False,
    )
    assert third.origins == {"stage4/avg": "network", "stage6/avg": "store", "pool": "store"}


def test_other_preprocessing_or_weights_is_another_entry(effnet, tmp_path):
    ds = array_dataset(4)
    method = LayerActivations("head", "avg")
    extract(ds, effnet, [method], store=tmp_path, preprocess=SMALL, progress=False)
    res = extract(ds, effnet, [method], store=tmp_path, preprocess="decaf", progress=False)
    assert res.n_forward == 4
    random = load_backbone("efficientnet_lite0", weights="random")
    res = extract(ds, random, [method], store=tmp_path, preprocess=SMALL, progress=False)
    assert res.n_forward == 4
    assert len(FeatureStore(tmp_path).entries()) == 3


def test_ablations_derived_from_stored_unroll_without_network(effnet, tmp_path):
    ds = array_dataset(9)
    extract(
        ds,
        effnet,
        [LayerActivations(["stage6", "pool"], "unroll")],
        store=tmp_path,
        preprocess=SMALL,
        batch_size=4,
        progress=False,
    )
    ablations = ["avg", "max", "sp-shuffle", "bin", "sp-max-bin"]
    with CountingForward(effnet) as counter:
        derived = extract(
            ds,
            effnet,
            [LayerActivations("stage6", ablations, random_state=5)],
            store=tmp_path,
            preprocess=SMALL,
            progress=False,
        )
        vec = extract(
            ds,
            effnet,
            [LayerActivations("pool", "bin")],
            store=tmp_path,
            preprocess=SMALL,
            progress=False,
        )
    assert counter.calls == 0
    assert set(derived.origins.values()) == {"derived"} and vec.origins["pool/bin"] == "derived"
    direct = extract(
        ds,
        effnet,
        [LayerActivations("stage6", ablations, random_state=5), LayerActivations("pool", "bin")],
        preprocess=SMALL,
        batch_size=4,
        progress=False,
    )
    for pool in ablations:
        np.testing.assert_allclose(
            derived[f"stage6/{pool}"].features, direct[f"stage6/{pool}"].features, atol=1e-5
        )
    np.testing.assert_array_equal(vec["pool/bin"].features, direct["pool/bin"].features)
    # the stored shuffle really is the per-image, per-map shuffle of the stored maps
    maps = torch.from_numpy(np.array(direct["stage6/sp-shuffle"].features)).reshape(9, 192, -1)
    unrolled = extract(
        ds,
        effnet,
        [LayerActivations("stage6", "unroll")],
        store=tmp_path,
        preprocess=SMALL,
        progress=False,
    )["stage6/unroll"].features
    orig = torch.from_numpy(np.array(unrolled)).reshape(9, 192, -1)
    assert torch.equal(maps.sort(2).values, orig.sort(2).values)


class InterruptingDataset(ArrayDataset):
    """Raises KeyboardInterrupt (as Ctrl-C would) when item ``stop_at`` is loaded."""

    stop_at: int = -1

    def load(self, index, **kwargs):
        if index == self.stop_at:
            raise KeyboardInterrupt
        return super().load(index, **kwargs)


def test_resume_after_ctrl_c_gives_identical_features(effnet, tmp_path):
    base = array_dataset(23)
    ds = InterruptingDataset(
        name=base.name, ids=base.ids, classes=base.classes, targets=base.targets, images=base.images
    )
    ds.stop_at = 13
    method = LayerActivations(["stage5", "head"], ["avg", "sp-shuffle"])
    with pytest.raises(KeyboardInterrupt):
        extract(
            ds,
            effnet,
            [method],
            store=tmp_path / "s",
            preprocess=SMALL,
            batch_size=4,
            workers=0,
            progress=False,
        )
    entries = FeatureStore(tmp_path / "s").entries()
    assert entries and not any(e["complete"] for e in entries)
    ds.stop_at = -1
    with CountingForward(effnet) as counter:
        resumed = extract(
            ds,
            effnet,
            [method],
            store=tmp_path / "s",
            preprocess=SMALL,
            batch_size=4,
            progress=False,
        )
    assert resumed.n_forward == 23 - 12 and counter.calls == 3  # rows 12..22 only
    fresh = extract(base, effnet, [method], preprocess=SMALL, batch_size=8, progress=False)
    for key in fresh.features:
        np.testing.assert_allclose(resumed[key].features, fresh[key].features, atol=1e-5)


SLOW_RUN = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from deepfeat.backbones import load_backbone
    from deepfeat.data.datasets import ArrayDataset
    from deepfeat.data.transforms import Preprocess
    from deepfeat.features import LayerActivations, extract
    sys.path.insert(0, {repo!r})
    from tests.features.test_pipeline import array_dataset, SMALL

    class Slow(ArrayDataset):
        def load(self, index, **kw):
            time.sleep(0.03)
            return super().load(index, **kw)

    base = array_dataset(120)
    ds = Slow(name=base.name, ids=base.ids, classes=base.classes, targets=base.targets, images=base.images)
    extract(ds, load_backbone(), [LayerActivations(["stage4", "head"], ["avg", "max"])], store=sys.argv[1],
            preprocess=SMALL, batch_size=4, workers=1, progress=False)
    """
)


def test_resume_after_kill_gives_identical_features(effnet, tmp_path):
    script = tmp_path / "slow.py"
    script.write_text(SLOW_RUN.format(repo=str(REPO)))
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, str(script), str(store)], cwd=REPO)
    try:
        deadline = time.time() + 120
        journals = []
        while time.time() < deadline and proc.poll() is None:
            journals = list(store.glob("entries/*/journal.jsonl"))
            if len(journals) == 4 and all(len(j.read_text().splitlines()) >= 3 for j in journals):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    entries = FeatureStore(store).entries()
    assert len(entries) == 4 and not any(e["complete"] for e in entries)
    ds = array_dataset(120)
    method = LayerActivations(["stage4", "head"], ["avg", "max"])
    resumed = extract(ds, effnet, [method], store=store, preprocess=SMALL, batch_size=16, progress=False)
    assert 0 < resumed.n_forward < 120
    fresh = extract(ds, effnet, [method], preprocess=SMALL, batch_size=16, progress=False)
    # rows from the killed child and from this process: another process with another thread count
    # (other tests change this process's), so float32 sums agree to rounding, not to the bit
    for key in fresh.features:
        np.testing.assert_allclose(resumed[key].features, fresh[key].features, rtol=1e-4, atol=1e-4)
    assert all(e["complete"] for e in FeatureStore(store).entries())


def test_bad_images_skipped_and_reported(effnet, bad_tree, tmp_path):
    ds = folder_dataset(bad_tree)
    res = extract(
        ds,
        effnet,
        [LayerActivations("head", "avg")],
        store=tmp_path,
        preprocess=SMALL,
        batch_size=4,
        progress=False,
    )
    reasons = {Path(p).name: r for p, r in res.failures}
    assert set(reasons) == {"zero.jpg", "notes.txt", "truncated.jpg", "bomb.png"}
    assert "empty file" in reasons["zero.jpg"] and "not an image" in reasons["notes.txt"]
    assert "truncated" in reasons["truncated.jpg"] and "too large" in reasons["bomb.png"]
    fs = res["head/avg"]
    assert len(fs) == 12 and fs.features.shape == (12, 1280)
    assert not any(Path(i).name in reasons for i in fs.ids)
    assert [ds.ids[r] for r in fs.rows] == fs.ids
    # the rerun reads everything, failures included, from the store
    again = extract(
        ds,
        effnet,
        [LayerActivations("head", "avg")],
        store=tmp_path,
        preprocess=SMALL,
        progress=False,
    )
    assert again.n_forward == 0 and len(again.failures) == 4


def test_bad_image_fails_the_run_but_keeps_the_images_before_it(effnet, image_tree, tmp_path):
    from tests.conftest import truncated_jpeg

    (image_tree / "bees" / "zz.jpg").write_bytes(truncated_jpeg())
    ds = folder_dataset(image_tree)
    assert ds.ids.index("bees/zz.jpg") == 8
    with pytest.raises(DataError, match=r"bees/zz.jpg: truncated"):
        extract(
            ds,
            effnet,
            [LayerActivations("head", "avg")],
            store=tmp_path,
            preprocess=SMALL,
            batch_size=3,
            on_error="fail",
            progress=False,
        )
    (meta,) = FeatureStore(tmp_path).entries()
    status = FeatureStore(tmp_path).find(meta["provenance"], len(ds)).status()
    # the 2 batches before the bad one, and the images of its batch that come before it (6, 7)
    assert status.done.tolist() == [True] * 8 + [False] * 5


def test_locked_entry_refuses_a_second_writer(effnet, tmp_path):
    ds = array_dataset(4)
    method = LayerActivations("head", "avg")
    from deepfeat.features.pipeline import base_provenance

    prov = {**base_provenance(ds, effnet, SMALL, 89_478_485), **method.outputs(effnet)[0].params}
    holder = FeatureStore(tmp_path).entry(prov, 4)
    holder.lock()
    try:
        with pytest.raises(StoreError, match="another run is writing"):
            extract(ds, effnet, [method], store=tmp_path, preprocess=SMALL, progress=False)
    finally:
        holder.unlock()


def test_feature_extractor_is_a_sklearn_transformer(effnet, image_tree):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    fx = FeatureExtractor(effnet, layers=["stage6", "pool"], pool="avg", preprocess=SMALL)
    assert clone(fx).get_params()["layers"] == ["stage6", "pool"]
    ds = folder_dataset(image_tree)
    paths = [str(p) for p in ds.paths]
    X = fx.fit().transform(paths)
    assert X.shape == (12, 192 + 1280)
    pipe = make_pipeline(
        FeatureExtractor(effnet, layers="pool", preprocess=SMALL), LogisticRegression(max_iter=200)
    )
    pipe.fit(paths, ds.targets)
    assert pipe.predict(paths).shape == (12,)


def test_unknown_layer_and_pool_fail_before_any_work(effnet):
    ds = array_dataset(2)
    with pytest.raises(Exception, match="valid: stem, stage1"):
        extract(ds, effnet, [LayerActivations("fc7")], progress=False)
    with pytest.raises(Exception, match="valid: avg, max"):
        extract(ds, effnet, [LayerActivations("head", "median")], progress=False)
    with pytest.raises(Exception, match=r"unknown on_error .ignore.; valid: skip, fail"):
        extract(ds, effnet, [LayerActivations("head")], on_error="ignore", progress=False)


def test_feature_extractor_names_its_output_columns(effnet):
    fx = FeatureExtractor(effnet, layers=["stage6", "pool"], pool=["avg"], preprocess=SMALL)
    names = fx.get_feature_names_out()
    assert len(names) == 192 + 1280 and names[0] == "stage6/avg_0" and names[-1] == "pool_1279"
    unrolled = FeatureExtractor(effnet, layers=["stage6"], pool=["unroll"], preprocess=SMALL)
    with pytest.raises(ConfigError, match="call transform"):
        unrolled.get_feature_names_out()


def test_per_position_rows_of_images_of_several_sizes_are_refused_before_any_work(effnet, tmp_path):
    """(Unrolled maps, gradient factors of a conv layer and Fisher descriptors crashed in a NumPy
    concatenation, or named only 'feature dimension changed', when an aspect-keeping resize gave the
    images different sizes: the row width follows the number of positions.)"""
    from PIL import Image

    from deepfeat.features.gradients import GradientFeatures

    root = tmp_path / "tree"
    for c, (h, w) in enumerate([(96, 128), (96, 96)]):
        for i in range(2):
            path = root / f"c{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo(c * 2 + i, (w, h))).save(path)
    ds = folder_dataset(root)
    store = tmp_path / "store"
    for method in (LayerActivations("stage6", "unroll"), GradientFeatures("head")):
        with pytest.raises(ConfigError, match=r"2 sizes here .*576 x 448.*--preprocess warp"):
            extract(ds, effnet, [method], preprocess="interactive", store=store, progress=False)
    assert not (store / "entries").exists() or not any((store / "entries").iterdir())
    # pooled rows, or one size for all (warp), are fine
    pooled = extract(
        ds, effnet, [LayerActivations("stage6", "avg")], preprocess="interactive", progress=False
    )
    assert pooled["stage6/avg"].features.shape == (4, 192)
    warped = extract(ds, effnet, [LayerActivations("stage6", "unroll")], preprocess="warp", progress=False)
    assert warped["stage6/unroll"].features.shape[0] == 4


@pytest.mark.parametrize("seed", ["x", 1.5, -1, True])
def test_a_shuffle_seed_that_is_not_a_whole_number_is_refused_by_name(effnet, seed):
    """(1.5 was truncated to 1, reusing seed 1's store entry; 'x' raised int()'s ValueError)"""
    with pytest.raises(ConfigError, match="random_state"):
        LayerActivations("stage6", "sp-shuffle", random_state=seed).outputs(effnet)


def test_a_spelling_and_a_backbone_name_are_taken_and_other_inputs_named(effnet, tmp_path):
    """(a string for the dataset or the backbone raised AttributeError: 'str' object has no
    attribute 'fingerprint' / 'module')"""
    from PIL import Image

    from tests.conftest import photo, save

    for c in ("a", "b"):
        save(Image.fromarray(photo(ord(c))), tmp_path / "tree" / c / "0.png")
    spelled = extract(
        str(tmp_path / "tree"), "efficientnet_lite0", [LayerActivations("pool")], progress=False
    )
    direct = extract(folder_dataset(tmp_path / "tree"), effnet, [LayerActivations("pool")], progress=False)
    np.testing.assert_array_equal(spelled.features["pool"].features, direct.features["pool"].features)
    with pytest.raises(ConfigError, match="backbone must be a Backbone or a backbone name, got int"):
        extract(str(tmp_path / "tree"), 42, [LayerActivations("pool")], progress=False)
    with pytest.raises(ConfigError, match=r"methods must be feature methods .* got 'pool'"):
        extract(str(tmp_path / "tree"), effnet, "pool", progress=False)
