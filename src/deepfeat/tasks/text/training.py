"""Teacher-forced training of a :class:`~deepfeat.tasks.text.decoders.ConditionedDecoder` on sentences
with their conditioning vectors (thesis Section 4.2: minimise -1/|D| sum over sentences of sum_t
log p(w_t | w_<t, s)).

- Batches are padding-aware: every epoch the sentences are shuffled, sorted by length within pools
  of 20 batches and cut into batches padded to their own longest sentence; padding is masked out of
  the loss. The batch order is a function of (seed, epoch) only.
- The gradient's global L2 norm is clipped (``clip_norm``; 10 as in LRCN's Caffe solver).
- After every epoch: training loss and perplexity, validation perplexity, the task's validation
  metrics (``validate(decoder)``; for captioning CIDEr-D of greedy captions), and a checkpoint
  (:mod:`deepfeat.checkpoint`, kind ``"decoder-training"``: model, optimizer, best weights, history,
  random states) written atomically. A run given the same ``checkpoint_dir`` resumes after the last
  finished epoch and ends exactly where the uninterrupted run would (tested); a checkpoint written for
  other data or options is refused.
- Early stopping: training ends when the monitored validation score has not improved for
  ``patience`` epochs; the best epoch's weights are put back into the decoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from deepfeat.checkpoint import load_checkpoint, save_checkpoint
from deepfeat.errors import ConfigError
from deepfeat.tasks.text.decoders import ConditionedDecoder, word_log_probs
from deepfeat.tasks.text.decoding import pad_sentences
from deepfeat.tasks.text.vocabulary import PAD_ID
from deepfeat.validation import check_choice, check_device, check_float, check_int

log = logging.getLogger(__name__)

KIND = "decoder-training"
OPTIMIZERS = ("adam", "sgd")
#: default learning rates per optimizer
LEARNING_RATES = {"adam": 1e-3, "sgd": 0.1}
POOL_BATCHES = 20


@dataclass
class TrainingOptions:
    """How a decoder is trained. ``monitor``: the validation score early stopping follows
    (``perplexity``, lower is better, or a metric returned by ``validate``, higher is better)."""

    epochs: int = 30
    batch_size: int = 100
    optimizer: str = "adam"
    learning_rate: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip_norm: float = 10.0
    patience: int = 3
    monitor: str = "cider_d"
    seed: int = 0
    device: str | None = None

    def validate(self) -> TrainingOptions:
        check_int("epochs", self.epochs, 1)
        check_int("batch_size", self.batch_size, 1)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.learning_rate is not None:
            check_float("learning_rate", self.learning_rate, 0.0, low_open=True)
        check_float("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_float("weight_decay", self.weight_decay, 0.0)
        check_float("clip_norm", self.clip_norm, 0.0, low_open=True)
        check_int("patience (epochs without improvement)", self.patience, 1)
        check_int("seed", self.seed, 0)
        return self

    @property
    def lr(self) -> float:
        return LEARNING_RATES[self.optimizer] if self.learning_rate is None else float(self.learning_rate)

    def to_dict(self) -> dict:
        return {**asdict(self), "learning_rate": self.lr}


@dataclass
class SentenceData:
    """Sentences (word indices ending with ``<eos>``) and, for each, the row of ``cond`` (one
    conditioning input per item: an image's features, a video's slot predictions) it describes.
    ``cond`` is the decoder's conditioning vector itself, or the input of a ``conditioner`` module
    trained along (fine-tuned CNN stages, a sequence encoder)."""

    cond: torch.Tensor
    item: np.ndarray
    sentences: list[list[int]]

    def __post_init__(self) -> None:
        self.item = np.asarray(self.item, dtype=np.int64)
        if len(self.item) != len(self.sentences):
            raise ConfigError(f"{len(self.sentences)} sentences but {len(self.item)} item indices")
        if len(self.sentences) == 0:
            raise ConfigError("no sentence to train on")
        if self.item.min() < 0 or self.item.max() >= len(self.cond):
            raise ConfigError(f"item indices must lie in [0, {len(self.cond)})")

    def __len__(self) -> int:
        return len(self.sentences)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.cond.detach().cpu().numpy()).tobytes())
        h.update(self.item.tobytes())
        h.update(json.dumps(self.sentences).encode())
        return h.hexdigest()


@dataclass
class TrainingResult:
    """Per-epoch history, the best epoch (1-based) and its monitored score, and how training ended."""

    history: list[dict]
    best_epoch: int
    best_score: float | None
    stopped_early: bool
    resumed_from: int = 0
    options: dict = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Sentence indices of each batch of ``epoch``: shuffled, length-sorted within pools, shuffled."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    batches = []
    pool = batch_size * POOL_BATCHES
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sentence_nll(
    decoder: ConditionedDecoder, cond: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of the targets (padding excluded) and the number of words."""
    logp = word_log_probs(decoder(cond, inputs))
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = targets != PAD_ID
    return nll.masked_fill(~mask, 0.0).sum(), int(mask.sum())


