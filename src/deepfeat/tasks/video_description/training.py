"""Training a video-description model (architecture a, b or c) on the ``train`` videos of a
description manifest and their slot predictions, with the shared teacher-forced loop
(:func:`deepfeat.tasks.text.training.train_decoder`: padding-aware batches, clipped gradients, a
checkpoint per epoch that a rerun resumes from, early stopping on the validation score; the
encoder of ``a`` trains with the decoder as its ``conditioner``). The validation score is BLEU-4 of
greedy sentences on the ``val`` videos, the thesis' metric for Table 4.9.

Departure from the thesis for a CPU: LSTMs of ``hidden`` = 128 units and 64-dimensional word
embeddings by default (the thesis: 1000), Adam.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepfeat.errors import ConfigError
from deepfeat.fileio import check_output_dir, to_jsonable, write_json
from deepfeat.tasks.text.decoding import Strategy
from deepfeat.tasks.text.metrics import score_captions
from deepfeat.tasks.text.training import SentenceData, TrainingOptions, TrainingResult, train_decoder
from deepfeat.tasks.text.vocabulary import Vocabulary
from deepfeat.tasks.video_description.data import DescriptionSet, read_descriptions
from deepfeat.tasks.video_description.models import ARCHS, DescriptionModel, build
from deepfeat.tasks.video_description.slots import SLOT_FILE, SlotPredictions, predict_slots, read_slots
from deepfeat.validation import check_choice, check_float, check_int

log = logging.getLogger(__name__)

UNITS = ("lstm", "rnn")


@dataclass
class DescribeOptions:
    """The model: ``arch`` (a / b / c), ``hidden`` units per LSTM layer, ``embed`` word (and slot token)
    embedding size, ``dropout``, ``unit``; the vocabulary: words seen ``min_count`` times,
    ``max_length`` words per sentence; ``training``: the shared loop's options (epochs, batch size,
    optimizer, patience, seed, device; monitored: ``bleu_4`` or ``perplexity``)."""

    arch: str = "c"
    hidden: int = 128
    embed: int = 64
    dropout: float = 0.3
    unit: str = "lstm"
    min_count: int = 1
    max_length: int = 20
    training: TrainingOptions = field(
        default_factory=lambda: TrainingOptions(epochs=30, batch_size=32, patience=4, monitor="bleu_4")
    )

    def validate(self) -> DescribeOptions:
        check_choice("architecture (--arch)", self.arch, ARCHS)
        check_int("hidden (LSTM units)", self.hidden, 1)
        check_int("embed (embedding size)", self.embed, 1)
        check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_choice("unit", self.unit, UNITS)
        check_int("min_count", self.min_count, 1)
        check_int("max_length (words per sentence)", self.max_length, 1)
        self.training.validate()
        check_choice("monitor", self.training.monitor, ("bleu_4", "perplexity"))
        return self

    def to_dict(self) -> dict:
        return {
            **{k: v for k, v in asdict(self).items() if k != "training"},
            "training": self.training.to_dict(),
        }


@dataclass
class DescribeTrainJob:
    """A training run: ``data`` (a description manifest, or a :class:`DescriptionSet`) and the slot
    predictions of its videos: ``slots`` (a slot file or :class:`SlotPredictions`) or ``classifiers``
    ({slot: trained clip classifier folder}; predictions are made once and kept in ``out/slots.json``);
    ``out``: the model folder (``model.pt``, checkpoints, ``history.json``)."""

    data: DescriptionSet | str | os.PathLike
    options: DescribeOptions = field(default_factory=DescribeOptions)
    slots: SlotPredictions | str | os.PathLike | None = None
    classifiers: Mapping[str, str | os.PathLike] | None = None
    store: str | os.PathLike | None = None
    out: str | os.PathLike | None = None

    def validate(self) -> DescribeTrainJob:
        self.options.validate()
        if (self.slots is None) == (not self.classifiers):
            raise ConfigError(
                "give the slot predictions either as a file (--slots) or as classifiers (--classifier)"
            )
        return self


@dataclass
class DescribeTrainResult:
    model: DescriptionModel
    training: TrainingResult
    n_train: int
    n_val: int
    model_path: Path | None = None


def load_inputs(job, out: Path | None, progress: bool) -> tuple[DescriptionSet, SlotPredictions]:
    """The manifest and the slot predictions of its videos (classifiers run once, their output kept)."""
    data = job.data if isinstance(job.data, DescriptionSet) else read_descriptions(job.data)
    if isinstance(job.slots, SlotPredictions):
        return data, job.slots
    if job.slots is not None:
        return data, read_slots(job.slots)
    cached = None if out is None else out / SLOT_FILE
    if cached is not None and cached.exists():
        return data, read_slots(cached)
    preds = predict_slots(data.ids, data.paths, dict(job.classifiers), store=job.store, progress=progress)
    if cached is not None:
        preds.write(cached)
    return data, preds


def sentence_data(
    data: DescriptionSet, rows: list[int], inputs: torch.Tensor, vocab: Vocabulary
) -> SentenceData:
    items, sentences = [], []
    for k, refs in enumerate(data.tokens(rows)):
        for tokens in refs:
            items.append(k)
            sentences.append(vocab.encode(tokens))
    return SentenceData(cond=inputs, item=np.asarray(items), sentences=sentences)


def train(
    job: DescribeTrainJob, *, progress: bool = True, echo: Callable[[str], None] | None = None
) -> DescribeTrainResult:
    """Train the model of ``job`` (see the module docstring)."""
    echo = echo or log.info
    job.validate()
    opts = job.options
    out = None if job.out is None else check_output_dir(job.out, "--out")
    data, preds = load_inputs(job, out, progress)
    train_rows, val_rows = data.rows("train"), data.rows("val")
    train_preds = preds.select([data.ids[r] for r in train_rows], "training videos")
    val_preds = preds.select([data.ids[r] for r in val_rows], "validation videos")
    train_tokens = [t for refs in data.tokens(train_rows) for t in refs]
    vocab = Vocabulary.build(train_tokens, min_count=opts.min_count, max_length=opts.max_length)
    torch.manual_seed(opts.training.seed)
    decoder, encoder = build(
        opts.arch, preds.sizes, len(vocab), opts.hidden, opts.embed, opts.dropout, opts.unit
    )
    model = DescriptionModel(opts.arch, dict(preds.slots), vocab, decoder, encoder)
    train_set = sentence_data(data, train_rows, model.inputs(train_preds), vocab)
    val_set = sentence_data(data, val_rows, model.inputs(val_preds), vocab)
    val_refs = data.tokens(val_rows)
    echo(
        f"{model.label}: {len(train_rows)} training videos ({len(train_set)} sentences), {len(val_rows)} "
        f"validation videos, {len(vocab)} words, slots "
        + ", ".join(f"{s} ({len(v)})" for s, v in preds.slots.items())
    )

    def validate(_decoder) -> dict:
        sentences = model.describe(val_preds, Strategy(beam=1))
        return {"bleu_4": score_captions(val_refs, sentences, metrics=("bleu",))["bleu_4"]}

    result = train_decoder(
        decoder,
        train_set,
        options=opts.training,
        val=val_set,
        validate=validate,
        checkpoint_dir=None if out is None else out / "checkpoints",
        progress=progress,
        echo=echo,
        conditioner=encoder,
    )
    model.to("cpu")
    model.meta = to_jsonable(
        {
            "options": opts.to_dict(),
            "data": {"manifest": data.name, "fingerprint": data.fingerprint()},
            "slot_source": preds.source,
            "history": result.history,
            "best_epoch": result.best_epoch,
            "seconds": result.seconds,
            "cpu_seconds": result.cpu_seconds,
        }
    )
    model_path = None
    if out is not None:
        if job.classifiers:  # kept with the model, so that 'generate' can read video files
            (out / "slot_models").mkdir(exist_ok=True)
            for slot, folder in job.classifiers.items():
                src = Path(folder)
                src = src / "model.pt" if src.is_dir() else src
                shutil.copyfile(src, out / "slot_models" / f"{slot}.pt")
            model.meta["slot_models"] = {s: f"slot_models/{s}.pt" for s in job.classifiers}
        model_path = model.save(out / "model.pt")
        write_json(out / "history.json", {"options": opts.to_dict(), **result.to_dict()})
    return DescribeTrainResult(model, result, len(train_rows), len(val_rows), model_path)
