"""Training a clip classifier (single-frame baseline or LRCN, RGB or flow) on the training videos.

As in the thesis (Section 4.3), training uses clips of 16 consecutive frames, one drawn at random from
every training video per pass (``clips_per_video`` to draw more), batches of 24 clips, and a softmax
loss at every time step (the average over the steps of the batch). Frame features come from the store
(:mod:`.features`); with ``fine_tune="top"`` the CNN's top stages train too, on cached maps of the
layer below them. Departures from the thesis, for frozen features on a CPU: Adam (``optimizer="sgd"``
gives SGD with momentum 0.9), no crops or mirroring (features are computed once; mirroring would also
swap left and right motions), dropout 0.5 on the frame features.

Checkpoints (:mod:`deepfeat.checkpoint`: nothing in them is executed when read): ``last.pt`` after
every epoch (network, optimizer, sampling generator and random states), so that running the same
training again resumes after the last finished epoch and ends exactly where an uninterrupted run
would (asking for more epochs continues a finished run); ``model.pt`` at the end, the trained
classifier with everything needed to use it (:func:`load_classifier`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from deepfeat.backbones.registry import load_backbone
from deepfeat.checkpoint import keeps_rng, load_checkpoint, save_checkpoint
from deepfeat.data.videosets import VideoDataset, open_videos
from deepfeat.errors import CheckpointError, ConfigError, DataError
from deepfeat.features.store import FeatureStore
from deepfeat.fileio import check_output_dir, to_jsonable
from deepfeat.report.wording import counted, listed
from deepfeat.report.writer import write_result
from deepfeat.tasks.video.features import STREAMS, FrameFeatures, GridPooled, StreamFeatures
from deepfeat.tasks.video.features import stream_features as extract_stream
from deepfeat.tasks.video.models import MODELS, TopStages, VideoClassifier, build_net, top_spec
from deepfeat.validation import check_choice, check_device, check_float, check_int

log = logging.getLogger(__name__)

TRAIN_KIND = "video-train"
MODEL_KIND = "video-model"
OPTIMIZERS = ("adam", "sgd")
FINE_TUNE = ("none", "top")
#: LSTM units per input stream (the thesis' choice on UCF-101's validation set)
DEFAULT_HIDDEN = {"rgb": 256, "flow": 1024}


@dataclass
class TrainOptions:
    """The model and its training: ``model`` (single / lrcn), ``stream`` (rgb / flow), ``hidden`` LSTM
    units (None: 256 for RGB, 1024 for flow), ``layers`` stacked LSTMs, dropout on the frame features
    (``dropout_in``) and on the LSTM output (``dropout``), ``clip_length`` frames per training and test
    clip, ``clip_stride`` between test clips, ``clips_per_video`` drawn per epoch, ``epochs``,
    ``batch_size`` clips per step, ``optimizer`` (adam / sgd), ``lr``, ``weight_decay``,
    ``fine_tune`` (none: frozen CNN; top: its top stages train), ``seed``, ``device``."""

    model: str = "lrcn"
    stream: str = "rgb"
    hidden: int | None = None
    layers: int = 1
    dropout_in: float = 0.5
    dropout: float = 0.5
    clip_length: int = 16
    clip_stride: int = 8
    clips_per_video: int = 1
    epochs: int = 30
    batch_size: int = 24
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    fine_tune: str = "none"
    seed: int = 0
    device: str | None = None

    def validate(self) -> None:
        check_choice("model", self.model, MODELS)
        check_choice("input stream", self.stream, STREAMS)
        if self.hidden is not None:
            check_int("hidden (LSTM units)", self.hidden, 1)
        check_int("layers (stacked LSTMs)", self.layers, 1)
        check_float("dropout_in", self.dropout_in, 0, 1, high_open=True)
        check_float("dropout", self.dropout, 0, 1, high_open=True)
        check_int("clip_length", self.clip_length, 1)
        check_int("clip_stride", self.clip_stride, 1)
        check_int("clips_per_video", self.clips_per_video, 1)
        check_int("epochs", self.epochs, 1)
        check_int("batch_size (clips per step)", self.batch_size, 1)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_float("lr", self.lr, 0, low_open=True)
        check_float("weight_decay", self.weight_decay, 0)
        check_choice("fine_tune", self.fine_tune, FINE_TUNE)
        check_device(self.device)

    @property
    def units(self) -> int:
        return self.hidden if self.hidden is not None else DEFAULT_HIDDEN[self.stream]

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": self.units}


@dataclass
class TrainJob:
    """A training run: ``data`` (a :class:`VideoDataset` or its spelling: a class-per-folder tree
    with UCF-101 split lists ``split`` N found there or in ``lists``, or a manifest); the videos of its
    train split are used (all of them when it has none). ``store``: the feature store (default
    ``out/store``); ``out``: the model folder (checkpoints, ``model.pt``, ``history.json``)."""

    data: VideoDataset | str | os.PathLike
    options: TrainOptions = field(default_factory=TrainOptions)
    features: FrameFeatures = field(default_factory=FrameFeatures)
    split: int = 1
    lists: str | os.PathLike | None = None
    store: FeatureStore | str | os.PathLike | None = None
    out: str | os.PathLike | None = None

    def validate(self) -> None:
        self.options.validate()
        self.features.validate()
        check_int("split", self.split, 1)


@dataclass
class TrainResult:
    """The trained classifier, its per-epoch history and an account of the training features."""

    classifier: VideoClassifier
    history: list[dict]
    n_videos: int
    failures: list[tuple[str, str]]
    failed_videos: list[tuple[str, str]]
    model_path: Path | None = None
    resumed_from: int = 0


def _videos(data, split: int, lists, part: str) -> VideoDataset:
    videos = data if isinstance(data, VideoDataset) else open_videos(data, split=split, lists=lists)
    return videos.split(part)


def training_features(
    job: TrainJob, backbone, videos, store, progress: bool
) -> tuple[StreamFeatures, TopStages | None]:
    """The training videos' frame features (maps of the layer below the top stages when those train)."""
    opts, spec = job.options, job.features
    if opts.fine_tune == "top":
        top = top_spec(backbone, spec.layer)
        feats = extract_stream(
            videos,
            opts.stream,
            spec,
            backbone,
            method=GridPooled(top.source, 0),
            store=store,
            progress=progress,
        )
        return feats, TopStages(backbone, top, spec.grid)
    backbone.catalog.get(spec.layer)  # a clear error for an unknown layer
    return extract_stream(videos, opts.stream, spec, backbone, store=store, progress=progress), None


