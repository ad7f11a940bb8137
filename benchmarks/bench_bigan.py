"""BiGAN training cost on CPU (thesis chapter 5).

(a) One permutation-invariant MNIST epoch with the MLPs of appendix 5.5.3.1 (60,000 images = 468
    steps of 128; target: under 60 s on 2 cores). deepfeat's step (D, G and E updated simultaneously
    from one forward pass as appendix 5.5.2 does, per-group gradients with torch.autograd.grad so the
    second pass through D computes no weight gradients of D, fused Adam) against the alternatives in
    the same run: the textbook simultaneous step (two ``.backward()`` calls, D's gradients saved in
    between, per-parameter Adam: PyTorch's default) and alternating updates (D, then G/E against the
    updated D: a second forward pass). Steps are timed interleaved (medians with spread) and scaled to
    468 steps; ``--full-epoch`` also times real epochs of ``deepfeat.tasks.bigan.train`` (5, 3 with
    ``--quick``), each from fresh networks, one after another (median and spread).
(b) Images per second of each network at batch 128, forward (evaluation mode) and forward + backward
    (training mode): the MNIST MLPs and the convolutional G, E (AlexNet-like) and joint D at 32
    pixels, default widths and the experiment's smaller ones.

Writes benchmarks/results/bench_bigan.json (``--quick``: bench_bigan.quick.json, not kept in git).
Usage: python benchmarks/bench_bigan.py [--quick]
[--threads 2] [--full-epoch]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _machine import machine
from _timing import LoadGuard, interleaved, pinned_threads, summary

from deepfeat.fileio import write_json
from deepfeat.tasks.bigan import TrainOptions, build_networks
from deepfeat.tasks.bigan.objective import discriminator_loss, generator_encoder_loss, sample_prior, to_latent
from deepfeat.tasks.bigan.steps import bigan_step
from deepfeat.tasks.bigan.training import make_optimizers

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
STEPS_PER_EPOCH = 60_000 // 128


def textbook_step(nets, optimizers, x, z, options) -> None:
    """Simultaneous update the usual way: backward of D's loss, save D's gradients, backward of G/E's
    loss (through every D weight too), then step."""
    G, E, D = nets.generator, nets.encoder, nets.discriminator
    real, fake = D(x, to_latent(E(x))), D(G(z), z)
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    discriminator_loss(real, fake).backward(retain_graph=True)
    saved = [p.grad.clone() for p in D.parameters()]
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    generator_encoder_loss(real, fake, options.inverted).backward()
    for p, g in zip(D.parameters(), saved):
        p.grad = g
    for opt in optimizers.values():
        opt.step()


def per_parameter_adam(nets, options) -> dict:
    out = {}
    for name, net in nets.items():
        out[name] = torch.optim.Adam(
            net.parameters(), lr=options.lr, betas=(options.beta1, options.beta2), foreach=False
        )
    return out


def part_a(repeats: int, steps: int) -> dict:
    opts = TrainOptions(method="bigan", arch="mlp")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(128, 784, generator=gen)
    z = sample_prior(128, opts.latent, gen)
    variants = {}
    for name, simultaneous, textbook in (
        ("deepfeat", True, False),
        ("textbook_simultaneous", True, True),
        ("alternating", False, False),
    ):
        torch.manual_seed(0)
        nets = build_networks(TrainOptions(method="bigan", arch="mlp", simultaneous=simultaneous))
        nets.train()
        o = TrainOptions(method="bigan", arch="mlp", simultaneous=simultaneous)
        optimizers = per_parameter_adam(nets, o) if textbook else make_optimizers(nets, o)

        def run(nets=nets, optimizers=optimizers, o=o, textbook=textbook):
            for _ in range(steps):
                (textbook_step if textbook else bigan_step)(nets, optimizers, x, z, o)

        variants[name] = run
    timings, _ = interleaved(variants, repeats=repeats, warmup=1)
    out = {}
    for name, t in timings.items():
        per_step = t["median"] / steps
        out[name] = {
            "seconds_per_step": per_step,
            "spread": t["spread"],
            "epoch_seconds_estimate": per_step * STEPS_PER_EPOCH,
            "images_per_second": 128 / per_step,
        }
    base = out["deepfeat"]["seconds_per_step"]
    for name in out:
        out[name]["relative_to_deepfeat"] = out[name]["seconds_per_step"] / base
    out["target_epoch_under_60s"] = out["deepfeat"]["epoch_seconds_estimate"] < 60
    return out


def full_epoch(repeats: int) -> dict:
    """One real MNIST epoch of ``train``, ``repeats`` times, each from fresh networks."""
    from deepfeat.tasks.bigan import open_training_data, train

    data = open_training_data("mnist", "mlp")
    opts = TrainOptions(method="bigan", arch="mlp", epochs=1, bn_batches=20)
    steps, total, rates = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = train(opts, data, progress=False)
        total.append(time.perf_counter() - t0)
        steps.append(result.history[0]["seconds"])
        rates.append(result.history[0]["images_per_second"])
    return {
        "steps_seconds": summary(steps, 3),
        "with_bn_refresh_seconds": summary(total, 3),
        "images_per_second": summary(rates, 1),
        "target_epoch_under_60s": statistics.median(steps) < 60,
    }


def network_speed(net, inputs, repeats: int) -> dict:
    """Images/s of ``net`` on ``inputs`` (a tuple), forward in eval mode and forward+backward."""

    def forward():
        net.eval()
        with torch.no_grad():
            net(*inputs)

    def train_step():
        net.train()
        net.zero_grad(set_to_none=True)
        net(*inputs).float().sum().backward()

    timings, _ = interleaved({"forward": forward, "forward_backward": train_step}, repeats=repeats, warmup=1)
    n = len(inputs[0])
    return {k: {"images_per_second": n / t["median"], "spread": t["spread"]} for k, t in timings.items()}


def part_b(repeats: int) -> dict:
    out = {}
    gen = torch.Generator().manual_seed(1)
    configs = {
        "mlp": TrainOptions(method="bigan", arch="mlp"),
        "conv32_default": TrainOptions(method="bigan", arch="conv"),
        "conv32_experiment": TrainOptions(
            method="bigan", arch="conv", encoder_widths=(16, 32, 48, 48, 32), gan_width=16
        ),
    }
    for name, opts in configs.items():
        torch.manual_seed(0)
        nets = build_networks(opts)
        z = sample_prior(128, opts.latent, gen)
        x = torch.rand(128, 784) if opts.arch == "mlp" else torch.rand(128, 3, 32, 32) * 2 - 1
        out[name] = {
            "generator": network_speed(nets.generator, (z,), repeats),
            "encoder": network_speed(nets.encoder, (x,), repeats),
            "discriminator": network_speed(nets.discriminator, (x, z), repeats),
            "parameters": {n: sum(p.numel() for p in m.parameters()) for n, m in nets.items()},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-epoch", action="store_true", help="also time one real MNIST epoch")
    args = parser.parse_args(argv)
    repeats, steps = (3, 3) if args.quick else (5, 10)
    with pinned_threads(args.threads) as threads, LoadGuard() as guard:
        info = machine()
        result = {"a_mnist_epoch": part_a(repeats, steps), "b_networks": part_b(repeats)}
        if args.full_epoch:
            result["a_full_epoch"] = full_epoch(repeats)
    result["threads"] = threads
    result["load"] = guard.to_dict()
    result["machine"] = info
    name = "bench_bigan" + ("" if args.threads == 2 else f"_threads{args.threads}")
    name += ".quick.json" if args.quick else ".json"
    path = write_json(RESULTS / name, result)
    a = result["a_mnist_epoch"]
    for k in ("deepfeat", "textbook_simultaneous", "alternating"):
        print(
            f"{k}: {a[k]['seconds_per_step'] * 1000:.0f} ms/step, "
            f"epoch ~{a[k]['epoch_seconds_estimate']:.0f} s"
        )
    print(f"load {guard.to_dict()}; wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
