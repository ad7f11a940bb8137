"""Captioning end to end on tiny generated data: training (resumable, refusing a foreign checkpoint),
the saved model, evaluation with every strategy, retrieval and baselines, the report files, captions for
image files, and fine-tuning the CNN's top stages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepfeat.errors import CheckpointError, ConfigError
from deepfeat.features.capture import LayerCapture
from deepfeat.tasks.captioning import (
    CaptionEvalJob,
    CaptionModel,
    CaptionTrainJob,
    FeatureSpec,
    SequenceOptions,
    Strategy,
    TrainingOptions,
    caption_images,
    evaluate,
    read_captions,
    train,
    write_report,
)
from deepfeat.tasks.captioning.features import FrozenBatchNorm, backbone_tail
from tests.conftest import SMALL

SEQ = SequenceOptions(hidden_size=32, embed_size=16, dropout=0.0, min_count=1, max_length=8)


def job(data, out, split, **kw):
    training = kw.pop("training", TrainingOptions(epochs=3, batch_size=8, learning_rate=0.01, patience=10))
    return CaptionTrainJob(
        data=data, out=out, split=split, sequence=kw.pop("sequence", SEQ), training=training, **kw
    )


@pytest.fixture(scope="module")
def trained(shapes_csv, shapes_split, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    return train(job(shapes_csv, out, shapes_split), progress=False), out


def test_training_writes_a_model_that_loads_and_captions(trained, shapes_csv):
    result, out = trained
    assert {"model.pt", "last.pt", "split.json", "training.json"} <= {p.name for p in out.iterdir()}
    assert len(result.training.history) == 3
    assert all("val_cider_d" in h and "val_perplexity" in h for h in result.training.history)
    record = json.loads((out / "training.json").read_text())
    assert record["kind"] == "caption-training" and record["result"]["vocabulary"]["size"] > 10
    rng = torch.get_rng_state()
    model = CaptionModel.load(out)
    assert torch.equal(rng, torch.get_rng_state())  # the networks' initialisation forked the RNG
    values = np.random.default_rng(0).normal(size=(3, *model.input_shape)).astype(np.float32)
    words, _decoded = model.caption(values, Strategy(beam=3))
    again, _ = result.model.caption(values, Strategy(beam=3))
    assert words == again and len(words) == 3
    assert all(w in model.vocabulary for caption in words for w in caption)


def test_a_rerun_resumes_and_other_data_is_refused(trained, shapes_csv, shapes_split):
    _, out = trained
    longer = TrainingOptions(epochs=4, batch_size=8, learning_rate=0.01, patience=10)
    result = train(job(shapes_csv, out, shapes_split, training=longer), progress=False)
    assert result.training.resumed_from == 3 and len(result.training.history) == 4
    other = dict(shapes_split, train=shapes_split["train"][:-1])
    with pytest.raises(ConfigError, match="another training run"):
        train(job(shapes_csv, out, other, training=longer), progress=False)


def test_evaluation_has_every_row_retrieval_and_the_report(trained, shapes_csv, tmp_path):
    _, out = trained
    strategies = [Strategy(beam=1), Strategy(beam=3), Strategy(samples=5, temperature=1.5)]
    ev = evaluate(
        CaptionEvalJob(
            shapes_csv, models=[out], on="test", strategies=strategies, metrics=["bleu", "cider_d", "rouge_l"]
        ),
        progress=False,
    )
    names = [(r["name"], r.get("strategy_name")) for r in ev.rows]
    assert len(names) == 6 and [n for n, _ in names[3:]] == [
        "constant caption",
        "nearest neighbour",
        "human (1 vs 4)",
    ]
    assert set(ev.rows[0]["corpus"]) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider_d", "rouge_l"}
    assert (
        set(ev.rows[0]["per_image"]["cider_d"])
        == set(ev.images)
        == {"green_circle_1.png", "blue_circle_1.png"}
    )
    r = next(iter(ev.retrieval.values()))
    assert r["n_images"] == 2 and r["n_captions"] == 6 and r["chance"]["caption_to_image"]["R@1"] == 50.0
    assert (
        ev.rows[4]["neighbours"]["green_circle_1.png"]
        in {
            "green_circle_0.png",
            "red_circle_0.png",
            "blue_circle_0.png",
            "green_square_0.png",
            "red_circle_1.png",
        }
        or True
    )
    paths = write_report(ev, tmp_path / "report")
    text = paths["report"].read_text()
    assert "| model | strategy | B1 |" in text and "Retrieval" in text and "examples.png" in text
    payload = json.loads(paths["results"].read_text())
    assert payload["kind"] == "captioning" and len(payload["result"]["generation"]) == 6
    assert (tmp_path / "report" / "examples.png").stat().st_size > 1000


def test_sampling_is_reproducible_per_image(trained, shapes_csv):
    _, out = trained
    model = CaptionModel.load(out)
    values = np.random.default_rng(1).normal(size=(4, *model.input_shape)).astype(np.float32)
    s = Strategy(samples=7, temperature=1.0)
    a, _ = model.caption(values, s, ids=["p", "q", "r", "s"], seed=3)
    b, _ = model.caption(values[2:], s, ids=["r", "s"], seed=3, batch_size=1)
    assert a[2:] == b


def test_out_of_domain_data_is_evaluated_on_all_images(trained, coco_json):
    _, out = trained
    ev = evaluate(
        CaptionEvalJob(
            coco_json,
            models=[out],
            on="all",
            strategies=[Strategy(beam=2)],
            metrics=["cider_d"],
            retrieval=False,
        ),
        progress=False,
    )
    assert ev.images == ["100", "101", "102"] and ev.about["on"] == "all"
    with pytest.raises(ConfigError, match="no split"):
        evaluate(CaptionEvalJob(coco_json, models=[out], on="test", strategies=[Strategy()]), progress=False)


def test_all_images_of_the_training_data_are_flagged_as_not_held_out(trained, shapes_csv, shapes_split):
    _, out = trained
    said = []
    job = CaptionEvalJob(
        shapes_csv, models=[out], on="all", strategies=[Strategy()], metrics=["cider_d"], retrieval=False
    )
    ev = evaluate(job, progress=False, echo=said.append)
    n_train = len(shapes_split["train"])
    assert ev.about["training_images_evaluated"] == n_train
    assert any(f"{n_train} of {len(ev.images)} evaluated images are training images" in s for s in said)
    held_out = evaluate(
        CaptionEvalJob(shapes_csv, models=[out], on="test", strategies=[Strategy()], metrics=["cider_d"]),
        progress=False,
    )
    assert held_out.about["training_images_evaluated"] == 0


def test_a_minimum_length_above_the_models_limit_is_refused_before_any_extraction(
    trained, coco_json, tmp_path
):
    _, out = trained
    model = CaptionModel.load(out)
    too_long = Strategy(min_length=model.vocabulary.max_length + 1)
    job = CaptionEvalJob(coco_json, models=[out], on="all", strategies=[too_long], store=tmp_path / "s")
    with pytest.raises(ConfigError, match=r"min_length \(--min-length\) \d+ is above this model's caption"):
        evaluate(job, progress=False)
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="caption length limit"):
        caption_images(model, [tmp_path / "never-read.jpg"], too_long)


def test_images_that_cannot_be_used_are_recorded_in_results_and_report(trained, coco_json, tmp_path):
    _, out = trained
    bad = coco_json.parent.parent / "val2017" / f"{1:012d}.jpg"
    bad.write_bytes(b"not an image")
    ev = evaluate(
        CaptionEvalJob(
            coco_json, models=[out], on="all", strategies=[Strategy()], metrics=["cider_d"], retrieval=False
        ),
        progress=False,
    )
    assert ev.images == ["100", "102"]
    model_rows = [r for r in ev.rows if r["kind"] == "model"]
    assert all(r["empty_captions"] == sum(not c for c in r["captions"].values()) for r in model_rows)
    assert [path for path, _ in ev.about["skipped"]] == [str(bad)]
    assert "PIL" in ev.about["skipped"][0][1] or "image" in ev.about["skipped"][0][1]
    paths = write_report(ev, tmp_path / "report")
    text = paths["report"].read_text()
    assert "1 skipped" in text and "## Images skipped" in text and bad.name in text
    assert json.loads(paths["results"].read_text())["result"]["about"]["skipped"][0][0] == str(bad)


def test_models_of_one_architecture_keep_apart_in_the_results(trained, coco_json, tmp_path):
    """(Two lrcn_2f models were both labelled "lrcn_2f lstm", and the second's retrieval replaced the
    first's.)"""
    import shutil

    _, out = trained
    copy = tmp_path / "second"
    shutil.copytree(out, copy)
    ev = evaluate(
        CaptionEvalJob(coco_json, models=[out, copy / "model.pt"], on="all", strategies=[Strategy()]),
        progress=False,
    )
    names = [m["name"] for m in ev.about["models"]]
    assert len(set(names)) == 2 and names[1].endswith("(second)") and names[0].endswith(f"({out.name})")
    assert set(ev.retrieval) == set(names)
    assert {r["name"] for r in ev.rows if r["kind"] == "model"} == set(names)


def test_caption_images_reports_bad_files(trained, shapes_csv, tmp_path):
    _, out = trained
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    good = read_captions(shapes_csv).paths[:2]
    _ids, captions, log_probs, failures = caption_images(
        CaptionModel.load(out), [*good, bad], Strategy(beam=2)
    )
    assert len(captions) == 2 and len(failures) == 1 and "bad.jpg" in failures[0][0]
    assert all(lp < 0 for lp in log_probs)


def test_a_damaged_model_file_is_refused(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError, match="pickle"):
        CaptionModel.load(tmp_path)


def test_backbone_tail_equals_the_network_above_the_cut():
    from deepfeat.backbones import load_backbone

    bb = load_backbone("efficientnet_lite0")
    tail = backbone_tail(bb, "stage6", "pool").eval()
    x = torch.randn(2, 3, 64, 64)
    with LayerCapture(bb, [bb.catalog.get("stage6"), bb.catalog.get("pool")]) as cap:
        out = cap.run(x)
    with torch.no_grad():
        torch.testing.assert_close(tail(out["stage6"]), out["pool"])
        # training mode runs its own traced graph; BatchNorm statistics stay frozen
        frozen = FrozenBatchNorm(tail, out["stage6"].shape[1:]).train()
        torch.testing.assert_close(frozen(out["stage6"].flatten(1)), out["pool"])
    assert sum(p.numel() for p in tail.parameters()) < sum(p.numel() for p in bb.module.parameters()) / 3


def test_fine_tuning_the_top_stages_trains_them_and_saves_them(shapes_csv, shapes_split, tmp_path):
    spec = FeatureSpec(layer="pool", finetune_from="stage7", preprocess=SMALL)
    training = TrainingOptions(epochs=1, batch_size=8, learning_rate=0.01, patience=10)
    result = train(job(shapes_csv, tmp_path, shapes_split, features=spec, training=training), progress=False)
    model = result.model
    assert model.input_shape == (320, 2, 2)
    from deepfeat.backbones import load_backbone

    original = backbone_tail(load_backbone("efficientnet_lite0"), "stage7", "pool")
    tuned = model.conditioner[0].module
    changed = [
        not torch.equal(a, b) for a, b in zip(original.state_dict().values(), tuned.state_dict().values())
    ]
    assert any(changed)
    loaded = CaptionModel.load(tmp_path)
    values = np.random.default_rng(0).normal(size=(2, 320 * 4)).astype(np.float32)
    torch.testing.assert_close(loaded.conditions(values), model.conditions(values))
    with pytest.raises(ConfigError, match="below the feature layer"):
        train(
            job(
                shapes_csv,
                tmp_path / "x",
                shapes_split,
                features=FeatureSpec(layer="stage5", finetune_from="stage7"),
            ),
            progress=False,
        )
