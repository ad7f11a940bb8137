"""The networks: the appendix architectures' shapes and ranges, z entering the joint discriminator,
the initialisation, weight decay groups, and batch norm folded into the encoder's convolutions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepfeat.backbones.bigan import ConvEncoder, conv_encoder_catalog, fold_batchnorm, init_normal_
from deepfeat.errors import ConfigError
from deepfeat.tasks.bigan.models import (
    DCGANJointDiscriminator,
    MLPJointDiscriminator,
    build_networks,
    decayed_parameters,
)
from tests.tasks.bigan.conftest import tiny


def test_mlp_networks_follow_the_appendix():
    torch.manual_seed(0)
    nets = build_networks(tiny(arch="mlp", hidden=1024, latent_dim=50))
    G, E, D = nets.generator, nets.encoder, nets.discriminator
    z, x = torch.rand(8, 50) * 2 - 1, torch.rand(8, 784)
    out = G(z)
    assert out.shape == (8, 784) and out.min() >= 0 and out.max() <= 1  # sigmoid pixels
    assert E(x).shape == (8, 50) and D(x, z).shape == (8,)
    for net, act in ((G, nn.ReLU), (E, nn.LeakyReLU), (D, nn.LeakyReLU)):
        norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
        assert len(norms) == 1 and not norms[0].affine  # parameter-free, after the second hidden layer
        assert any(isinstance(m, act) for m in net.modules())
        linears = [m for m in net.modules() if isinstance(m, nn.Linear) and m.out_features == 1024]
        assert len(linears) >= 2
    assert all(m.negative_slope == 0.2 for m in E.modules() if isinstance(m, nn.LeakyReLU))
    assert isinstance(D, MLPJointDiscriminator)


@pytest.mark.parametrize("size", [32, 64])
def test_conv_networks_at_both_input_sizes(size):
    torch.manual_seed(0)
    nets = build_networks(tiny(arch="conv", input_size=size, latent_dim=8, gan_width=4))
    z = torch.rand(4, 8) * 2 - 1
    images = nets.generator(z)
    assert images.shape == (4, 3, size, size) and images.abs().max() <= 1  # tanh, data in [-1, 1]
    assert nets.encoder(images).shape == (4, 8)
    assert nets.discriminator(images, z).shape == (4,)
    assert isinstance(nets.discriminator, DCGANJointDiscriminator)
    strides = [m.stride for m in nets.discriminator.convs]
    assert all(s == (2, 2) for s in strides) and len(strides) == {32: 3, 64: 4}[size]


def test_joint_discriminator_sees_z_and_its_z_weights_start_larger():
    torch.manual_seed(0)
    nets = build_networks(tiny(arch="conv", latent_dim=8, gan_width=8))
    D = nets.discriminator.eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z1, z2 = torch.zeros(2, 8), torch.ones(2, 8)
    assert not torch.allclose(D(x, z1), D(x, z2))
    with torch.no_grad():
        conv_std = float(torch.cat([c.weight.flatten() for c in D.convs]).std())
        z_std = float(torch.cat([m.weight.flatten() for m in D.latents]).std())
    assert conv_std == pytest.approx(0.02, rel=0.1)
    assert z_std == pytest.approx(0.5, rel=0.15)  # 25 times: added to the outputs of 5x5 convolutions
    torch.manual_seed(0)
    standard = build_networks(tiny(arch="conv", latent_dim=8, gan_width=8, latent_init_scale=1.0))
    with torch.no_grad():
        z_std = float(torch.cat([m.weight.flatten() for m in standard.discriminator.latents]).std())
    assert z_std == pytest.approx(0.02, rel=0.15)


def test_latent_init_scale_is_validated():
    with pytest.raises(ConfigError, match="latent_init_scale"):
        tiny(arch="conv", latent_init_scale=0.0).validate()


def test_baselines_get_their_networks():
    assert build_networks(tiny(method="gan")).encoder is None
    assert build_networks(tiny(method="ae-l1")).discriminator is None
    only = build_networks(tiny(method="random"))
    assert only.generator is None and only.discriminator is None and only.encoder is not None
    conv_d = build_networks(tiny(method="gan", arch="conv")).discriminator
    assert isinstance(conv_d, ConvEncoder) and conv_d.out_features == 1  # the encoder's architecture


def test_weight_decay_only_on_multiplicative_weights():
    net = ConvEncoder(4, (4, 6, 8, 8, 4), 32)
    decay, other = decayed_parameters(net)
    assert {p.dim() for p in decay} == {2, 4}  # linear and conv weights
    assert all(p.dim() == 1 for p in other)  # biases, batch norm scales and shifts
    assert len(decay) + len(other) == len(list(net.parameters()))


@pytest.mark.parametrize("size", [32, 64])
def test_folded_batchnorm_equals_the_network_in_eval_mode(size):
    torch.manual_seed(0)
    net = init_normal_(ConvEncoder(5, (6, 8, 10, 10, 6), size))
    with torch.no_grad():  # statistics and affine parameters far from the defaults
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.01, 0.5)
                m.weight.normal_(1, 0.5)
                m.bias.normal_(0, 0.5)
    net.eval()
    folded = fold_batchnorm(net).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(3, 3, size, size) * 2 - 1
    torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is left alone


def test_catalog_strides_and_channels_match_the_network():
    for size in (32, 64):
        net = ConvEncoder(7, (4, 6, 8, 8, 4), size).eval()
        catalog = conv_encoder_catalog((4, 6, 8, 8, 4), size, 7)
        outputs: dict[str, torch.Tensor] = {}

        def keep(name: str, store: dict = outputs):
            return lambda _m, _i, o: store.__setitem__(name, o)

        hooks = [net.get_submodule(layer.module).register_forward_hook(keep(layer.name)) for layer in catalog]
        net(torch.zeros(1, 3, size, size))
        for h in hooks:
            h.remove()
        for layer in catalog:
            out = outputs[layer.name]
            assert out.shape[1] == layer.channels
            if layer.spatial:
                assert out.shape[2] == size // layer.stride


def test_encoder_config_is_checked():
    with pytest.raises(ConfigError, match="input_size"):
        ConvEncoder(4, input_size=48)
    with pytest.raises(ConfigError, match="5 positive"):
        ConvEncoder(4, widths=(4, 4, 4))