@torch.no_grad()
def perplexity(
    decoder: ConditionedDecoder,
    data: SentenceData,
    batch_size: int = 256,
    conditioner: torch.nn.Module | None = None,
) -> float:
    """Per-word perplexity of ``data`` under the decoder (``<eos>`` counted as a word)."""
    decoder.eval()
    conditioner = conditioner or torch.nn.Identity()
    conditioner.eval()
    device = next(decoder.parameters()).device
    total, words = 0.0, 0
    lengths = [len(s) for s in data.sentences]
    order = np.argsort(lengths, kind="stable")
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        inputs, targets = pad_sentences([data.sentences[r] for r in rows], device)
        cond = conditioner(data.cond[data.item[rows]].to(device))
        nll, n = sentence_nll(decoder, cond, inputs, targets)
        total += float(nll)
        words += n
    return math.exp(total / max(1, words))


def _optimizer(modules: torch.nn.Module, options: TrainingOptions) -> torch.optim.Optimizer:
    params = [p for p in modules.parameters() if p.requires_grad]
    if options.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay
        )
    return torch.optim.Adam(params, lr=options.lr, weight_decay=options.weight_decay)


def _better(score: float | None, best: float | None, monitor: str) -> bool:
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return False
    if best is None:
        return True
    return score < best if monitor == "perplexity" else score > best


