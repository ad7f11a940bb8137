"""Training a BiGAN (or a baseline) on :class:`~deepfeat.tasks.bigan.data.TrainingData`.

    run = train(TrainOptions(method="bigan", arch="mlp", epochs=10), open_training_data("mnist", "mlp"),
                out="runs/mnist-bigan")

Each epoch visits the data once in a random order, in full mini-batches (the last incomplete one is
left out: batch norm needs real batches); latent samples, crops and flips come from one seeded
generator. After every epoch the batch norm statistics are re-estimated on ``bn_batches`` batches
(the reference implementation's "deploy" pass; training never reads them) and, with ``out``, a
checkpoint (:mod:`deepfeat.checkpoint`, kind ``"bigan"``) is written atomically as ``last.pt``:
every network, optimiser and random state, the options and the history. Running again with the same
``out`` resumes after the last finished epoch and ends exactly where an uninterrupted run would.
Every ``sample_every`` epochs ``samples/epoch-<n>-samples.png`` (G(z) for fixed z) and
``samples/epoch-<n>-reconstructions.png`` (real images, each row followed by G(E(x))) are written.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from deepfeat.backbones.bigan import KIND, MARKER, encoder_preprocess
from deepfeat.checkpoint import load_checkpoint, save_checkpoint
from deepfeat.errors import CheckpointError, ConfigError, DataError
from deepfeat.fileio import check_output_dir, to_jsonable
from deepfeat.report.writer import write_result
from deepfeat.tasks.bigan.data import TrainingData
from deepfeat.tasks.bigan.images import interleave_rows, save_grid, to_pixels
from deepfeat.tasks.bigan.models import Networks, build_networks, decayed_parameters, feature_network
from deepfeat.tasks.bigan.objective import sample_prior, to_latent
from deepfeat.tasks.bigan.options import TrainOptions
from deepfeat.tasks.bigan.steps import STEPS
from deepfeat.validation import check_device

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"
#: settings with a default in every version (plain JSON); latent_dim's depends on the architecture
OPTION_DEFAULTS = {
    f.name: to_jsonable(f.default)
    for f in fields(TrainOptions)
    if f.default is not MISSING and f.name not in ("latent_dim", "device")
}
FORMAT = 1


@dataclass
class TrainResult:
    """A finished (or resumed and finished) run: its networks in evaluation mode, the per-epoch
    history (mean losses, step size, seconds, images/s), the checkpoint and what the data was."""

    options: TrainOptions
    networks: Networks
    history: list[dict]
    data: dict
    out: Path | None = None
    checkpoint: Path | None = None
    resumed_from: int = 0
    samples: list[Path] = field(default_factory=list)


def model_description(options: TrainOptions, data: TrainingData) -> dict:
    """What a checkpoint records to rebuild and use its networks (read by the backbone loader)."""
    out = {
        "format": FORMAT,
        "method": options.method,
        "arch": options.arch,
        "latent_dim": options.latent,
        "feature_net": feature_network(options),
        "data_kind": data.kind,
        "in_features": data.in_features if data.kind == "vectors" else None,
        "image_shape": list(data.images.shape[1:]) if data.kind == "vectors" else [options.input_size] * 2,
    }
    if options.arch == "conv":
        out["preprocess"] = encoder_preprocess(options.input_size).to_dict()
    return out


def data_summary(data: TrainingData) -> dict:
    return {
        "name": data.name,
        "kind": data.kind,
        "n_images": len(data),
        "shape": list(data.images.shape[1:]),
        "fingerprint": data.fingerprint(),
        "classes": data.classes,
        "source": data.source,
        "skipped": [list(s) for s in data.skipped],
    }


def make_optimizers(nets: Networks, options: TrainOptions) -> dict[str, torch.optim.Optimizer]:
    """One Adam per network; weight decay on multiplicative weights only."""
    out = {}
    for name, net in nets.items():
        decay, other = decayed_parameters(net)
        groups = [
            {"params": decay, "weight_decay": options.weight_decay},
            {"params": other, "weight_decay": 0.0},
        ]
        kwargs = {"lr": options.lr, "betas": (options.beta1, options.beta2)}
        try:  # one fused kernel per step: much less time in the update than a loop over parameters
            out[name] = torch.optim.Adam(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):  # older torch without fused Adam on this device
            out[name] = torch.optim.Adam(groups, **kwargs)
    return out


def _check_data(options: TrainOptions, data: TrainingData) -> None:
    want = "vectors" if options.arch == "mlp" else "images"
    if data.kind != want:
        raise DataError(
            f"{data.name}: {data.kind} data, but the {options.arch} architecture trains on {want}"
        )
    if data.kind == "images" and data.crop != options.input_size:
        raise DataError(
            f"{data.name}: prepared for {data.crop}-pixel crops, the run wants {options.input_size}"
        )
    if len(data) < options.batch_size:
        raise DataError(f"{data.name}: {len(data)} images, fewer than one batch of {options.batch_size}")


@torch.no_grad()
def refresh_batchnorm(nets: Networks, data: TrainingData, options: TrainOptions, seed: int) -> None:
    """Re-estimate every batch norm's running statistics as the plain average over ``bn_batches``
    batches of real data (E, D) and prior samples (G; its inputs E(x) for the autoencoders)."""
    norms = [
        m
        for _, net in nets.items()
        for m in net.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    gen = torch.Generator().manual_seed(seed)
    device = _device(options)
    G, E, D = nets.generator, nets.encoder, nets.discriminator
    nets.train()
    try:
        for _ in range(options.bn_batches):
            rows = torch.randint(0, len(data), (options.batch_size,), generator=gen).numpy()
            x = data.batch(rows, gen).to(device)
            z = sample_prior(len(rows), options.latent, gen).to(device)
            ez = to_latent(E(x)) if E is not None else None
            if G is not None:
                G(ez if options.method.startswith("ae-") else z)
            if D is not None:
                D(x, ez) if options.method == "bigan" else D(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        nets.train(False)


def _device(options: TrainOptions) -> torch.device:
    return check_device(options.device)


def _resume(
    path: Path, options: TrainOptions, nets: Networks, optimizers, gen, summary: dict
) -> tuple[int, list[dict]]:
    ck = load_checkpoint(path, kind=KIND)
    trained_on = (ck.meta.get("data") or {}).get("fingerprint")
    if trained_on != summary["fingerprint"]:
        raise ConfigError(
            f"{path} was trained on other data ({(ck.meta.get('data') or {}).get('name')!r}, another "
            "fingerprint); use another --out folder or the same data"
        )
    saved, wanted = ck.meta.get("options") or {}, to_jsonable(options.run_config())
    # a setting added after the checkpoint was written had its default then
    saved = {**{k: v for k, v in OPTION_DEFAULTS.items() if k in wanted}, **saved}
    if saved != wanted:
        diff = sorted(k for k in wanted.keys() | saved.keys() if saved.get(k) != wanted.get(k))
        raise ConfigError(
            f"{path} was written with other settings ({', '.join(diff) or 'unknown'}); use another --out "
            "folder or the same settings"
        )
    try:
        for name, net in nets.items():
            net.load_state_dict(ck.state[name])
        for name, opt in optimizers.items():
            opt.load_state_dict(ck.state[f"optim_{name}"])
        gen.set_state(ck.state["sampler"])
        epoch, history = int(ck.meta["epoch"]), list(ck.meta["history"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: damaged BiGAN checkpoint ({exc})") from None
    ck.restore_rng()
    return epoch, history


def _save(path: Path, options, nets, optimizers, gen, epoch, history, data: TrainingData, summary) -> None:
    state = {name: net.state_dict() for name, net in nets.items()}
    state |= {f"optim_{name}": opt.state_dict() for name, opt in optimizers.items()}
    state["sampler"] = gen.get_state()
    meta = {
        MARKER: model_description(options, data),
        "options": options.run_config(),
        "epoch": epoch,
        "history": history,
        "data": summary,
    }
    save_checkpoint(path, state, kind=KIND, meta=meta)


@torch.no_grad()
def write_samples(
    nets: Networks, options: TrainOptions, data: TrainingData, folder: Path, epoch: int
) -> list[Path]:
    """Sample grid G(z) for 100 fixed z and, with an encoder, reconstructions G(E(x)) of 30 fixed
    images (evaluation mode, batch norm statistics as refreshed)."""
    nets.train(False)
    device = _device(options)
    gen = torch.Generator().manual_seed(options.seed + 1)
    shape = data.images.shape[1:3]
    paths = []
    if nets.generator is not None:
        z = sample_prior(100, options.latent, gen).to(device)
        pixels = to_pixels(nets.generator(z), data.kind, shape)
        paths.append(save_grid(pixels, folder / f"epoch-{epoch}-samples.png", 10, scale=2))
        if nets.encoder is not None:
            rows = np.sort(torch.randperm(len(data), generator=gen)[:30].numpy())
            x = data.batch(rows).to(device)
            recon = nets.generator(to_latent(nets.encoder(x)))
            grid = interleave_rows(to_pixels(x, data.kind, shape), to_pixels(recon, data.kind, shape), 10)
            paths.append(save_grid(grid, folder / f"epoch-{epoch}-reconstructions.png", 10, scale=2))
    return paths


def train(
    options: TrainOptions,
    data: TrainingData,
    out: str | Path | None = None,
    *,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or resume, with ``out``) the run ``options`` describes on ``data``."""
    echo = echo or log.info
    options.validate()
    _check_data(options, data)
    out = None if out is None else check_output_dir(out, "out")
    if options.max_images is not None and options.max_images < len(data):
        rows = np.sort(
            np.random.default_rng(options.seed).choice(len(data), options.max_images, replace=False)
        )
        data = data.subset(rows)
    device = _device(options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        nets = build_networks(options, data.in_features).to(device)
    optimizers = make_optimizers(nets, options) if options.method != "random" else {}
    gen = torch.Generator().manual_seed(options.seed)
    summary = data_summary(data)
    history: list[dict] = []
    start = 0
    checkpoint = None if out is None else out / CHECKPOINT
    if checkpoint is not None and checkpoint.exists():
        start, history = _resume(checkpoint, options, nets, optimizers, gen, summary)
        echo(f"resuming {checkpoint} after epoch {start} of {options.epochs}")
    step = STEPS.get(options.method)
    n_steps = len(data) // options.batch_size
    samples: list[Path] = []
    for epoch in range(start, options.epochs if step is not None else 0):
        lr = options.learning_rate(epoch)
        for opt in optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        nets.train()
        order = torch.randperm(len(data), generator=gen).numpy()
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        bar = tqdm(
            range(n_steps),
            desc=f"{options.method} epoch {epoch + 1}/{options.epochs}",
            unit="step",
            disable=not progress,
            dynamic_ncols=True,
            leave=False,
        )
        for i in bar:
            x = data.batch(order[i * options.batch_size : (i + 1) * options.batch_size], gen).to(device)
            z = sample_prior(len(x), options.latent, gen).to(device)
            losses = step(nets, optimizers, x, z, options)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{v / (i + 1):.3f}" for k, v in sums.items()}, refresh=False)
        seconds = time.perf_counter() - t0
        losses = {k: v / max(1, n_steps) for k, v in sums.items()}
        if not all(math.isfinite(v) for v in losses.values()):
            raise DataError(
                f"training diverged in epoch {epoch + 1} (losses {losses}); lower lr or check the data"
            )
        refresh_batchnorm(nets, data, options, seed=options.seed * 100_003 + epoch + 1)
        history.append(
            {
                "epoch": epoch + 1,
                "lr": lr,
                "losses": losses,
                "seconds": seconds,
                "images_per_second": n_steps * options.batch_size / seconds if seconds > 0 else None,
            }
        )
        echo(
            f"epoch {epoch + 1}/{options.epochs}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
            + f" ({seconds:.1f} s)"
        )
        if out is not None:
            if (epoch + 1) % options.sample_every == 0 or epoch + 1 == options.epochs:
                samples += write_samples(nets, options, data, out / "samples", epoch + 1)
            _save(checkpoint, options, nets, optimizers, gen, epoch + 1, history, data, summary)
            write_result(
                out, "history", {"options": options.to_dict(), "history": history}, kind="bigan-training"
            )
    if step is None:  # "random": the initialisation, batch norm statistics from the data
        refresh_batchnorm(nets, data, options, seed=options.seed * 100_003)
        if out is not None:
            _save(checkpoint, options, nets, optimizers, gen, 0, history, data, summary)
    nets.train(False)
    return TrainResult(options, nets, history, summary, out, checkpoint, start, samples)
