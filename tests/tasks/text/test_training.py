"""The training loop on tiny generated sentences: it learns, batches are padding-aware, clipping and
early stopping act, and an interrupted run resumed from its checkpoint ends where an uninterrupted
one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.errors import CheckpointError, ConfigError
from deepfeat.tasks.text.decoders import ConditionedDecoder, DecoderConfig
from deepfeat.tasks.text.decoding import beam_search
from deepfeat.tasks.text.training import (
    SentenceData,
    TrainingOptions,
    epoch_batches,
    perplexity,
    train_decoder,
)
from deepfeat.tasks.text.vocabulary import EOS_ID


def toy_data(n_items=8, seed=0):
    """Item i has a one-hot condition and two sentences spelling its index in base 3 (words 4..6)."""
    cond = torch.eye(n_items)
    sentences, items = [], []
    for i in range(n_items):
        digits = [4 + (i // 3**k) % 3 for k in range(1 + i % 3)]
        for extra in (0, 1):
            sentences.append([*digits, *([7] * extra), EOS_ID])
            items.append(i)
    return SentenceData(cond=cond, item=np.array(items), sentences=sentences)


def decoder(arch="lrcn_2f", seed=0):
    torch.manual_seed(seed)
    cfg = DecoderConfig(
        vocab_size=8, cond_dim=8, architecture=arch, hidden_size=16, embed_size=8, dropout=0.1
    )
    return ConditionedDecoder(cfg)


def opts(**kw):
    base = dict(epochs=6, batch_size=4, learning_rate=0.02, patience=100, monitor="perplexity", seed=3)
    return TrainingOptions(**{**base, **kw})


def test_training_lowers_perplexity_and_learns_the_sentences():
    data = toy_data()
    dec = decoder()
    before = perplexity(dec, data)
    result = train_decoder(dec, data, options=opts(epochs=40), val=data, progress=False)
    assert result.history[-1]["train_perplexity"] < before / 2
    assert perplexity(dec, data) < 1.8  # two sentences per item: the floor is about sqrt(2)
    got = beam_search(dec, data.cond, width=3, max_length=6)
    for i, tokens in enumerate(got.tokens):
        assert [*tokens, EOS_ID] in [s for s, it in zip(data.sentences, data.item) if it == i]


def test_batches_cover_every_sentence_once_and_group_similar_lengths():
    lengths = np.random.default_rng(0).integers(1, 20, size=1000)
    batches = epoch_batches(lengths, 10, seed=0, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 3  # random batches of 10 would spread by about 15
    assert [b.tolist() for b in epoch_batches(lengths, 10, 0, 0)] == [b.tolist() for b in batches]
    assert [b.tolist() for b in epoch_batches(lengths, 10, 0, 1)] != [b.tolist() for b in batches]


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path):
    data = toy_data()
    full = decoder()
    r_full = train_decoder(
        full, data, options=opts(), val=data, checkpoint_dir=tmp_path / "a", progress=False
    )
    part = decoder()
    train_decoder(part, data, options=opts(epochs=3), val=data, checkpoint_dir=tmp_path / "b", progress=False)
    torch.manual_seed(12345)  # whatever the process did in between
    resumed = decoder(seed=99)
    r_res = train_decoder(
        resumed, data, options=opts(), val=data, checkpoint_dir=tmp_path / "b", progress=False
    )
    assert r_res.resumed_from == 3
    # the training time counts the earlier run's epochs too (it counted only the last run's)
    assert r_res.seconds >= sum(h["seconds"] for h in r_res.history) > 0
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["train_loss"] for h in r_res.history] == [h["train_loss"] for h in r_full.history]


def test_the_seed_decides_dropout_and_the_callers_random_state_is_left_alone():
    data = toy_data()
    runs = []
    for outside in (1, 2):
        dec = decoder()  # the same initial weights
        torch.manual_seed(outside)  # whatever the process did before
        state = torch.get_rng_state()
        train_decoder(dec, data, options=opts(epochs=2), progress=False, val=data)
        assert torch.equal(torch.get_rng_state(), state)
        runs.append(dec.state_dict())
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k
    other = decoder()
    train_decoder(other, data, options=opts(epochs=2, seed=4), progress=False, val=data)
    assert not all(torch.equal(runs[0][k], v) for k, v in other.state_dict().items())


def test_a_checkpoint_of_other_data_is_refused(tmp_path):
    train_decoder(
        decoder(), toy_data(), options=opts(epochs=1), val=toy_data(), checkpoint_dir=tmp_path, progress=False
    )
    other = toy_data(n_items=8)
    other.sentences[0] = [5, EOS_ID]
    with pytest.raises(ConfigError, match="another training run"):
        train_decoder(
            decoder(), other, options=opts(epochs=2), val=other, checkpoint_dir=tmp_path, progress=False
        )
    (tmp_path / "last.pt").write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError, match="pickle"):
        train_decoder(
            decoder(),
            toy_data(),
            options=opts(epochs=2),
            val=toy_data(),
            checkpoint_dir=tmp_path,
            progress=False,
        )


def test_early_stopping_keeps_the_best_epoch():
    data = toy_data()
    calls = []

    def validate(dec):  # a validation score that peaks at epoch 2, then falls
        calls.append(1)
        return {"score": [0.1, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0][len(calls) - 1]}

    dec = decoder()
    snapshots = []
    orig = validate

    def validate_and_keep(d):
        snapshots.append({k: v.clone() for k, v in d.state_dict().items()})
        return orig(d)

    result = train_decoder(
        dec,
        data,
        options=opts(epochs=7, patience=2, monitor="score"),
        validate=validate_and_keep,
        progress=False,
    )
    assert result.best_epoch == 2 and result.stopped_early and len(result.history) == 4
    for k, v in dec.state_dict().items():
        assert torch.equal(v, snapshots[1][k])


def test_a_stopped_run_extended_with_more_patience_equals_one_run_with_it(tmp_path):
    data = toy_data()
    scores = [0.1, 0.5, 0.4, 0.3, 0.2, 0.6, 0.5, 0.4, 0.3, 0.2]

    def run(dec, patience, first_score, folder):
        calls = []

        def validate(_dec):  # the scores of epochs first_score + 1, first_score + 2, ...
            calls.append(1)
            return {"score": scores[first_score + len(calls) - 1]}

        options = opts(epochs=10, patience=patience, monitor="score")
        return train_decoder(
            dec, data, options=options, validate=validate, checkpoint_dir=folder, progress=False
        )

    one = decoder()
    r_one = run(one, 4, 0, None)
    assert r_one.best_epoch == 6 and r_one.stopped_early and len(r_one.history) == 10
    first = run(decoder(), 2, 0, tmp_path)
    assert first.stopped_early and len(first.history) == 4
    again = run(decoder(seed=5), 2, 4, tmp_path)  # same patience: stays stopped
    assert len(again.history) == 4 and again.stopped_early
    extended = decoder(seed=99)
    r_ext = run(extended, 4, 4, tmp_path)
    assert r_ext.resumed_from == 4 and r_ext.best_epoch == 6 and r_ext.stopped_early
    assert [h["train_loss"] for h in r_ext.history] == [h["train_loss"] for h in r_one.history]
    for (k, a), b in zip(one.state_dict().items(), extended.state_dict().values()):
        assert torch.equal(a, b), k


def test_gradient_clipping_bounds_the_step():
    data = toy_data()
    dec = decoder()
    before = [p.detach().clone() for p in dec.parameters()]
    train_decoder(
        dec,
        data,
        options=opts(
            epochs=1, batch_size=16, optimizer="sgd", learning_rate=1.0, momentum=0.0, clip_norm=1e-3
        ),
        val=data,
        progress=False,
    )
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(dec.parameters(), before)))
    assert float(step) <= 1e-3 + 1e-6  # one batch: lr x clipped norm


def test_options_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="optimizer"):
        train_decoder(decoder(), toy_data(), options=TrainingOptions(optimizer="rmsprop"), progress=False)
    with pytest.raises(ConfigError, match="validation function"):
        train_decoder(decoder(), toy_data(), options=TrainingOptions(monitor="cider_d"), progress=False)
