"""The BiGAN objective of thesis chapter 5 and the losses of its baselines, on discriminator logits.

With D(x, z) = sigmoid(l(x, z)) and the per-sample logits ``real`` = l(x, E(x)) (encoder pairs) and
``fake`` = l(G(z), z) (generator pairs):

- the value (5.3): V = E_x[log D(x, E(x))] + E_z[log(1 - D(G(z), z))]
  = -mean softplus(-real) - mean softplus(fake); D ascends V, i.e. minimises :func:`discriminator_loss`;
- the inverted objective of Section 5.2.4 / appendix 5.5.2 (real and generated labels swapped):
  Lambda = E_x[log(1 - D(x, E(x)))] + E_z[log D(G(z), z)]; G and E ascend Lambda, i.e. minimise
  :func:`generator_encoder_loss` (``inverted=False`` gives the original minimax: they descend V);
- for a fixed E and G the optimal discriminator is D* = dP_EX / d(P_EX + P_GZ) (Proposition 1), and
  V(D*) = 2 JS(P_EX || P_GZ) - log 4 (Proposition 2): :func:`optimal_discriminator`,
  :func:`jensen_shannon` compute both for distributions given as probability tables.

The latent prior is U(-1, 1)^d. Encoders predict logits; :func:`to_latent` maps them into the prior's
support, 2 sigmoid(l) - 1, as the reference implementation does for a uniform prior. The latent
regressor baselines (LR, JLR) fit E(G(z)) to z with the sigmoid cross-entropy the thesis names, on
(z + 1) / 2, averaged over latent dimensions; the autoencoders use l2 or l1 pixel losses.

Every expectation is a mean over samples, or a weighted mean when ``*_weight`` (summing to 1) is
given, which lets a toy problem compute the exact expectations over a finite support.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from deepfeat.errors import ConfigError

RECONSTRUCTION_NORMS = ("l2", "l1")


def sample_prior(
    n: int, dim: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """``n`` samples of the latent prior U(-1, 1)^dim (float32)."""
    z = torch.rand(n, dim, generator=generator)
    return (2.0 * z - 1.0).to(device) if device is not None else 2.0 * z - 1.0


def to_latent(logits: torch.Tensor) -> torch.Tensor:
    """Encoder logits mapped into the prior's support (-1, 1): 2 sigmoid(l) - 1."""
    return 2.0 * torch.sigmoid(logits) - 1.0


def _mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean()
    return (values * weight).sum()


def value(
    real: torch.Tensor,
    fake: torch.Tensor,
    real_weight: torch.Tensor | None = None,
    fake_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """V(D, E, G) of (5.3) from the logits of encoder pairs (``real``) and generator pairs (``fake``)."""
    return -_mean(F.softplus(-real), real_weight) - _mean(F.softplus(fake), fake_weight)


def inverted_value(
    real: torch.Tensor,
    fake: torch.Tensor,
    real_weight: torch.Tensor | None = None,
    fake_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lambda(D, G, E) of appendix 5.5.2: the labels of encoder and generator pairs swapped."""
    return -_mean(F.softplus(real), real_weight) - _mean(F.softplus(-fake), fake_weight)


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """What D minimises: -V (the binary cross-entropy of real pairs labelled 1, generated ones 0)."""
    return -value(real, fake)


def generator_encoder_loss(real: torch.Tensor, fake: torch.Tensor, inverted: bool = True) -> torch.Tensor:
    """What G and E minimise: -Lambda (the inverted objective, default) or V (the minimax objective)."""
    return -inverted_value(real, fake) if inverted else value(real, fake)


def split_losses(real: torch.Tensor, fake: torch.Tensor, inverted: bool = True) -> dict[str, float]:
    """The three losses shown while training: D's, G's term (generator pairs) and E's term (encoder
    pairs) of G and E's loss."""
    with torch.no_grad():
        d = float(discriminator_loss(real, fake))
        if inverted:
            g, e = float(F.softplus(-fake).mean()), float(F.softplus(real).mean())
        else:
            g, e = float(-F.softplus(fake).mean()), float(-F.softplus(-real).mean())
    return {"D": d, "G": g, "E": e}


def gan_losses(real: torch.Tensor, fake: torch.Tensor, inverted: bool = True) -> tuple[torch.Tensor, ...]:
    """(D's loss, G's loss) of a standard GAN (x-only discriminator): G minimises -log D(G(z)) with
    the swapped labels (``inverted``) or log(1 - D(G(z))) otherwise."""
    d_loss = F.softplus(-real).mean() + F.softplus(fake).mean()
    g_loss = F.softplus(-fake).mean() if inverted else -F.softplus(fake).mean()
    return d_loss, g_loss


def latent_regression_loss(logits: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Sigmoid cross-entropy between E's logits and the latent sample z in (-1, 1) rescaled to (0, 1),
    averaged over samples and latent dimensions (the LR / JLR baselines' L(z, E(G(z))))."""
    return F.binary_cross_entropy_with_logits(logits, (z + 1.0) / 2.0)


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Autoencoder loss: mean over samples and pixels of the squared (``"l2"``) or absolute (``"l1"``)
    error."""
    if norm == "l2":
        return (recon - x).pow(2).mean()
    if norm == "l1":
        return (recon - x).abs().mean()
    raise ConfigError(f"reconstruction norm must be one of {', '.join(RECONSTRUCTION_NORMS)}, got {norm!r}")


# -- closed forms on finite supports (Propositions 1 and 2) ------------------------------------------
def optimal_discriminator(p_ex: torch.Tensor, p_gz: torch.Tensor) -> torch.Tensor:
    """D* = P_EX / (P_EX + P_GZ) on a finite joint support (probability tables of one shape); 0.5
    where both are 0 (outside both supports D* is not determined; any value is optimal)."""
    total = p_ex + p_gz
    return torch.where(total > 0, p_ex / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)


def jensen_shannon(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """JS(P || Q) in nats for probability tables of one shape."""
    m = (p + q) / 2

    def kl(a: torch.Tensor) -> torch.Tensor:
        pos = a > 0
        return (a[pos] * (a[pos].log() - m[pos].log())).sum()

    return (kl(p) + kl(q)) / 2


LOG4 = math.log(4.0)