def train_decoder(
    decoder: ConditionedDecoder,
    train: SentenceData,
    *,
    options: TrainingOptions | None = None,
    val: SentenceData | None = None,
    validate: Callable[[ConditionedDecoder], dict] | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    conditioner: torch.nn.Module | None = None,
) -> TrainingResult:
    """Train ``decoder`` (and ``conditioner``) in place (see the module docstring); returns the history.

    ``validate(decoder) -> {metric: value}`` runs after every epoch (in eval mode); early stopping
    follows ``options.monitor`` over ``perplexity`` (of ``val``) and those metrics. ``conditioner``,
    when given, maps ``cond`` rows to the decoder's conditioning vectors and trains with the decoder
    (its trainable parameters join the optimizer and the checkpoints): fine-tuned CNN stages on cached
    lower-layer maps, or a sequence encoder."""
    options = (options or TrainingOptions()).validate()
    echo = echo or log.info
    if options.monitor != "perplexity" and validate is None:
        raise ConfigError(
            f"early stopping on {options.monitor!r} needs a validation function; monitor 'perplexity' instead"
        )
    if options.monitor == "perplexity" and val is None:
        raise ConfigError("early stopping on perplexity needs validation sentences (val=)")
    device = check_device(options.device)
    decoder.to(device)
    conditioner = (conditioner or torch.nn.Identity()).to(device)
    modules = torch.nn.ModuleList([decoder, conditioner])
    optimizer = _optimizer(modules, options)
    fingerprint = hashlib.sha256(
        json.dumps(
            [
                # epochs and patience only say when to stop: a run may be extended with more of either
                options.to_dict() | {"device": None, "epochs": None, "patience": None},
                decoder.config.to_dict(),
                train.fingerprint(),
            ]
            + ([val.fingerprint()] if val is not None else []),
            sort_keys=True,
        ).encode()
    ).hexdigest()
    history: list[dict] = []
    best_epoch, best_score, best_state, waited, start_epoch = 0, None, None, 0, 0
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / "last.pt"
    resumed = None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if path is not None and path.is_file():
        ckpt = load_checkpoint(path, kind=KIND)
        if ckpt.meta.get("fingerprint") != fingerprint:
            raise ConfigError(
                f"{path}: a checkpoint of another training run (other data, model or options); "
                "give another output folder or remove it to start again"
            )
        modules.load_state_dict(ckpt.state["model"])
        optimizer.load_state_dict(ckpt.state["optimizer"])
        best_state = ckpt.state.get("best")
        history = list(ckpt.meta["history"])
        best_epoch, best_score, waited = ckpt.meta["best_epoch"], ckpt.meta["best_score"], ckpt.meta["waited"]
        start_epoch = len(history)
        resumed = ckpt
        echo(f"resuming after epoch {start_epoch} from {path}")
    # dropout draws from torch's global generator: seeded from options.seed (a resumed run: its saved
    # state), inside a fork so that the caller's random state is left as it was
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        if resumed is not None:
            resumed.restore_rng()
        else:
            torch.manual_seed(options.seed)
        started, cpu_started = time.perf_counter(), time.process_time()
        lengths = [len(s) for s in train.sentences]
        stopped = bool(history) and waited >= options.patience  # with this run's patience
        cond_all = train.cond.to(device)
        for epoch in range(start_epoch, options.epochs if not stopped else start_epoch):
            t0, c0 = time.perf_counter(), time.process_time()
            modules.train()
            batches = epoch_batches(lengths, options.batch_size, options.seed, epoch)
            total, words, n_sent = 0.0, 0, 0
            desc = f"epoch {epoch + 1}/{options.epochs}"
            bar = tqdm(batches, desc=desc, unit="batch", disable=not progress)
            for rows in bar:
                inputs, targets = pad_sentences([train.sentences[r] for r in rows], device)
                nll, n = sentence_nll(decoder, conditioner(cond_all[train.item[rows]]), inputs, targets)
                loss = nll / len(rows)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(modules.parameters(), options.clip_norm)
                optimizer.step()
                total, words, n_sent = total + float(nll.detach()), words + n, n_sent + len(rows)
                bar.set_postfix(loss=f"{total / n_sent:.3f}", ppl=f"{math.exp(total / max(1, words)):.1f}")
            bar.close()
            record = {
                "epoch": epoch + 1,
                "train_loss": total / max(1, n_sent),
                "train_perplexity": math.exp(total / max(1, words)),
            }
            modules.eval()
            if val is not None:
                record["val_perplexity"] = perplexity(decoder, val, conditioner=conditioner)
            if validate is not None:
                record.update({f"val_{k}": float(v) for k, v in validate(decoder).items()})
            score = record.get(f"val_{options.monitor}")
            if _better(score, best_score, options.monitor):
                best_epoch, best_score, waited = epoch + 1, score, 0
                best_state = {k: v.detach().clone() for k, v in modules.state_dict().items()}
            else:
                waited += 1
            record["seconds"] = time.perf_counter() - t0
            record["cpu_seconds"] = time.process_time() - c0  # all threads of this process
            record["stop"] = waited >= options.patience
            history.append(record)
            echo(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
            if path is not None:
                save_checkpoint(
                    path,
                    {"model": modules.state_dict(), "optimizer": optimizer.state_dict(), "best": best_state},
                    kind=KIND,
                    meta={
                        "fingerprint": fingerprint,
                        "history": history,
                        "best_epoch": best_epoch,
                        "best_score": best_score,
                        "waited": waited,
                        "options": options.to_dict(),
                        "decoder": decoder.config.to_dict(),
                    },
                )
            if record["stop"]:
                echo(f"early stop: no better validation {options.monitor} for {options.patience} epochs")
                break
    if best_state is not None:
        modules.load_state_dict(best_state)
    modules.eval()
    return TrainingResult(
        history=history,
        best_epoch=best_epoch,
        best_score=best_score,
        stopped_early=bool(history) and waited >= options.patience,
        resumed_from=start_epoch,
        options=options.to_dict(),
        # the epochs of earlier runs this one resumed count too
        seconds=sum(r.get("seconds", 0.0) for r in history[:start_epoch]) + time.perf_counter() - started,
        cpu_seconds=sum(r.get("cpu_seconds", 0.0) for r in history[:start_epoch])
        + time.process_time()
        - cpu_started,
    )
