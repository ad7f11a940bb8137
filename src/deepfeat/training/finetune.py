"""Fine-tuning a backbone on labelled images: all layers (FT) or the classifier-side layers only (FC-FT).

A new output layer with one unit per class replaces the network's own. Training is plain SGD with
momentum on the cross-entropy, with the schedule of Agrawal's report by default: a learning rate one
tenth of the base rate used to train the network from scratch (0.01 / 10 = 0.001) and step decay (x0.1
every ``step_size`` epochs). Images are decoded and preprocessed once (the backbone's resize and
centre crop) and augmented by random horizontal flips. BatchNorm statistics stay frozen unless
``train_bn`` (small fine-tuning batches estimate them badly).

Trainable scope (``scope``):

- ``"ft"``: every parameter;
- ``"fc"``: the classifier-side layers: AlexNet / VGG16 fc6, fc7, fc8 (``classifier``); ResNet-50 its
  output layer; EfficientNet-Lite0 the 1x1 head convolution with its BatchNorm (``conv_head``,
  ``bn2``: 1280 units applied at every position, the counterpart of fc6 before global pooling) and the
  output layer (``classifier``). Other backbones: the output layer only.
- ``"frozen:LAYER"``: the layers up to and including catalog layer LAYER stay as they are; every
  parameter after it (in the network's order) is initialised afresh (each module's own
  ``reset_parameters``, seeded) and trained: the "first N layers transferred and frozen, the rest
  trained from scratch" protocol of Noroozi & Favaro that the thesis' Table 5.2 follows.

After every epoch a checkpoint (:mod:`deepfeat.checkpoint`, kind ``"finetune"``) is written
atomically (``epoch-<n>.pt`` and ``last.pt``) with the model, optimizer, scheduler and random states;
a run started again with the same output folder resumes after the last finished epoch, exactly where
the uninterrupted run would be, and runs no code stored in the checkpoint. Checkpoints load as backbones:
``load_backbone(name, weights="out/last.pt")``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from tqdm.auto import tqdm

from deepfeat.backbones.backbone import Backbone
from deepfeat.backbones.finetuned import KIND, MARKER, output_layer_path, replace_classifier
from deepfeat.backbones.registry import DEFAULT_BACKBONE, load_backbone
from deepfeat.checkpoint import load_checkpoint, save_checkpoint
from deepfeat.data.datasets import ImageDataset
from deepfeat.data.loader import iter_batches
from deepfeat.data.transforms import Preprocess, preset
from deepfeat.errors import CheckpointError, ConfigError, DataError
from deepfeat.fileio import mark_output_dir, to_jsonable
from deepfeat.report.writer import write_result
from deepfeat.training.resume import check_same_data, check_same_settings
from deepfeat.validation import check_choice

SCOPES = ("ft", "fc")
FC_SCOPE = {
    "efficientnet_lite0": ("conv_head", "bn2", "classifier"),
    "alexnet": ("classifier",),
    "vgg16": ("classifier",),
    "resnet50": ("fc",),
}
BASE_LR = 0.01


FROZEN = "frozen:"


def check_scope(scope: str) -> None:
    if not (isinstance(scope, str) and scope.startswith(FROZEN) and len(scope) > len(FROZEN)):
        check_choice("fine-tuning scope", scope, (*SCOPES, "frozen:LAYER"))


def trainable_prefixes(backbone: Backbone, scope: str) -> tuple[str, ...]:
    """Module path prefixes whose parameters train under ``scope`` ("" = everything; for
    ``frozen:LAYER`` the names of the parameters after LAYER's module)."""
    check_scope(scope)
    if scope.startswith(FROZEN):
        return _after_layer(backbone, scope[len(FROZEN) :])
    if scope == "ft":
        return ("",)
    if scope == "fc":
        if backbone.name in FC_SCOPE:
            return FC_SCOPE[backbone.name]
        return (output_layer_path(backbone),)


def _after_layer(backbone: Backbone, layer: str) -> tuple[str, ...]:
    info = backbone.catalog[layer]  # a LayerError naming the valid layers otherwise
    if info.module is None:
        raise ConfigError(f"frozen:{layer}: {layer!r} is derived from another layer; name a module layer")
    # modules in registration (forward) order; the layer's subtree and everything before it stay
    order = {name: i for i, (name, _) in enumerate(backbone.module.named_modules())}
    end = max(i for name, i in order.items() if _in_scope(name, (info.module,)))
    after = tuple(
        name for name, _ in backbone.module.named_parameters() if order[name.rpartition(".")[0]] > end
    )
    if all(_in_scope(name, (output_layer_path(backbone),)) for name in after):
        raise ConfigError(
            f"frozen:{layer} leaves only the new output layer to train (that is scope 'fc'); "
            f"freeze through an earlier layer of {[x.name for x in backbone.catalog if x.module]}"
        )
    return after


def reinitialize(model: torch.nn.Module, names: tuple[str, ...]) -> None:
    """Fresh parameters (each module's ``reset_parameters``, from the global torch RNG) for every
    module whose own parameters are all in ``names``."""
    chosen = set(names)
    for module_name, module in model.named_modules():
        own = [f"{module_name}.{p}" if module_name else p for p, _ in module.named_parameters(recurse=False)]
        if own and all(p in chosen for p in own) and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def _in_scope(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


class FineTuner(BaseEstimator):
    """Fine-tune ``backbone`` on an :class:`~deepfeat.data.datasets.ImageDataset` (single-label).

    Parameters
    ----------
    backbone, weights: the network to start from (see ``load_backbone``).
    scope: ``"ft"`` (all layers), ``"fc"`` (classifier-side layers) or ``"frozen:LAYER"`` (the layers
        after LAYER trained from a fresh initialisation); see the module docstring.
    epochs: number of passes over the training images.
    lr: learning rate (default: 1/10 of the base rate 0.01); ``step_size`` epochs between x``gamma``
        decays (default: half the epochs).
    momentum, weight_decay, batch_size: SGD settings.
    val_fraction: share of each class held out for validation when the data has no train/val split.
    train_bn: update BatchNorm statistics during training.
    preprocess: ``"backbone"`` or ``"decaf"`` or a :class:`Preprocess`.
    out: folder for checkpoints and the training history (None: nothing written, no resuming).
    random_state: seed of the new output layer, the shuffling, the flips and the validation split.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        weights: str | None = None,
        scope: str = "fc",
        epochs: int = 10,
        lr: float | None = None,
        step_size: int | None = None,
        gamma: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        train_bn: bool = False,
        preprocess: str | Preprocess = "backbone",
        out: str | Path | None = None,
        random_state: int = 0,
        progress: bool = True,
    ):
        self.backbone = backbone
        self.weights = weights
        self.scope = scope
        self.epochs = epochs
        self.lr = lr
        self.step_size = step_size
        self.gamma = gamma
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.train_bn = train_bn
        self.preprocess = preprocess
        self.out = out
        self.random_state = random_state
        self.progress = progress

    def _validate(self) -> None:
        check_scope(self.scope)
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def config(self) -> dict:
        """The settings that define a run (a resumed run must match them)."""
        prep = self.preprocess if isinstance(self.preprocess, str) else self.preprocess.to_dict()
        return {
            "backbone": self.backbone,
            "weights": None if self.weights is None else str(self.weights),
            "scope": self.scope,
            "epochs": self.epochs,
            "lr": self.lr_,
            "step_size": self.step_size_,
            "gamma": self.gamma,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "train_bn": self.train_bn,
            "preprocess": prep,
            "random_state": self.random_state,
        }

    # -- data ----------------------------------------------------------------------------------
    def _split(self, dataset: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
        if dataset.multilabel:
            raise DataError(f"{dataset.name}: fine-tuning needs single-label data")
        targets = dataset.targets
        if dataset.splits is not None:
            names = {str(s).lower() for s in np.unique(dataset.splits)}
            if "train" in names and names & {"val", "test"}:
                split = np.char.lower(dataset.splits.astype(str))
                return np.flatnonzero(split == "train"), np.flatnonzero(np.isin(split, ["val", "test"]))
        rng = np.random.default_rng(self.random_state)
        train, val = [], []
        for c in range(len(dataset.classes)):
            rows = rng.permutation(np.flatnonzero(targets == c))
            if len(rows) < 2:
                raise DataError(
                    f"{dataset.name}: class {dataset.classes[c]!r} has {len(rows)} images; need 2+"
                )
            k = max(1, round(self.val_fraction * len(rows)))
            val.extend(rows[:k])
            train.extend(rows[k:])
        return np.sort(np.array(train)), np.sort(np.array(val))

    def _decode(self, dataset: ImageDataset, rows: np.ndarray, prep: Preprocess):
        images, kept = [], []
        for batch in iter_batches(dataset, rows, prep, batch_size=64, workers=2):
            for pos in batch.ok:
                images.append(batch.images[pos])
                kept.append(int(batch.rows[pos]))
            self.skipped_.extend((dataset.source(r), e.reason) for r, e in batch.errors.items())
        if not images:
            raise DataError(f"{dataset.name}: no image of this split could be decoded")
        return np.stack(images), dataset.targets[np.array(kept)]

    # -- training ------------------------------------------------------------------------------
    def fit(self, dataset: ImageDataset) -> FineTuner:
        """Fine-tune on the dataset's train split (or a stratified split), validating every epoch."""
        self._validate()
        self.lr_ = self.lr if self.lr is not None else BASE_LR / 10
        self.step_size_ = self.step_size or max(1, self.epochs // 2)
        self.skipped_: list[tuple[str, str]] = []
        if not isinstance(self.backbone, str):
            raise ConfigError("backbone must be a backbone name (the checkpoints record it)")
        base = load_backbone(self.backbone, weights=self.weights)
        prep = (
            preset(self.preprocess, base.preprocess) if isinstance(self.preprocess, str) else self.preprocess
        )
        train_rows, val_rows = self._split(dataset)
        torch.manual_seed(self.random_state)
        bb = replace_classifier(base, len(dataset.classes), list(dataset.classes))
        model = bb.module
        prefixes = trainable_prefixes(bb, self.scope)
        if self.scope.startswith(FROZEN):
            reinitialize(model, prefixes)
        params = []
        for name, p in model.named_parameters():
            p.requires_grad_(_in_scope(name, prefixes))
            if p.requires_grad:
                params.append(p)
        self.n_trainable_ = int(sum(p.numel() for p in params))
        opt = torch.optim.SGD(params, lr=self.lr_, momentum=self.momentum, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.step_size_, gamma=self.gamma)
        out = None if self.out is None else Path(self.out)
        # the data a checkpoint continues: its items and labels, and the split
        data = {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint(),
            "classes": list(dataset.classes),
            "split": hashlib.sha256(
                json.dumps([train_rows.tolist(), val_rows.tolist()]).encode()
            ).hexdigest(),
        }
        history: list[dict] = []
        start_epoch = 0
        gen = torch.Generator().manual_seed(self.random_state)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            mark_output_dir(out)  # (checkpoints kept inside the image folder are not read as a class)
            last = out / "last.pt"
            if last.exists():
                ck = load_checkpoint(last, kind=KIND)
                saved = ck.meta.get("config") or {}
                if self.step_size is None and isinstance(saved.get("step_size"), int):
                    # the default step follows the epochs: an extended run keeps the one it had
                    self.step_size_ = sched.step_size = saved["step_size"]
                check_same_settings(last, saved, to_jsonable(self.config()))
                check_same_data(last, ck.meta, data)
                try:
                    model.load_state_dict(ck.state["model"])
                    opt.load_state_dict(ck.state["optimizer"])
                    sched.load_state_dict(ck.state["scheduler"])
                    gen.set_state(ck.state["generator"])
                    history, start_epoch = list(ck.meta["history"]), int(ck.meta["epoch"])
                except (KeyError, TypeError, ValueError, RuntimeError) as exc:
                    raise CheckpointError(f"{last}: damaged fine-tuning checkpoint ({exc})") from None
                ck.restore_rng()
        Xtr, ytr = self._decode(dataset, train_rows, prep)
        Xval, yval = self._decode(dataset, val_rows, prep)
        meta = {
            "backbone": bb.name,
            "n_classes": len(dataset.classes),
            "classes": list(dataset.classes),
            "scope": self.scope,
            "trainable": list(prefixes),
        }
        for epoch in range(start_epoch, self.epochs):
            t0 = time.perf_counter()
            lr = opt.param_groups[0]["lr"]  # this epoch's rate (the scheduler steps after it)
            loss, acc = self._train_epoch(model, bb, prep, Xtr, ytr, opt, gen, epoch)
            sched.step()
            val_acc = self._accuracy(model, bb, prep, Xval, yval)
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": loss,
                    "train_accuracy": acc,
                    "val_accuracy": val_acc,
                    "lr": lr,
                    "seconds": time.perf_counter() - t0,
                }
            )
            if self.progress:
                tqdm.write(
                    f"epoch {epoch + 1}/{self.epochs}: loss {loss:.4f}, train {100 * acc:.1f}%, "
                    f"val {100 * val_acc:.1f}% ({history[-1]['seconds']:.0f} s)"
                )
            if out is not None:
                state = {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "generator": gen.get_state(),
                }
                record = {
                    MARKER: meta,
                    "config": self.config(),
                    "data": data,
                    "epoch": epoch + 1,
                    "history": history,
                }
                save_checkpoint(out / f"epoch-{epoch + 1}.pt", state, kind=KIND, meta=record)
                save_checkpoint(out / "last.pt", state, kind=KIND, meta=record)
                write_result(
                    out, "history", {"config": self.config(), **meta, "history": history}, kind="finetune"
                )
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        self.backbone_ = replace(bb, weights_id=f"finetuned:{self.scope}:{bb.weights_id}")
        self.history_ = history
        self.val_accuracy_ = history[-1]["val_accuracy"] if history else float("nan")
        return self

    def _set_mode(self, model) -> None:
        model.train()
        if not self.train_bn:
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def _train_epoch(self, model, bb, prep, X, y, opt, gen, epoch) -> tuple[float, float]:
        self._set_mode(model)
        order = torch.randperm(len(X), generator=gen).numpy()
        total, correct, seen = 0.0, 0, 0
        bar = tqdm(
            range(0, len(X), self.batch_size),
            desc=f"epoch {epoch + 1}",
            unit="batch",
            disable=not self.progress,
            dynamic_ncols=True,
            leave=False,
        )
        for i in bar:
            idx = order[i : i + self.batch_size]
            flips = torch.rand(len(idx), generator=gen) < 0.5
            images = [X[j][:, ::-1] if f else X[j] for j, f in zip(idx, flips.tolist())]
            x = prep.to_batch([np.ascontiguousarray(im) for im in images], channels_last=bb.channels_last)
            target = torch.from_numpy(np.asarray(y[idx], dtype=np.int64))
            with torch.enable_grad():
                logits = model(x)
                loss = F.cross_entropy(logits, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == target).sum())
            seen += len(idx)
        model.eval()
        return total / seen, correct / seen

    @staticmethod
    def _accuracy(model, bb, prep, X, y, batch: int = 64) -> float:
        model.eval()
        correct = 0
        with torch.inference_mode():
            for i in range(0, len(X), batch):
                x = prep.to_batch(list(X[i : i + batch]), channels_last=bb.channels_last)
                correct += int((model(x).argmax(1).numpy() == y[i : i + batch]).sum())
        return correct / len(X)
