"""Brief training on real captions (flickr8k_mini): a few hundred images of the committed split, small
inputs and a small model, two epochs; the model must learn the language (perplexity far below the
vocabulary size, falling) and describe validation images better than a constant caption would."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepfeat.tasks.captioning import (
    CaptionTrainJob,
    FeatureSpec,
    SequenceOptions,
    TrainingOptions,
    read_captions,
    read_split,
    train,
)
from deepfeat.tasks.captioning.baselines import constant_caption
from deepfeat.tasks.text.metrics import cider_d
from tests.conftest import SHARED_DATASETS, SMALL

FLICKR = SHARED_DATASETS / "flickr8k_mini"
SPLIT = Path(__file__).resolve().parents[3] / "experiments" / "splits" / "flickr8k_mini.json"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not FLICKR.is_dir(), reason="../shared/datasets/flickr8k_mini absent"),
]


def test_brief_training_on_flickr8k_mini(tmp_path):
    data = read_captions(FLICKR)
    full = read_split(SPLIT, data)
    split = {"train": full["train"][:300], "val": full["val"][:60], "test": full["test"][:10]}
    subset = data.subset(split["train"] + split["val"] + split["test"])
    job = CaptionTrainJob(
        data=subset,
        out=tmp_path,
        split=split,
        features=FeatureSpec(preprocess=SMALL),
        sequence=SequenceOptions(hidden_size=64, embed_size=64, min_count=3),
        training=TrainingOptions(epochs=2, batch_size=25, learning_rate=0.004, patience=5),
    )
    result = train(job, progress=False)
    history = result.training.history
    vocab = len(result.model.vocabulary)
    assert 150 < vocab < 1000
    assert history[1]["val_perplexity"] < history[0]["val_perplexity"]
    assert history[1]["val_perplexity"] < vocab / 4
    tokens = subset.tokens()
    val_refs = [tokens[subset.index(i)] for i in split["val"]]
    train_refs = [tokens[subset.index(i)] for i in split["train"]]
    caption, _ = constant_caption(train_refs, max_candidates=300)
    constant = cider_d(val_refs, [caption] * len(val_refs))[0]
    assert history[-1]["val_cider_d"] > 0.5 * constant  # two epochs on 300 images: near the constant caption