def _sample_batch(sequences, picks, length: int, gen: torch.Generator):
    """Random windows of ``length`` frames (whole videos when shorter), zero-padded: (x, mask)."""
    clips = []
    for i in picks:
        seq = sequences[i]
        n = min(length, len(seq))
        start = int(torch.randint(0, len(seq) - n + 1, (1,), generator=gen))
        clips.append(np.asarray(seq[start : start + n], dtype=np.float32))
    longest = max(len(c) for c in clips)
    x = np.zeros((len(clips), longest, *clips[0].shape[1:]), np.float32)
    mask = np.zeros((len(clips), longest), bool)
    for j, c in enumerate(clips):
        x[j, : len(c)] = c
        mask[j, : len(c)] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


def _optimizer(opts: TrainOptions, params):
    if opts.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opts.lr, momentum=0.9, weight_decay=opts.weight_decay)
    return torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)


def train(job: TrainJob, *, progress: bool = True, echo: Callable[[str], None] | None = None) -> TrainResult:
    """Train the classifier of ``job`` (see the module docstring); returns it with its history."""
    echo = echo or log.info
    job.validate()
    opts, spec = job.options, job.features
    out = None if job.out is None else check_output_dir(job.out, "out")
    store = job.store if job.store is not None or out is None else out / "store"
    videos = _videos(job.data, job.split, job.lists, "train")
    echo(videos.summary())
    for where, why in videos.ignored:
        echo(f"ignored {where}: {why}")
    counts = np.bincount(videos.targets, minlength=len(videos.classes))
    if not counts.all():
        empty = [c for c, n in zip(videos.classes, counts) if n == 0]
        echo(
            f"warning: {counted(len(empty), 'class', 'classes')} without a training video (the model "
            "never predicts them): " + listed(empty, 10, repr)
        )
    backbone = load_backbone(spec.backbone, weights=spec.weights)
    feats, top = training_features(job, backbone, videos, store, progress)
    if feats.failed_videos:
        echo(
            f"warning: {counted(len(feats.failed_videos), 'training video')} without usable frames "
            "(left out): " + listed(feats.failed_videos, 10, lambda f: f"{f[0]} ({f[1]})")
        )
    device = check_device(opts.device)
    torch.manual_seed(opts.seed)
    net = build_net(
        opts.model,
        feats.frame_shape,
        len(videos.classes),
        hidden=opts.units,
        layers=opts.layers,
        dropout_in=opts.dropout_in,
        dropout=opts.dropout,
        top=top,
    ).to(device)
    optimizer = _optimizer(opts, [p for p in net.parameters() if p.requires_grad])
    gen = torch.Generator().manual_seed(opts.seed)
    config = {
        **{k: v for k, v in opts.to_dict().items() if k not in ("epochs", "device")},
        "features": spec.to_dict(backbone),
        "backbone": backbone.provenance(),
        "top": None if top is None else top_spec(backbone, spec.layer).source,
        "videos": videos.fingerprint(),
    }
    config = to_jsonable(config)
    history, start = _resume(out, config, net, optimizer, gen)
    if start:
        echo(f"resuming after epoch {start} ({out / 'last.pt'})")
    sequences, targets = feats.sequences, torch.from_numpy(feats.targets)
    for epoch in range(start, opts.epochs):
        t0 = time.perf_counter()
        loss, acc = _epoch(net, optimizer, sequences, targets, opts, gen, device, epoch, progress)
        history.append(
            {"epoch": epoch + 1, "loss": loss, "clip_accuracy": acc, "seconds": time.perf_counter() - t0}
        )
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{opts.epochs}: loss {loss:.4f}, train clips {100 * acc:.1f}%")
        if out is not None:
            state = {
                "net": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": gen.get_state(),
            }
            meta = {"config": config, "epoch": epoch + 1, "history": history, "classes": videos.classes}
            save_checkpoint(out / "last.pt", state, kind=TRAIN_KIND, meta=meta)
    net.eval()
    full_config = {**config, "epochs": opts.epochs}
    classifier = VideoClassifier(net, videos.classes, full_config, feats.frame_shape)
    model_path = None
    if out is not None:
        model_path = save_classifier(
            classifier, out / "model.pt", history=history, provenance=feats.provenance
        )
        write_result(
            out,
            "history",
            {"config": full_config, "classes": videos.classes, "history": history},
            kind="video-training",
            provenance=feats.provenance,
        )
    return TrainResult(
        classifier=classifier,
        history=history,
        n_videos=len(feats.sequences),
        failures=feats.failures,
        failed_videos=feats.failed_videos,
        model_path=model_path,
        resumed_from=start,
    )


