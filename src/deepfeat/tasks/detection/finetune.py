"""Domain-specific fine-tuning for detection (thesis section 3.1.3): the backbone's ImageNet output is
replaced by a new (classes + 1)-way layer (background first) and SGD continues on warped regions.

Every training region (annotated boxes and proposals) is labelled with the class of the box it
overlaps most when that IoU is at least 0.5, background otherwise. Each SGD iteration draws 32
positive windows (uniformly over all classes) and 96 background windows, warped exactly as for
feature extraction (p = 16 context, mean padding) and mirrored at random; learning rate 0.001 (a
tenth of the base rate), momentum 0.9, weight decay 0.0005, BatchNorm statistics frozen.

On CPU, ``train_from`` limits training to one layer of the catalog and everything after it (e.g.
``"stage7"`` for EfficientNet-Lite0: the last block group, the head and the new output layer); the
layers below still run forward, without gradients. Checkpoints (:mod:`deepfeat.checkpoint`, kind
``"finetune"``, the layout of :mod:`deepfeat.training.finetune`) are written every
``checkpoint_every`` iterations with the model, optimizer and sampler states: a rerun resumes exactly
where the interrupted run would have been, and ``last.pt`` loads as a backbone
(``load_backbone(name, weights="last.pt")``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from deepfeat.backbones import Backbone, load_backbone
from deepfeat.backbones.finetuned import KIND, MARKER, replace_classifier
from deepfeat.checkpoint import load_checkpoint, save_checkpoint
from deepfeat.data.detection import DetectionDataset
from deepfeat.errors import CheckpointError, ConfigError, DataError
from deepfeat.fileio import to_jsonable
from deepfeat.tasks.detection.boxes import iou
from deepfeat.tasks.detection.extract import RegionSet
from deepfeat.tasks.detection.regions import RegionOptions, normalised, warp_regions
from deepfeat.validation import check_float, check_int


@dataclass(frozen=True)
class FinetuneOptions:
    """Fine-tuning settings (defaults: the thesis'); ``iterations`` 0 means no fine-tuning."""

    iterations: int = 0
    train_from: str | None = None
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0005
    positives: int = 32
    background: int = 96
    fg_iou: float = 0.5
    step_size: int | None = None
    checkpoint_every: int = 50
    flip: bool = True
    seed: int = 0

    def validate(self) -> None:
        check_int("finetune iterations", self.iterations, 0)
        check_float("finetune lr", self.lr, 0, low_open=True)
        check_int("positives per batch", self.positives, 1)
        check_int("background per batch", self.background, 0)
        check_float("fg_iou", self.fg_iou, 0, 1, low_open=True)
        check_int("checkpoint_every", self.checkpoint_every, 1)
        if self.step_size is not None:
            check_int("step_size", self.step_size, 1)

    def to_dict(self) -> dict:
        return asdict(self)


def trainable_names(backbone: Backbone, train_from: str | None) -> list[str]:
    """Names of the parameters trained: all, or those of layer ``train_from`` (its module and the
    weight layer that produces it) and every parameter after them."""
    names = [n for n, _ in backbone.module.named_parameters()]
    if train_from is None:
        return names
    layer = backbone.catalog.get(train_from)
    if layer.module is None:
        raise ConfigError(f"layer {train_from!r} has no module of its own; name a conv or fc layer")
    prefixes = tuple(f"{m}." for m in (layer.module, layer.linear) if m)  # the layer's own weight layer too
    first = next((i for i, n in enumerate(names) if n.startswith(prefixes)), None)
    if first is None:
        raise ConfigError(f"layer {train_from!r} has no parameters; name a layer with weights")
    return names[first:]


def window_labels(dataset: DetectionDataset, regions: RegionSet, fg_iou: float) -> list[np.ndarray]:
    """Per image: label of every region (0 background, c + 1 for class c at IoU >= fg_iou)."""
    out = []
    for table, boxes in zip(dataset.images, regions.boxes):
        labels = np.zeros(len(boxes), dtype=np.int64)
        if len(table.boxes) and len(boxes):
            ov = iou(boxes, table.boxes)
            best = ov.argmax(axis=1)
            fg = ov[np.arange(len(boxes)), best] >= fg_iou
            labels[fg] = table.labels[best[fg]] + 1
        out.append(labels)
    return out


class _Images:
    """Decoded training images, normalised, kept in a bounded cache."""

    def __init__(self, dataset: DetectionDataset, backbone: Backbone, device, capacity: int = 512):
        self.dataset, self.backbone, self.device, self.capacity = dataset, backbone, device, capacity
        self.cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    def __getitem__(self, i: int) -> torch.Tensor:
        if i not in self.cache:
            image = np.asarray(self.dataset.load(i))
            self.cache[i] = normalised(image, self.backbone.preprocess, self.device)
            if len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        self.cache.move_to_end(i)
        return self.cache[i]


def _batch(images, regions, windows, picks, flips, region: RegionOptions) -> torch.Tensor:
    crops = []
    for (i, k), flip in zip((windows[p] for p in picks), flips):
        crop = warp_regions(images[i], regions.boxes[i][k : k + 1], region.size, region.padding)
        crops.append(crop.flip(-1) if flip else crop)
    return torch.cat(crops)


def finetune_detector(
    backbone: str,
    dataset: DetectionDataset,
    regions: RegionSet,
    options: FinetuneOptions,
    region: RegionOptions,
    out: str | Path,
    *,
    weights: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> tuple[Backbone, Path, list[dict]]:
    """Fine-tune ``backbone`` on warped windows; returns (fine-tuned backbone, checkpoint, history)."""
    options.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        bb = replace_classifier(
            load_backbone(backbone, weights=weights),
            len(dataset.classes) + 1,
            ["background", *dataset.classes],
        )
    region = region.resolved(bb)
    model = bb.module.to(device) if device else bb.module
    train = set(trainable_names(bb, options.train_from))
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(name in train)
        if name in train:
            params.append(p)
    opt = torch.optim.SGD(params, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay)
    gamma_steps = options.step_size or options.iterations + 1
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=gamma_steps, gamma=0.1)
    gen = torch.Generator().manual_seed(options.seed)
    labels = window_labels(dataset, regions, options.fg_iou)
    fg = [(i, k) for i, lab in enumerate(labels) for k in np.flatnonzero(lab > 0)]
    bg = [(i, k) for i, lab in enumerate(labels) for k in np.flatnonzero(lab == 0)]
    if not fg or (options.background and not bg):
        raise DataError(f"{dataset.name}: no positive (or no background) window to fine-tune on")
    config = {
        "backbone": backbone,
        "weights": weights,
        "options": options.to_dict(),
        "region": region.to_dict(),
        "classes": dataset.classes,
        "regions": regions.digest(),
    }
    meta = {
        "backbone": bb.name,
        "n_classes": len(dataset.classes) + 1,
        "classes": ["background", *dataset.classes],
        "scope": f"from:{options.train_from or 'all'}",
    }
    history: list[dict] = []
    start = 0
    if last.exists():
        ck = load_checkpoint(last, kind=KIND)
        if ck.meta.get("config") != to_jsonable(config):
            raise ConfigError(f"{last} was written with other settings; use another output folder")
        try:
            model.load_state_dict(ck.state["model"])
            opt.load_state_dict(ck.state["optimizer"])
            sched.load_state_dict(ck.state["scheduler"])
            gen.set_state(ck.state["generator"])
            history, start = list(ck.meta["history"]), int(ck.meta["iteration"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{last}: damaged fine-tuning checkpoint ({exc})") from None
    images = _Images(dataset, bb, device)
    windows = fg + bg
    bar = tqdm(range(start, options.iterations), desc="fine-tune", unit="it", disable=not progress)
    for it in bar:
        t0 = time.perf_counter()
        picks = torch.cat(
            [
                torch.randint(len(fg), (options.positives,), generator=gen),
                len(fg) + torch.randint(max(len(bg), 1), (options.background,), generator=gen),
            ]
        ).tolist()
        flips = (
            (torch.rand(len(picks), generator=gen) < 0.5).tolist() if options.flip else [False] * len(picks)
        )
        target = torch.from_numpy(np.array([labels[i][k] for i, k in (windows[p] for p in picks)]))
        x = _batch(images, regions, windows, picks, flips, region)
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        with torch.enable_grad():
            logits = model(x.contiguous(memory_format=torch.channels_last) if bb.channels_last else x)
            loss = F.cross_entropy(logits, target.to(logits.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        lr = opt.param_groups[0]["lr"]  # this iteration's rate (the scheduler steps after it)
        sched.step()
        acc = float((logits.argmax(1).cpu() == target).float().mean())
        history.append(
            {
                "iteration": it + 1,
                "loss": float(loss.detach()),
                "accuracy": acc,
                "lr": lr,
                "seconds": time.perf_counter() - t0,
            }
        )
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
        if (it + 1) % options.checkpoint_every == 0 or it + 1 == options.iterations:
            state = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "generator": gen.get_state(),
            }
            record = {MARKER: meta, "config": config, "iteration": it + 1, "history": history}
            save_checkpoint(last, state, kind=KIND, meta=record)
    model.eval()
    if not last.exists():
        raise ConfigError("fine-tuning ran no iteration (iterations=0)")
    return load_backbone(backbone, weights=last), last, history
