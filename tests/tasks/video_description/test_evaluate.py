"""Evaluation: rows scored as the shared caption metrics score them, the nearest-neighbour baseline,
the report files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepfeat.errors import ConfigError
from deepfeat.tasks.captioning.baselines import consensus_captions
from deepfeat.tasks.text.metrics import score_captions
from deepfeat.tasks.text.training import TrainingOptions
from deepfeat.tasks.video_description import (
    DescribeEvalJob,
    DescribeOptions,
    DescribeTrainJob,
    SlotPredictions,
    evaluate,
    read_descriptions,
    train,
    write_report,
)


@pytest.fixture(scope="module")
def models(described, slot_preds):
    out = []
    for arch in "bc":
        training = TrainingOptions(epochs=1, batch_size=8, monitor="perplexity", seed=0)
        opts = DescribeOptions(arch=arch, hidden=16, embed=8, training=training)
        out.append(train(DescribeTrainJob(described, opts, slots=slot_preds), progress=False).model)
    return out


def test_rows_are_the_shared_metrics_of_the_sentences(described, slot_preds, models):
    result = evaluate(DescribeEvalJob(described, slot_preds, models), progress=False)
    data = read_descriptions(described)
    rows = data.rows("test")
    refs = data.tokens(rows)
    assert result.ids == [data.ids[r] for r in rows]
    names = [r["name"] for r in result.rows]
    assert names == ["(b) LSTM decoder (max)", "(c) LSTM decoder (prob)", "nearest neighbour"]
    for row in result.rows:
        want = score_captions(refs, result.sentences[row["name"]], metrics=("bleu", "cider_d")).corpus
        assert row["scores"] == pytest.approx(want)
    b_sentences = models[0].describe(slot_preds.select(result.ids))
    assert result.sentences[names[0]] == b_sentences
    header, body = result.table()
    assert header[:2] == ["Architecture", "Input"] and header[-2:] == ["B4", "C"]
    assert body[0][5] == f"{100 * result.rows[0]['scores']['bleu_4']:.1f}"


def test_nearest_neighbour_takes_the_closest_training_video(described, slot_preds):
    data = read_descriptions(described)
    train_rows, test_rows = data.rows("train"), data.rows("test")
    train_ids = [data.ids[r] for r in train_rows]
    # give every test video exactly the slot vector of training video k = i
    test_ids = [data.ids[r] for r in test_rows]
    src = slot_preds.select(train_ids[: len(test_ids)])
    probs = {
        s: np.concatenate([slot_preds.select(train_ids).probs[s], src.probs[s]]) for s in slot_preds.slots
    }
    preds = SlotPredictions(slot_preds.slots, train_ids + test_ids, probs)
    result = evaluate(DescribeEvalJob(described, preds, []), progress=False)
    consensus = consensus_captions(data.tokens(train_rows))
    for i, cand in enumerate(result.sentences["nearest neighbour"]):
        same = [
            k for k in range(len(train_ids)) if all(np.allclose(probs[s][k], src.probs[s][i]) for s in probs)
        ]
        assert cand in [consensus[k] for k in same]


def test_report_files(described, slot_preds, models, tmp_path):
    result = evaluate(
        DescribeEvalJob(described, slot_preds, models[:1], nearest_neighbour=False), progress=False
    )
    paths = write_report(result, tmp_path)
    payload = json.loads(paths["results"].read_text())
    assert payload["kind"] == "video-description" and payload["result"]["rows"][0]["scores"]["bleu_4"] >= 0
    assert payload["provenance"]["n_videos"] == len(result.ids)
    text = paths["report"].read_text()
    assert "Table 4.9" in text and "(b) LSTM decoder" in text


def test_nothing_to_evaluate(described, slot_preds):
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        evaluate(DescribeEvalJob(described, slot_preds, [], nearest_neighbour=False), progress=False)
    torch.manual_seed(0)
