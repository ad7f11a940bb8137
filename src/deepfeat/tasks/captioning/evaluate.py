"""Evaluating captioners: generation metrics per model and strategy, retrieval per model, and the
baselines, on one set of images, as a :class:`CaptionEvaluation` in memory (files:
:func:`deepfeat.tasks.captioning.report.write_report`).

    job = CaptionEvalJob("flickr8k_mini/", models=["models/2f", "models/1u"], on="test",
                         strategies=[Strategy(beam=1), Strategy(beam=5), Strategy(samples=100)])
    evaluation = evaluate(job)

Which images: ``on="test"`` / ``"val"`` / ``"train"`` take that part of the split (``split``, or the
split saved with the first model when the data is the one it was trained on); ``"all"`` takes every
image (out-of-domain data such as COCO for a Flickr8k model). Baselines need the training images and
captions: those of the first model's training data (or ``train_data`` / ``train_split``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepfeat.errors import ConfigError, DataError
from deepfeat.evaluation.job import ExtractionOptions
from deepfeat.features.store import FeatureStore
from deepfeat.report.provenance import environment
from deepfeat.tasks.captioning.baselines import (
    constant_caption,
    human_agreement_sets,
    nearest_neighbour_captions,
)
from deepfeat.tasks.captioning.data import CaptionData, read_split
from deepfeat.tasks.captioning.features import ImageFeatures, image_features
from deepfeat.tasks.captioning.model import CaptionModel
from deepfeat.tasks.captioning.retrieval import retrieval
from deepfeat.tasks.captioning.train import DataSpec, load_data, rows_of
from deepfeat.tasks.text.decoding import Strategy, pair_log_likelihood
from deepfeat.tasks.text.metrics import FAMILIES, Meteor, meteor_unavailable, score_captions
from deepfeat.validation import check_choice, check_device, check_int

log = logging.getLogger(__name__)

PARTS = ("test", "val", "train", "all")
DEFAULT_STRATEGIES = (
    Strategy(beam=1),
    Strategy(beam=3),
    Strategy(beam=5),
    Strategy(samples=100, temperature=1.5),
)


@dataclass
class CaptionEvalJob:
    """What to evaluate: data and the part of it, models (saved folders / files or loaded models),
    generation strategies, which metric families, retrieval and baselines. ``seed``: sampling seed."""

    data: DataSpec
    models: Sequence[str | os.PathLike | CaptionModel]
    on: str = "test"
    split: str | os.PathLike | dict | None = None
    strategies: Sequence[Strategy] = DEFAULT_STRATEGIES
    metrics: Sequence[str] = FAMILIES
    retrieval: bool = True
    baselines: bool = True
    train_data: DataSpec | None = None
    train_split: str | os.PathLike | dict | None = None
    store: str | os.PathLike | FeatureStore | None = None
    extraction: ExtractionOptions = field(default_factory=ExtractionOptions)
    max_images: int | None = None
    examples: int = 8
    seed: int = 0
    device: str | None = None
    images: str | os.PathLike | None = None

    def validate(self) -> None:
        check_choice("on (which images)", self.on, PARTS)
        if not self.models:
            raise ConfigError("no model to evaluate; give at least one (--model)")
        if not self.strategies:
            raise ConfigError("no generation strategy given")
        for s in self.strategies:
            if not isinstance(s, Strategy):
                raise ConfigError(f"strategies are Strategy objects, got {type(s).__name__}")
            s.validate()
        for m in self.metrics:
            check_choice("metric", m, FAMILIES)
        if self.max_images is not None:
            check_int("max_images", self.max_images, 1)
        check_int("examples", self.examples, 0)
        check_int("seed", self.seed, 0)
        self.extraction.validate()


@dataclass
class CaptionEvaluation:
    """Results in memory: one generation row per (model, strategy) and per baseline (corpus scores, and
    per-image scores with the captions), retrieval per model, examples, and provenance."""

    rows: list[dict]
    retrieval: dict[str, dict]
    examples: list[dict]
    images: list[str]
    about: dict
    provenance: dict

    def to_dict(self) -> dict:
        return {
            "about": self.about,
            "images": self.images,
            "generation": self.rows,
            "retrieval": self.retrieval,
            "examples": self.examples,
        }


def _split_of(job: CaptionEvalJob, data: CaptionData, model: CaptionModel) -> dict[str, list[str]] | None:
    if job.split is not None:
        return job.split if isinstance(job.split, dict) else read_split(job.split, data)
    if model.about.get("data_fingerprint") == data.fingerprint() and model.about.get("split_file"):
        try:
            return read_split(model.about["split_file"], data)
        except DataError:
            return None
    return None


def _features(model: CaptionModel, data: CaptionData, job, cache: dict, progress, echo) -> ImageFeatures:
    key = (repr(sorted(model.features.to_dict().items())), data.fingerprint())
    if key not in cache:
        backbone = model.features.load()
        store = job.store if job.store is not None else model.about.get("store")
        cache[key] = image_features(
            data,
            model.features,
            backbone,
            store=None if store is None else _store(store),
            extraction=job.extraction,
            progress=progress,
            echo=echo,
        )
    return cache[key]


def _store(store) -> FeatureStore:
    return store if isinstance(store, FeatureStore) else FeatureStore(store)


def _row(
    name: str, kind: str, candidates, refs, ids, metrics, strategy: dict | None = None, meteor=None
) -> dict:
    scores = score_captions(refs, candidates, metrics=metrics, meteor_scorer=meteor)
    return {
        "name": name,
        "kind": kind,
        "strategy": strategy,
        "corpus": scores.corpus,
        "unavailable": scores.unavailable,
        "per_image": {m: dict(zip(ids, v.tolist())) for m, v in scores.per_image.items()} if ids else {},
        "captions": dict(zip(ids, [" ".join(c) for c in candidates])) if ids else {},
    }


def evaluate(
    job: CaptionEvalJob, *, progress: bool = True, echo: Callable[[str], None] | None = None
) -> CaptionEvaluation:
    """Run ``job`` (see the module docstring)."""
    echo = echo or log.info
    job.validate()
    models = [m if isinstance(m, CaptionModel) else CaptionModel.load(m) for m in job.models]
    labels = model_labels(job.models, models)
    for model in models:  # before any extraction
        for strategy in job.strategies:
            model.check_strategy(strategy)
    device = check_device(job.device)
    data = load_data(job.data, job.images)
    echo(data.summary())
    split = _split_of(job, data, models[0])
    if job.on == "all":
        ids = list(data.ids)
    elif split is None:
        raise ConfigError(
            f"{data.name}: no split to take the {job.on!r} images from; give a split file, or on='all'"
        )
    else:
        ids = list(split[job.on])
    if job.max_images is not None:
        ids = ids[: job.max_images]
    overlap = _training_overlap(job, models, data, ids)
    if overlap:
        echo(
            f"warning: {overlap} of {len(ids)} evaluated images are training images of a model "
            "(on='all' on its own training data): their scores are not held-out"
        )
    meteor = Meteor() if "meteor" in job.metrics and meteor_unavailable() is None else None
    opts = {"metrics": job.metrics, "meteor": meteor}
    try:
        rows, retrievals, images, refs, cache = _run(
            job, models, labels, data, ids, device, opts, progress, echo
        )
    finally:
        if meteor is not None:
            meteor.close()
    examples = _examples(job, data, images, rows)
    about = {
        "data": data.name,
        "data_source": data.source,
        "on": job.on,
        "n_images": len(images),
        "n_references": sum(len(r) for r in refs),
        "training_images_evaluated": overlap,
        "skipped": _skipped(data, ids, images, cache),
        "models": [
            {
                "name": label,
                "decoder": m.decoder.config.to_dict(),
                "features": m.features.to_dict(),
                "vocabulary": len(m.vocabulary),
                "training": m.about,
            }
            for m, label in zip(models, labels)
        ],
        "strategies": [s.to_dict() for s in job.strategies],
        "seed": job.seed,
    }
    provenance = {**environment(job.device), "data": data.name, "data_fingerprint": data.fingerprint()}
    return CaptionEvaluation(
        rows=rows, retrieval=retrievals, examples=examples, images=images, about=about, provenance=provenance
    )


def model_labels(sources: Sequence, models: Sequence[CaptionModel]) -> list[str]:
    """Each model's name in results: its architecture (``CaptionModel.name``), and where two models
    share one, also the folder or file it was loaded from (else its position)."""
    names = [m.name for m in models]
    labels = []
    for i, (source, name) in enumerate(zip(sources, names)):
        if names.count(name) == 1:
            labels.append(name)
        elif isinstance(source, str | os.PathLike):
            path = Path(source)
            labels.append(f"{name} ({path.parent.name if path.name == 'model.pt' else path.name})")
        else:
            labels.append(f"{name} (#{i + 1})")
    if len(set(labels)) < len(labels):  # the same folder name twice: positions decide
        labels = [f"{name} (#{i + 1})" if names.count(name) > 1 else name for i, name in enumerate(names)]
    return labels


def _run(job, models, labels, data, ids, device, opts, progress, echo):
    """Generation rows and retrieval of every model, then the baselines."""
    tokens = data.tokens()
    cache: dict = {}
    rows, retrievals = [], {}
    images: list[str] | None = None
    for model, label in zip(models, labels):
        model.decoder.to(device)
        model.conditioner.to(device)
        feats = _features(model, data, job, cache, progress, echo)
        rows_idx, kept = rows_of(feats, ids)
        images = kept if images is None else [i for i in images if i in set(kept)]
        refs = [tokens[data.index(i)] for i in kept]
        values = feats.values[rows_idx]
        for strategy in job.strategies:
            t0 = time.perf_counter()
            words, _ = model.caption(values, strategy, ids=kept, seed=job.seed, progress=progress)
            seconds = time.perf_counter() - t0
            row = _row(label, "model", words, refs, kept, strategy=strategy.to_dict(), **opts)
            empty = sum(1 for w in words if not w)
            row.update(
                strategy_name=strategy.name,
                seconds=seconds,
                images_per_second=len(kept) / max(seconds, 1e-9),
                empty_captions=empty,
            )
            rows.append(row)
            echo(f"{label}, {strategy.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row["corpus"].items()))
            if empty:
                echo(f"  {empty_note(empty, len(words))}")
        if job.retrieval:
            t0 = time.perf_counter()
            captions = [model.vocabulary.encode(t) for caps in refs for t in caps]
            owner = [i for i, caps in enumerate(refs) for _ in caps]
            scores = pair_log_likelihood(model.decoder, model.conditions(values), captions, progress=progress)
            retrievals[label] = {**retrieval(scores, owner), "seconds": time.perf_counter() - t0}
            r = retrievals[label]
            echo(
                f"{label} retrieval: image->caption R@1 {r['image_to_caption']['R@1']:.1f}, "
                f"caption->image R@1 {r['caption_to_image']['R@1']:.1f} ({r['seconds']:.0f} s)"
            )
    assert images is not None
    refs = [tokens[data.index(i)] for i in images]
    if job.baselines:
        rows += _baselines(job, models[0], data, images, refs, cache, progress, echo, opts)
    return rows, retrievals, images, refs, cache


def empty_note(empty: int, total: int) -> str:
    """The warning for generated sentences without a word."""
    return (
        f"{empty} of {total} generated captions are empty (the model ends the sentence at once); "
        "a minimum length of 1 (Strategy(min_length=1), --min-length 1) rules the empty sentence out"
    )


def _training_overlap(
    job: CaptionEvalJob, models: list[CaptionModel], data: CaptionData, ids: list[str]
) -> int:
    """How many of ``ids`` some model was trained on (known where the model records this data and split)."""
    asked, most = set(ids), 0
    for model in models:
        if model.about.get("data_fingerprint") != data.fingerprint() or not model.about.get("split_file"):
            continue
        try:
            split = read_split(model.about["split_file"], data)
        except DataError:
            continue
        most = max(most, len(asked & set(split.get("train", []))))
    return most


def _skipped(data: CaptionData, ids: list[str], images: list[str], cache: dict) -> list[list[str]]:
    """[path, reason] of every asked-for image that got no caption (its file could not be used)."""
    reasons = {path: reason for feats in cache.values() for path, reason in feats.failures}
    kept = set(images)
    paths = [str(data.paths[data.index(i)]) for i in ids if i not in kept]
    return [[path, reasons.get(path, "no features")] for path in paths]


def _baselines(
    job, model: CaptionModel, data: CaptionData, images, refs, cache, progress, echo, opts
) -> list[dict]:
    source = job.train_data if job.train_data is not None else model.about.get("data_source")
    out = []
    if source:
        train_data = load_data(source)
        train_split = job.train_split if job.train_split is not None else model.about.get("split_file")
        if isinstance(train_split, dict) or not train_split:
            split = train_split or None
        else:
            split = read_split(train_split, train_data)
        train_ids = list(split["train"]) if split else list(train_data.ids)
        train_tokens = train_data.tokens()
        feats = _features(model, train_data, job, cache, progress, echo)
        rows_idx, train_ids = rows_of(feats, train_ids)
        train_refs = [train_tokens[train_data.index(i)] for i in train_ids]
        t0 = time.perf_counter()
        caption, train_score = constant_caption(train_refs, progress=progress)
        text = " ".join(caption)
        took = time.perf_counter() - t0
        echo(f"best constant caption (training CIDEr-D {train_score:.3f}): {text!r} ({took:.0f} s)")
        row = _row("constant caption", "baseline", [caption] * len(images), refs, images, **opts)
        out.append({**row, "caption": text, "train_cider_d": train_score})
        eval_feats = _features(model, data, job, cache, progress, echo)
        eval_rows, _ = rows_of(eval_feats, images)
        query = model.conditions(eval_feats.values[eval_rows]).cpu().numpy()
        train = model.conditions(feats.values[rows_idx]).cpu().numpy()
        nn_caps, nearest = nearest_neighbour_captions(query, train, train_refs)
        row = _row("nearest neighbour", "baseline", nn_caps, refs, images, **opts)
        row["neighbours"] = dict(zip(images, [train_ids[j] for j in nearest]))
        out.append(row)
    else:
        echo("no training data recorded with the model: constant and nearest-neighbour baselines skipped")
    h_refs, h_cands, _ = human_agreement_sets(refs)
    if h_cands:
        row = _row("human (1 vs 4)", "baseline", h_cands, h_refs, None, **opts)
        row["note"] = "each reference against the image's others, pooled over the held-out choice"
        out.append(row)
    return out


def _examples(job: CaptionEvalJob, data: CaptionData, images: list[str], rows: list[dict]) -> list[dict]:
    out = []
    for image in images[: job.examples]:
        i = data.index(image)
        generated = {
            " / ".join(filter(None, [r["name"], r.get("strategy_name")])): r["captions"].get(image)
            for r in rows
            if r["captions"]
        }
        out.append(
            {
                "image": image,
                "path": str(data.paths[i]),
                "references": list(data.captions[i]),
                "generated": generated,
            }
        )
    return out
