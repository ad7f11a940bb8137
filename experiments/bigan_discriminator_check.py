"""Why the conv BiGAN's joint discriminator stays at chance: D's loss over the first steps on the
10,000 CIFAR-10 test images, (a) with G and E frozen at their initialisation (can D separate the
pairs at all?) and (b) in ordinary BiGAN training, each with D's weights on z initialised as the
thesis says (N(0, 0.02 x 25), ``latent_init_scale=25``) and with the standard N(0, 0.02) (1).

Same networks as ``bigan_tables.py --part conv`` (encoder widths 16-32-48-48-32, G and D width 16,
z in 64 dims, 32-pixel inputs), Adam 2e-4 / 0.5, batches of 128, one seed. A D loss of
2 ln 2 = 1.386 is chance; lower means D tells encoder pairs (x, E(x)) from generator pairs
(G(z), z).

Usage: python experiments/bigan_discriminator_check.py [--steps 300] [--threads 2]
Writes experiments/results/bigan_discriminator_check/results.json (+ plot).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from deepfeat.report import plots
from deepfeat.report.writer import write_result
from deepfeat.tasks.bigan import TrainOptions, open_training_data
from deepfeat.tasks.bigan.models import build_networks
from deepfeat.tasks.bigan.objective import discriminator_loss, sample_prior, to_latent
from deepfeat.tasks.bigan.steps import bigan_step
from deepfeat.tasks.bigan.training import make_optimizers

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("DEEPFEAT_DATASETS", REPO.parent / "shared" / "datasets"))
OUT = REPO / "experiments" / "results" / "bigan_discriminator_check"
CHANCE = 2 * float(np.log(2))


def options(scale: float) -> TrainOptions:
    return TrainOptions(
        method="bigan", arch="conv", gan_width=16, encoder_widths=(16, 32, 48, 48, 32), latent_dim=64,
        latent_init_scale=scale, epochs=10,
    ).validate()  # fmt: skip


def d_losses(data, scale: float, steps: int, frozen: bool, seed: int = 0) -> list[float]:
    """D's loss per step: only D trained against the initial G and E (``frozen``), or all three."""
    torch.manual_seed(seed)
    opts = options(scale)
    nets = build_networks(opts)
    G, E, D = nets.generator, nets.encoder, nets.discriminator
    optimizers = make_optimizers(nets, opts)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        rows = torch.randint(0, len(data), (opts.batch_size,), generator=gen).numpy()
        x, z = data.batch(rows, gen), sample_prior(opts.batch_size, opts.latent, gen)
        if not frozen:
            out.append(bigan_step(nets, optimizers, x, z, opts)["D"])
            continue
        with torch.no_grad():
            ez, gx = to_latent(E(x)), G(z)
        loss = discriminator_loss(D(x, ez), D(gx, z))
        optimizers["discriminator"].zero_grad()
        loss.backward()
        optimizers["discriminator"].step()
        out.append(float(loss.detach()))
    return out


def path_variances(data, scale: float, seed: int = 0) -> dict[str, float]:
    """At initialisation, on one real batch with encoder pairs: the variance of D's second
    convolution output (the image path) and of the z term added to it, before batch norm."""
    torch.manual_seed(seed)
    opts = options(scale)
    nets = build_networks(opts)
    E, D = nets.encoder, nets.discriminator
    gen = torch.Generator().manual_seed(seed)
    x = data.batch(np.arange(opts.batch_size), gen)
    with torch.no_grad():
        image = D.convs[1](D.act(D.convs[0](x)))
        latent = D.latents[0](sample_prior(opts.batch_size, opts.latent, gen))
        latent_encoder = D.latents[0](to_latent(E(x)))
    return {
        "image_path": float(image.var()),
        "z_term_prior": float(latent.var()),
        "z_term_encoder": float(latent_encoder.var()),
        "ratio_prior_to_image": float(latent.var() / image.var()),
    }


def plot(curves: dict, path: Path) -> Path:
    fig, ax = plots.figure((6.5, 3.8))
    for name, values in curves.items():
        v = np.asarray(values)
        k = 10
        smooth = np.convolve(v, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + k, smooth, label=name)
    ax.axhline(CHANCE, color="k", ls=":", lw=1, label="chance (2 ln 2)")
    ax.set_xlabel("step (batches of 128)")
    ax.set_ylabel("D loss (mean of 10 steps)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return plots.save(fig, path, "conv BiGAN discriminator on CIFAR-10 test images")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cifar = DATASETS / "cifar10_test"
    if not cifar.is_dir():
        print(f"{cifar} is absent; nothing to do")
        return 0
    data = open_training_data(cifar, "conv", 32)
    curves, summary = {}, {}
    for frozen in (True, False):
        for scale in (25.0, 1.0):
            name = f"{'D only, G and E frozen' if frozen else 'BiGAN training'}, z init x{scale:g}"
            curves[name] = d_losses(data, scale, args.steps, frozen)
            last = float(np.mean(curves[name][-50:]))
            summary[name] = {"first_50": float(np.mean(curves[name][:50])), "last_50": last}
            print(f"{name}: D loss {summary[name]['first_50']:.3f} (first 50) -> {last:.3f} (last 50)")
    variances = {f"z init x{scale:g}": path_variances(data, scale) for scale in (25.0, 1.0)}
    for name, v in variances.items():
        ratio = v["ratio_prior_to_image"]
        print(f"{name}: z term / image path variance in D's second convolution {ratio:.1f}")
    result = {
        "chance": CHANCE,
        "steps": args.steps,
        "summary": summary,
        "initial_variances": variances,
        "curves": curves,
    }
    write_result(
        args.out,
        "results",
        result,
        kind="experiment",
        provenance={"data": "CIFAR-10 test (10,000 images, 32 px)", "seed": 0},
        plots={"plot": lambda p: plot(curves, p)},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
