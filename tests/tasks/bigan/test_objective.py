"""The BiGAN objective: closed forms, gradients against hand derivations and finite differences (no
autograd in the references), and the optimal discriminator of Propositions 1 and 2 on toy problems."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepfeat.tasks.bigan.models import MLPEncoder, MLPGenerator, MLPJointDiscriminator, Networks
from deepfeat.tasks.bigan.objective import (
    LOG4,
    discriminator_loss,
    generator_encoder_loss,
    inverted_value,
    jensen_shannon,
    latent_regression_loss,
    optimal_discriminator,
    reconstruction_loss,
    sample_prior,
    to_latent,
    value,
)
from deepfeat.tasks.bigan.steps import bigan_gradients, gan_gradients
from tests.tasks.bigan.conftest import tiny


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_value_and_inverted_value_match_their_definitions():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(0, 3, 50), rng.normal(0, 3, 70)
    d_real, d_fake = sigmoid(real), sigmoid(fake)
    v = np.log(d_real).mean() + np.log(1 - d_fake).mean()  # (5.3)
    lam = np.log(1 - d_real).mean() + np.log(d_fake).mean()  # appendix 5.5.2
    t_real, t_fake = torch.tensor(real), torch.tensor(fake)
    assert float(value(t_real, t_fake)) == pytest.approx(v, rel=1e-12)
    assert float(inverted_value(t_real, t_fake)) == pytest.approx(lam, rel=1e-12)
    assert float(discriminator_loss(t_real, t_fake)) == pytest.approx(-v, rel=1e-12)
    assert float(generator_encoder_loss(t_real, t_fake)) == pytest.approx(-lam, rel=1e-12)
    assert float(generator_encoder_loss(t_real, t_fake, inverted=False)) == pytest.approx(v, rel=1e-12)


def test_logit_gradients_equal_the_hand_derived_ones():
    """d(-V)/dl: -sigmoid(-l)/n for encoder pairs, sigmoid(l)/n for generator pairs; the inverted
    objective swaps them: sigmoid(l)/n and -sigmoid(-l)/n."""
    rng = np.random.default_rng(1)
    real = torch.tensor(rng.normal(0, 2, 40), requires_grad=True)
    fake = torch.tensor(rng.normal(0, 2, 30), requires_grad=True)
    r, f = real.detach().numpy(), fake.detach().numpy()
    g_real, g_fake = torch.autograd.grad(discriminator_loss(real, fake), (real, fake))
    np.testing.assert_allclose(g_real.numpy(), -sigmoid(-r) / len(r), rtol=1e-12)
    np.testing.assert_allclose(g_fake.numpy(), sigmoid(f) / len(f), rtol=1e-12)
    g_real, g_fake = torch.autograd.grad(generator_encoder_loss(real, fake), (real, fake))
    np.testing.assert_allclose(g_real.numpy(), sigmoid(r) / len(r), rtol=1e-12)
    np.testing.assert_allclose(g_fake.numpy(), -sigmoid(-f) / len(f), rtol=1e-12)
    # the inverted objective has the same fixed points but a far stronger signal where D wins
    # (D(G(z)) near 0): |d log D / dl| = sigmoid(-l) -> 1 while |d log(1 - D) / dl| = sigmoid(l) -> 0
    assert sigmoid(8.0) > 0.999 and sigmoid(-8.0) < 1e-3


def test_baseline_losses_match_their_formulas():
    rng = np.random.default_rng(2)
    logits, z = rng.normal(0, 2, (16, 5)), rng.uniform(-1, 1, (16, 5))
    t = (z + 1) / 2
    p = sigmoid(logits)
    expected = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    got = latent_regression_loss(torch.tensor(logits), torch.tensor(z))
    assert float(got) == pytest.approx(expected, rel=1e-10)
    a, b = rng.normal(size=(4, 9)), rng.normal(size=(4, 9))
    assert float(reconstruction_loss(torch.tensor(a), torch.tensor(b), "l2")) == pytest.approx(
        ((a - b) ** 2).mean()
    )
    assert float(reconstruction_loss(torch.tensor(a), torch.tensor(b), "l1")) == pytest.approx(
        np.abs(a - b).mean()
    )


def test_prior_and_latent_map_stay_in_the_support():
    z = sample_prior(10_000, 3, torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() < 1
    assert abs(float(z.mean())) < 0.02 and float(z.var()) == pytest.approx(1 / 3, abs=0.01)  # U(-1, 1)
    e = to_latent(torch.tensor([-50.0, 0.0, 50.0]))
    assert e.tolist() == pytest.approx([-1.0, 0.0, 1.0])


# -- gradients of whole training steps against finite differences -----------------------------------
def _tiny_bigan() -> Networks:
    torch.manual_seed(0)
    nets = Networks(
        generator=MLPGenerator(latent=2, hidden=5, out_features=4),
        encoder=MLPEncoder(in_features=4, hidden=5, out_features=2),
        discriminator=MLPJointDiscriminator(in_features=4, latent=2, hidden=5),
    )
    for _, net in nets.items():
        net.double().train()
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(0, 0.5)  # large enough for non-trivial gradients
    return nets


def _numeric_grad(loss_fn, params: list[torch.Tensor], eps: float = 1e-6) -> list[np.ndarray]:
    out = []
    with torch.no_grad():
        for p in params:
            g = np.zeros(p.shape)
            flat = p.view(-1)
            for i in range(flat.numel()):
                old = float(flat[i])
                flat[i] = old + eps
                up = float(loss_fn())
                flat[i] = old - eps
                down = float(loss_fn())
                flat[i] = old
                g.flat[i] = (up - down) / (2 * eps)
            out.append(g)
    return out


@pytest.mark.parametrize("inverted", [True, False])
def test_bigan_step_gradients_equal_finite_differences(inverted):
    nets = _tiny_bigan()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(6, 4, generator=gen, dtype=torch.float64)
    z = sample_prior(6, 2, gen).double()
    opts = tiny(inverted=inverted)
    _, grads_d, grads_ge = bigan_gradients(nets, x, z, opts)
    G, E, D = nets.generator, nets.encoder, nets.discriminator

    def logits():
        return D(x, to_latent(E(x))), D(G(z), z)

    num_d = _numeric_grad(lambda: discriminator_loss(*logits()), list(D.parameters()))
    num_ge = _numeric_grad(
        lambda: generator_encoder_loss(*logits(), inverted=inverted), [*G.parameters(), *E.parameters()]
    )
    for got, want in zip(grads_d, num_d):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-8)
    for got, want in zip(grads_ge, num_ge):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-8)


def test_latent_regressor_gradients_leave_g_alone_and_the_joint_one_does_not():
    torch.manual_seed(0)
    G = MLPGenerator(latent=2, hidden=5, out_features=4).double()
    D = MLPEncoder(in_features=4, hidden=5, out_features=1).double()
    E = MLPEncoder(in_features=4, hidden=5, out_features=2).double()
    x = torch.rand(6, 4, dtype=torch.float64)
    z = sample_prior(6, 2, torch.Generator().manual_seed(4)).double()
    g_params = list(G.parameters())
    _, _, plain = gan_gradients(Networks(G, None, D), x, z, tiny(method="gan"))
    _, _, lr = gan_gradients(Networks(G, E, D), x, z, tiny(method="lr"))
    _, _, jlr = gan_gradients(Networks(G, E, D), x, z, tiny(method="jlr", jlr_weight=0.25))
    for a, b in zip(plain, lr[: len(g_params)]):
        torch.testing.assert_close(a, b)  # E never influences G in the latent regressor

    def joint_g_loss():
        gx = G(z)
        fake = D(gx).squeeze(1)
        return torch.nn.functional.softplus(-fake).mean() + 0.25 * latent_regression_loss(E(gx), z)

    for got, want in zip(jlr[: len(g_params)], _numeric_grad(joint_g_loss, g_params)):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-8)


# -- the optimal discriminator on toy problems -------------------------------------------------------
def _fit_table_discriminator(p_ex: torch.Tensor, p_gz: torch.Tensor) -> tuple[torch.Tensor, float]:
    """D as a free table of logits over the joint space, trained to maximise V with exact
    expectations (the library's value() weighted by the probability tables)."""
    logits = torch.zeros(p_ex.shape, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([logits], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = -value(logits.flatten(), logits.flatten(), p_ex.flatten(), p_gz.flatten())
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    with torch.no_grad():
        v = float(value(logits.flatten(), logits.flatten(), p_ex.flatten(), p_gz.flatten()))
    return torch.sigmoid(logits.detach()), v


def _joint_tables(p_x, p_z, encoder, generator):
    """P_EX(x, z) = p_X(x) 1[z = E(x)] and P_GZ(x, z) = p_Z(z) 1[x = G(z)] as (|X|, |Z|) tables."""
    p_ex = torch.zeros(len(p_x), len(p_z), dtype=torch.float64)
    p_gz = torch.zeros_like(p_ex)
    for x, p in enumerate(p_x):
        p_ex[x, encoder[x]] += p
    for z, p in enumerate(p_z):
        p_gz[generator[z], z] += p
    return p_ex, p_gz


def test_optimal_discriminator_is_the_density_ratio_and_value_the_js_divergence():
    p_x = [0.1, 0.2, 0.3, 0.4]
    p_z = [0.5, 0.25, 0.25]
    encoder = [0, 1, 2, 2]  # E
    generator = [0, 3, 2]  # G: inverts E at z = 0 and z = 2 only
    p_ex, p_gz = _joint_tables(p_x, p_z, encoder, generator)
    d, v = _fit_table_discriminator(p_ex, p_gz)
    d_star = optimal_discriminator(p_ex, p_gz)
    both = (p_ex > 0) & (p_gz > 0)
    only_e, only_g = (p_ex > 0) & (p_gz == 0), (p_gz > 0) & (p_ex == 0)
    assert both.sum() == 2 and only_e.any() and only_g.any()
    torch.testing.assert_close(d[both], d_star[both], atol=1e-6, rtol=0)  # D* = dP_EX / d(P_EX + P_GZ)
    assert (d[only_e] > 0.999).all() and (d[only_g] < 0.001).all()  # (a) only: 1; (b) only: 0
    assert v == pytest.approx(2 * float(jensen_shannon(p_ex, p_gz)) - LOG4, abs=1e-4)  # Proposition 2


def test_inverse_encoder_and_generator_fool_the_optimal_discriminator():
    p = [0.25, 0.25, 0.5]
    perm = [2, 0, 1]
    inverse = [perm.index(i) for i in range(3)]
    p_x = [p[perm[x]] for x in range(3)]  # X = G(Z) with G = inverse permutation
    p_ex, p_gz = _joint_tables(p_x, p, perm, inverse)
    torch.testing.assert_close(p_ex, p_gz)  # E = G^-1 gives P_EX = P_GZ (Theorem 1)
    d, v = _fit_table_discriminator(p_ex, p_gz)
    assert float(jensen_shannon(p_ex, p_gz)) == 0.0
    torch.testing.assert_close(d[p_ex > 0], torch.full((3,), 0.5, dtype=torch.float64), atol=1e-8, rtol=0)
    assert v == pytest.approx(-math.log(4), abs=1e-10)  # C(E, G) = -log 4
