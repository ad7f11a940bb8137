"""Brief training on real captions (flickr8k_mini): a few hundred images of the committed split, small
inputs and a small model, two epochs; the model must learn the language (perplexity far below the
vocabulary size, falling) and caption validation images with known words. (Two epochs of 12 batches
are too few to beat the best constant caption: a run on the loaded machine had validation CIDEr-D
0.0006 against the constant caption's 0.185, so generation quality is not asserted here; the tables
experiment measures it.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from deepfeat.tasks.captioning import (
    CaptionTrainJob,
    FeatureSpec,
    SequenceOptions,
    Strategy,
    TrainingOptions,
    caption_images,
    read_captions,
    read_split,
    train,
)
from deepfeat.tasks.text.vocabulary import SPECIALS, UNK
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
    paths = [subset.paths[subset.index(i)] for i in split["val"][:10]]
    _, captions, _, failures = caption_images(result.model, paths, Strategy(beam=3))
    assert not failures and len(captions) == 10
    # words of the vocabulary (the unknown token included: a legitimate output), never the
    # begin/end/padding markers (after two epochs beam search may still end at once: an empty caption)
    allowed = (set(result.model.vocabulary.words) - set(SPECIALS)) | {UNK}
    assert all(set(caption) <= allowed for caption in captions), captions
