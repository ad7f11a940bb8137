"""Training a captioner: images and captions in, a :class:`~deepfeat.tasks.captioning.model.CaptionModel`
out (in memory, and saved as ``out/model.pt`` with the split and the training record).

    from deepfeat.tasks.captioning import CaptionTrainJob, SequenceOptions, train

    job = CaptionTrainJob("flickr8k_mini/", out="models/2f", split="splits/flickr8k_mini.json",
                          sequence=SequenceOptions.small(architecture="lrcn_2f"))
    result = train(job)

Image features come from the store (computed once for every image of the data); the vocabulary is
built on the training captions; the sequence model trains with teacher forcing, validation CIDEr-D of
greedy captions after every epoch for early stopping, and a checkpoint per epoch (a rerun resumes).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from deepfeat.errors import ConfigError, DataError
from deepfeat.evaluation.job import ExtractionOptions
from deepfeat.features.store import FeatureStore
from deepfeat.fileio import check_output_dir
from deepfeat.report.provenance import environment
from deepfeat.report.writer import write_result
from deepfeat.tasks.captioning.data import (
    CaptionData,
    default_sizes,
    read_captions,
    read_split,
    seeded_split,
    write_split,
)
from deepfeat.tasks.captioning.features import FeatureSpec, ImageFeatures, conditioner, image_features
from deepfeat.tasks.captioning.model import CaptionModel
from deepfeat.tasks.text.decoders import (
    THESIS_DROPOUT,
    THESIS_EMBED,
    THESIS_HIDDEN,
    ConditionedDecoder,
    DecoderConfig,
)
from deepfeat.tasks.text.decoding import Strategy, generate
from deepfeat.tasks.text.metrics import cider_d
from deepfeat.tasks.text.training import SentenceData, TrainingOptions, TrainingResult, train_decoder
from deepfeat.tasks.text.vocabulary import Vocabulary
from deepfeat.validation import check_int

log = logging.getLogger(__name__)

#: the sizes of ``--small``: what trains in minutes on two CPU cores (see the README's measurements)
SMALL_HIDDEN = 256
SMALL_EMBED = 256

DataSpec = CaptionData | str | os.PathLike | Sequence[str | os.PathLike]


@dataclass
class SequenceOptions:
    """The sequence model and its text side: architecture (``lrcn_1u``, ``lrcn_2u``, ``lrcn_2f``), unit
    (``lstm``, ``rnn``), sizes (the thesis' 1000 / 1000 by default; :meth:`small` for CPU), dropout,
    vocabulary minimum count and caption length limit (words)."""

    architecture: str = "lrcn_2f"
    unit: str = "lstm"
    hidden_size: int = THESIS_HIDDEN
    embed_size: int = THESIS_EMBED
    dropout: float = THESIS_DROPOUT
    min_count: int = 5
    max_length: int = 20

    @classmethod
    def small(cls, **overrides) -> SequenceOptions:
        """The documented CPU scale: hidden and embedding sizes of 256 (``--small``)."""
        return cls(**{"hidden_size": SMALL_HIDDEN, "embed_size": SMALL_EMBED, **overrides})

    def decoder_config(self, vocab_size: int, cond_dim: int) -> DecoderConfig:
        return DecoderConfig(
            vocab_size=vocab_size,
            cond_dim=cond_dim,
            architecture=self.architecture,
            unit=self.unit,
            hidden_size=self.hidden_size,
            embed_size=self.embed_size,
            dropout=self.dropout,
        )

    def validate(self) -> SequenceOptions:
        self.decoder_config(10, 1).validate()
        check_int("min_count", self.min_count, 1)
        check_int("max_length (words per caption)", self.max_length, 1)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CaptionTrainJob:
    """Everything a training run needs, typed.

    ``data``: captioned images (CSV, folder with captions.csv, COCO JSON files, or a CaptionData).
    ``split``: a split file (:func:`~deepfeat.tasks.captioning.data.write_split`), a dict, or None for a
    seeded 80/10/10 split with ``split_seed``. ``store``: the feature store (default ``out/store``).
    ``val_images``: at most this many validation images for the per-epoch CIDEr-D (None: all).
    ``images``: the folder of the images when not found next to the caption file.
    """

    data: DataSpec
    out: str | os.PathLike
    split: str | os.PathLike | dict | None = None
    split_seed: int = 0
    features: FeatureSpec = field(default_factory=FeatureSpec)
    sequence: SequenceOptions = field(default_factory=SequenceOptions)
    training: TrainingOptions = field(default_factory=TrainingOptions)
    extraction: ExtractionOptions = field(default_factory=ExtractionOptions)
    store: str | os.PathLike | FeatureStore | None = None
    val_images: int | None = None
    images: str | os.PathLike | None = None

    def validate(self) -> None:
        """Cheap checks of every option, before any image is read or model built."""
        self.sequence.validate()
        self.training.validate()
        self.extraction.validate()
        check_int("split_seed", self.split_seed, 0)
        if self.val_images is not None:
            check_int("val_images", self.val_images, 1)
        if self.training.monitor not in ("cider_d", "perplexity"):
            raise ConfigError(f"monitor must be cider_d or perplexity, got {self.training.monitor!r}")


@dataclass
class CaptionTrainResult:
    """The trained model, its training history, and what it was trained on."""

    model: CaptionModel
    training: TrainingResult
    split: dict[str, list[str]]
    data: dict
    vocabulary: dict
    timings: dict
    provenance: dict

    def to_dict(self) -> dict:
        return {
            "model": self.model.name,
            "decoder": self.model.decoder.config.to_dict(),
            "features": self.model.features.to_dict(),
            "training": self.training.to_dict(),
            "data": self.data,
            "split_sizes": {k: len(v) for k, v in self.split.items()},
            "vocabulary": self.vocabulary,
            "timings": self.timings,
        }


def load_data(spec: DataSpec, images: str | os.PathLike | None = None) -> CaptionData:
    return spec if isinstance(spec, CaptionData) else read_captions(spec, images=images)


def resolve_split(data: CaptionData, split, seed: int) -> dict[str, list[str]]:
    if split is None:
        return seeded_split(data.ids, default_sizes(len(data)), seed)
    if isinstance(split, dict):
        return {k: list(split.get(k, [])) for k in ("train", "val", "test")}
    return read_split(split, data)


def rows_of(features: ImageFeatures, ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Feature rows of ``ids`` that have features (images that failed to decode are left out)."""
    index = {i: r for r, i in enumerate(features.ids)}
    kept = [i for i in ids if i in index]
    return np.array([index[i] for i in kept], dtype=np.int64), kept


def sentence_data(
    values: np.ndarray, refs: Sequence[Sequence[Sequence[str]]], vocab: Vocabulary
) -> SentenceData:
    items, sentences = [], []
    for i, caps in enumerate(refs):
        for tokens in caps:
            items.append(i)
            sentences.append(vocab.encode(tokens))
    return SentenceData(
        cond=torch.from_numpy(np.ascontiguousarray(values)), item=np.array(items), sentences=sentences
    )


def train(
    job: CaptionTrainJob, *, progress: bool = True, echo: Callable[[str], None] | None = None
) -> CaptionTrainResult:
    """Run ``job`` (see the module docstring); writes ``model.pt``, ``last.pt`` (the training
    checkpoint), ``split.json`` and ``training.json`` into ``job.out``."""
    echo = echo or log.info
    job.validate()
    out = check_output_dir(job.out, "out")
    data = load_data(job.data, job.images)
    echo(data.summary())
    split = resolve_split(data, job.split, job.split_seed)
    if not split["train"] or not split["val"]:
        raise DataError(f"{data.name}: the split needs training and validation images")
    backbone = job.features.load()
    job.features.check(backbone)
    store = job.store if isinstance(job.store, FeatureStore) else FeatureStore(job.store or out / "store")
    t0 = time.perf_counter()
    feats = image_features(
        data, job.features, backbone, store=store, extraction=job.extraction, progress=progress, echo=echo
    )
    feature_seconds = time.perf_counter() - t0
    tokens = data.tokens()
    train_rows, train_ids = rows_of(feats, split["train"])
    val_rows, val_ids = rows_of(feats, split["val"])
    if job.val_images is not None:
        val_rows, val_ids = val_rows[: job.val_images], val_ids[: job.val_images]
    train_refs = [tokens[data.index(i)] for i in train_ids]
    val_refs = [tokens[data.index(i)] for i in val_ids]
    seq = job.sequence
    vocab = Vocabulary.build(
        [t for caps in train_refs for t in caps], min_count=seq.min_count, max_length=seq.max_length
    )
    covered = 100 * vocab.coverage(t for caps in val_refs for t in caps)
    echo(
        f"vocabulary: {len(vocab)} entries (words seen {seq.min_count}+ times in the captions of "
        f"{len(train_ids)} training images); validation words covered: {covered:.1f}%"
    )
    train_values = feats.values[train_rows]
    module = _conditioner(job.features, backbone, feats, train_values)
    with torch.no_grad():
        cond_dim = int(module(torch.from_numpy(train_values[:2])).shape[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.training.seed)
        decoder = ConditionedDecoder(seq.decoder_config(len(vocab), cond_dim))
    train_data = sentence_data(train_values, train_refs, vocab)
    val_data = sentence_data(feats.values[val_rows], val_refs, vocab)
    val_values = torch.from_numpy(np.ascontiguousarray(feats.values[val_rows]))

    def validate(dec: ConditionedDecoder) -> dict:
        module.eval()
        with torch.no_grad():
            cond = torch.cat(
                [module(val_values[i : i + 256].to(_device(dec))) for i in range(0, len(val_values), 256)]
            )
        decoded = generate(dec, cond, Strategy(beam=1), max_length=vocab.max_length)
        return {"cider_d": cider_d(val_refs, [vocab.decode(t) for t in decoded.tokens])[0]}

    n_params = sum(p.numel() for p in decoder.parameters()) + sum(
        p.numel() for p in module.parameters() if p.requires_grad
    )
    echo(
        f"training {seq.architecture} ({seq.unit}, hidden {seq.hidden_size}, embedding {seq.embed_size}): "
        f"{n_params:,} parameters, {len(train_data)} captions"
    )

    result = train_decoder(
        decoder,
        train_data,
        options=job.training,
        val=val_data,
        validate=validate,
        checkpoint_dir=out,
        progress=progress,
        echo=echo,
        conditioner=module,
    )
    decoder.cpu()
    module.cpu()
    about = {
        "data": data.name,
        "data_source": data.source,
        "data_fingerprint": data.fingerprint(),
        "split_file": str((out / "split.json").resolve()),
        "store": str(store.root),
        "sequence": seq.to_dict(),
        "training": result.to_dict(),
        "n_parameters": n_params,
    }
    model = CaptionModel(vocab, decoder, module, job.features, feats.shape, about)
    model.save(out / "model.pt")
    write_split(out / "split.json", split, data=data.name, source=data.source, seed=job.split_seed)
    env = environment(job.training.device)
    provenance = {
        **env,
        "data": data.name,
        "data_fingerprint": data.fingerprint(),
        "backbone": backbone.name,
        "weights_id": backbone.weights_id,
        "features": job.features.to_dict(),
        "store": str(store.root),
    }
    outcome = CaptionTrainResult(
        model=model,
        training=result,
        split=split,
        data={"name": data.name, "source": data.source, "images": len(data), "failures": feats.failures},
        vocabulary={"size": len(vocab), "min_count": vocab.min_count, "max_length": vocab.max_length},
        timings={"features_seconds": feature_seconds, "training_seconds": result.seconds},
        provenance=provenance,
    )
    write_result(
        out,
        "training",
        outcome.to_dict(),
        kind="caption-training",
        provenance=provenance,
        device=job.training.device,
    )
    return outcome


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _conditioner(
    spec: FeatureSpec, backbone, feats: ImageFeatures, train_values: np.ndarray
) -> torch.nn.Module:
    """Standardisation with the training images' statistics (of the fine-tuned stages' initial
    output when fine-tuning)."""
    x = torch.from_numpy(np.ascontiguousarray(train_values))
    if spec.finetune_from is None:
        return conditioner(spec, x.mean(0), x.std(0))
    probe = conditioner(spec, torch.zeros(1), torch.ones(1), backbone=backbone, map_shape=feats.shape)
    probe.eval()
    with torch.no_grad():
        pooled = torch.cat([probe[0](x[i : i + 128]) for i in range(0, len(x), 128)])
    module = conditioner(spec, pooled.mean(0), pooled.std(0), backbone=backbone, map_shape=feats.shape)
    module[0].load_state_dict(probe[0].state_dict())
    return module