def _resume(out: Path | None, config: dict, net, optimizer, gen) -> tuple[list[dict], int]:
    if out is None or not (out / "last.pt").exists():
        return [], 0
    ck = load_checkpoint(out / "last.pt", kind=TRAIN_KIND)
    if ck.meta.get("config") != config:
        raise ConfigError(
            f"{out} holds a model trained with other settings or data; "
            "use another out folder (--out) or the same settings"
        )
    try:
        net.load_state_dict(ck.state["net"])
        optimizer.load_state_dict(ck.state["optimizer"])
        gen.set_state(ck.state["generator"])
        history, epoch = list(ck.meta["history"]), int(ck.meta["epoch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{out / 'last.pt'}: damaged training checkpoint ({exc})") from None
    ck.restore_rng()
    return history, epoch


def _epoch(net, optimizer, sequences, targets, opts: TrainOptions, gen, device, epoch: int, progress: bool):
    net.train()
    n = len(sequences)
    order = (torch.randperm(n * opts.clips_per_video, generator=gen) % n).numpy()
    total, correct, seen = 0.0, 0, 0
    steps = range(0, len(order), opts.batch_size)
    for i in tqdm(steps, desc=f"epoch {epoch + 1}", unit="batch", disable=not progress, leave=False):
        picks = order[i : i + opts.batch_size]
        x, mask = _sample_batch(sequences, picks, opts.clip_length, gen)
        x, mask, y = x.to(device), mask.to(device), targets[picks].to(device)
        logits = net(x)
        steps_y = y[:, None].expand(-1, logits.shape[1])
        loss = F.cross_entropy(logits[mask], steps_y[mask])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            probs = (logits.softmax(-1) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            correct += int((probs.argmax(1) == y).sum())
        total += float(loss.detach()) * len(picks)
        seen += len(picks)
    net.eval()
    return total / seen, correct / seen


def save_classifier(classifier: VideoClassifier, path: str | os.PathLike, **meta) -> Path:
    """Write a trained classifier (network, classes, settings) as a ``video-model`` checkpoint."""
    record = {
        "config": classifier.config,
        "classes": classifier.classes,
        "frame_shape": list(classifier.frame_shape),
    }
    state = {"net": {k: v.detach().cpu() for k, v in classifier.net.state_dict().items()}}
    return save_checkpoint(path, state, kind=MODEL_KIND, meta={**record, **meta}, rng=False)


@keeps_rng
def load_classifier(path: str | os.PathLike, device: str | None = None) -> VideoClassifier:
    """A classifier saved by :func:`train` (a model folder or its ``model.pt``), without running code
    from the file; the backbone is loaded only when the model fine-tuned its top stages."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise DataError(f"{path}: no trained video model here (train one with 'deepfeat video train')")
    ck = load_checkpoint(path, kind=MODEL_KIND)
    try:
        config, classes, shape = ck.meta["config"], list(ck.meta["classes"]), tuple(ck.meta["frame_shape"])
        top = None
        if config.get("top"):
            feats = FrameFeatures.from_dict(config["features"])
            backbone = load_backbone(feats.backbone, weights=feats.weights)
            top = TopStages(backbone, top_spec(backbone, feats.layer), feats.grid)
        net = build_net(
            config["model"],
            shape,
            len(classes),
            hidden=int(config["hidden"]),
            layers=int(config["layers"]),
            dropout_in=float(config["dropout_in"]),
            dropout=float(config["dropout"]),
            top=top,
        )
        net.load_state_dict(ck.state["net"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: damaged video model ({exc})") from None
    classifier = VideoClassifier(net, classes, config, shape)
    return classifier.to(check_device(device))
