"""One optimisation step of each method (BiGAN and the baselines of Section 5.3.1).

Every step draws nothing itself: it gets the real batch ``x`` and prior samples ``z``. With
``simultaneous`` (appendix 5.5.2) one forward pass serves every network: D's gradients come from D's
loss, G's and E's from theirs (the inverted objective), all taken at the same parameters, then every
optimiser steps. Gradients are taken with :func:`torch.autograd.grad` per parameter group, so the
second pass through D computes only what G and E need (no weight gradients of D). Otherwise D steps
first and G / E then step against the updated D (a second forward pass).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from deepfeat.tasks.bigan.models import Networks
from deepfeat.tasks.bigan.objective import (
    discriminator_loss,
    gan_losses,
    generator_encoder_loss,
    latent_regression_loss,
    reconstruction_loss,
    split_losses,
    to_latent,
)
from deepfeat.tasks.bigan.options import TrainOptions

Optimizers = dict[str, torch.optim.Optimizer]


def _params(*modules: nn.Module | None) -> list[nn.Parameter]:
    return [p for m in modules if m is not None for p in m.parameters()]


def _apply(optimizers: Optimizers, names: Sequence[str], params: list[nn.Parameter], grads) -> None:
    for p, g in zip(params, grads):
        p.grad = g
    for name in names:
        optimizers[name].step()
    for p in params:
        p.grad = None


def bigan_gradients(
    nets: Networks,
    x: torch.Tensor,
    z: torch.Tensor,
    options: TrainOptions,
    *,
    d: bool = True,
    ge: bool = True,
) -> tuple[dict[str, float], list | None, list | None]:
    """Losses and the gradients of D's parameters (``d``) and of G's then E's (``ge``) at the current
    parameters, from one forward pass."""
    G, E, D = nets.generator, nets.encoder, nets.discriminator
    with torch.set_grad_enabled(ge):
        ez = to_latent(E(x))
        gx = G(z)
    real, fake = D(x, ez), D(gx, z)
    losses = split_losses(real, fake, options.inverted)
    grads_d = grads_ge = None
    if d:
        grads_d = torch.autograd.grad(discriminator_loss(real, fake), _params(D), retain_graph=ge)
    if ge:
        loss = generator_encoder_loss(real, fake, options.inverted)
        grads_ge = torch.autograd.grad(loss, _params(G, E))
    return losses, grads_d, grads_ge


def bigan_step(nets: Networks, optimizers: Optimizers, x, z, options: TrainOptions) -> dict[str, float]:
    G, E, D = nets.generator, nets.encoder, nets.discriminator
    if options.simultaneous:
        losses, gd, gge = bigan_gradients(nets, x, z, options)
        _apply(optimizers, ["discriminator"], _params(D), gd)
        _apply(optimizers, ["generator", "encoder"], _params(G, E), gge)
        return losses
    losses, gd, _ = bigan_gradients(nets, x, z, options, ge=False)
    _apply(optimizers, ["discriminator"], _params(D), gd)
    _, _, gge = bigan_gradients(nets, x, z, options, d=False)
    _apply(optimizers, ["generator", "encoder"], _params(G, E), gge)
    return losses


def gan_gradients(
    nets: Networks,
    x: torch.Tensor,
    z: torch.Tensor,
    options: TrainOptions,
    *,
    d: bool = True,
    ge: bool = True,
) -> tuple[dict[str, float], list | None, list | None]:
    """GAN with an x-only D, plus the latent regressor E for methods ``lr`` / ``jlr``: losses, D's
    gradients and G's then E's."""
    G, E, D = nets.generator, nets.encoder, nets.discriminator
    with torch.set_grad_enabled(ge):
        gx = G(z)
    real, fake = D(x), D(gx)
    d_loss, g_loss = gan_losses(real, fake, options.inverted)
    losses = {"D": float(d_loss.detach()), "G": float(g_loss.detach())}
    grads_d = grads_ge = None
    if d:
        grads_d = torch.autograd.grad(d_loss, _params(D), retain_graph=ge)
    if ge:
        if E is None:
            grads_ge = torch.autograd.grad(g_loss, _params(G))
        else:
            joint = options.method == "jlr"
            e_loss = latent_regression_loss(E(gx if joint else gx.detach()), z)
            losses["E"] = float(e_loss.detach())
            total = g_loss + options.jlr_weight * e_loss if joint else g_loss
            grads_g = torch.autograd.grad(total, _params(G), retain_graph=True)
            grads_ge = list(grads_g) + list(torch.autograd.grad(e_loss, _params(E)))
    return losses, grads_d, grads_ge


def gan_step(nets: Networks, optimizers: Optimizers, x, z, options: TrainOptions) -> dict[str, float]:
    G, E, D = nets.generator, nets.encoder, nets.discriminator
    rest = ["generator"] + (["encoder"] if E is not None else [])
    if options.simultaneous:
        losses, gd, gge = gan_gradients(nets, x, z, options)
        _apply(optimizers, ["discriminator"], _params(D), gd)
        _apply(optimizers, rest, _params(G, E), gge)
        return losses
    losses, gd, _ = gan_gradients(nets, x, z, options, ge=False)
    _apply(optimizers, ["discriminator"], _params(D), gd)
    _, _, gge = gan_gradients(nets, x, z, options, d=False)
    _apply(optimizers, rest, _params(G, E), gge)
    return losses


def autoencoder_step(nets: Networks, optimizers: Optimizers, x, z, options: TrainOptions) -> dict[str, float]:
    """Autoencoder G(E(x)) with the l2 or l1 pixel loss (``z`` is not used)."""
    G, E = nets.generator, nets.encoder
    loss = reconstruction_loss(G(to_latent(E(x))).reshape(x.shape), x, options.method.removeprefix("ae-"))
    _apply(optimizers, ["generator", "encoder"], _params(G, E), torch.autograd.grad(loss, _params(G, E)))
    return {"AE": float(loss.detach())}


Step = Callable[[Networks, Optimizers, torch.Tensor, torch.Tensor, TrainOptions], dict[str, float]]
STEPS: dict[str, Step] = {
    "bigan": bigan_step,
    "gan": gan_step,
    "lr": gan_step,
    "jlr": gan_step,
    "ae-l2": autoencoder_step,
    "ae-l1": autoencoder_step,
}
