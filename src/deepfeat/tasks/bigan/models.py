"""The networks of a BiGAN run: generator G, encoder E and discriminator D, in the thesis' two
architectures (see :mod:`.options`).

MLP (appendix 5.5.3.1), every network with two hidden layers of ``hidden`` units, the first followed
by a non-linearity, the second by parameter-free batch norm and a non-linearity, then a linear
prediction layer: leaky ReLU (0.2) in D and E, ReLU in G, whose 784 outputs pass a sigmoid (pixels in
[0, 1]). The joint discriminator adds a learned linear map of z to the input of its second
non-linearity (the thesis: z enters every layer after the first one that sees x). The x-only
discriminator of the GAN baselines is the encoder's architecture with one output.

Conv (appendix 5.5.3.2 at CPU size, inputs of 32 or 64 pixels in [-1, 1]): G is DCGAN's generator (a
linear map of z to a 4x4 map of 4 or 8 x ``gan_width`` channels, then 5x5 stride-2 transposed
convolutions halving the channels, batch norm and ReLU after each but the last, tanh output); the joint
D is DCGAN's discriminator (5x5 stride-2 convolutions doubling the channels, leaky ReLU, batch norm
after all but the first) with z mapped linearly to each later convolution's channels and added before
its batch norm, those weights initialised 25 times larger (5x5 kernels) as the thesis says (the
option ``latent_init_scale``); E is the
AlexNet-like :class:`~deepfeat.backbones.bigan.ConvEncoder`, which with one output is also the
x-only discriminator of the baselines (the thesis' discriminator baseline uses the encoder's
architecture). Every weight starts N(0, 0.02).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from deepfeat.backbones.bigan import INIT_STD, LEAK, ConvEncoder, init_normal_
from deepfeat.tasks.bigan.options import TrainOptions

MNIST_PIXELS = 28 * 28


class MLPEncoder(nn.Module):
    """x (N, in_features) -> logits (N, out_features); ``features`` also returns the hidden layers."""

    def __init__(self, in_features: int = MNIST_PIXELS, hidden: int = 1024, out_features: int = 50):
        super().__init__()
        self.hidden1 = nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(LEAK))
        self.hidden2 = nn.Sequential(
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden, affine=False), nn.LeakyReLU(LEAK)
        )
        self.output = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden2(self.hidden1(x)))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"hidden1", "hidden2", "output"} for a batch."""
        h1 = self.hidden1(x)
        h2 = self.hidden2(h1)
        return {"hidden1": h1, "hidden2": h2, "output": self.output(h2)}


class MLPGenerator(nn.Module):
    """z (N, latent) -> images (N, out_features) in [0, 1]."""

    def __init__(self, latent: int = 50, hidden: int = 1024, out_features: int = MNIST_PIXELS):
        super().__init__()
        self.hidden1 = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU())
        self.hidden2 = nn.Sequential(
            nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden, affine=False), nn.ReLU()
        )
        self.output = nn.Linear(hidden, out_features)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.output(self.hidden2(self.hidden1(z))))


class MLPJointDiscriminator(nn.Module):
    """(x, z) -> one logit per pair; z enters the second hidden layer through ``latent2``."""

    def __init__(self, in_features: int = MNIST_PIXELS, latent: int = 50, hidden: int = 1024):
        super().__init__()
        self.hidden1 = nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(LEAK))
        self.linear2 = nn.Linear(hidden, hidden, bias=False)
        self.latent2 = nn.Linear(latent, hidden, bias=False)
        self.norm2 = nn.BatchNorm1d(hidden, affine=False)
        self.act2 = nn.LeakyReLU(LEAK)
        self.output = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h2 = self.act2(self.norm2(self.linear2(self.hidden1(x)) + self.latent2(z)))
        return self.output(h2).squeeze(1)


def _upsamplings(input_size: int) -> int:
    return round(math.log2(input_size // 4))


class DCGANGenerator(nn.Module):
    """z (N, latent) -> images (N, 3, S, S) in [-1, 1], S = 4 * 2^k."""

    def __init__(self, latent: int = 64, width: int = 32, input_size: int = 32):
        super().__init__()
        k = _upsamplings(input_size)
        channels = [width * 2 ** (k - 1 - i) for i in range(k)] + [3]
        self.start = channels[0]
        self.project = nn.Linear(latent, channels[0] * 16, bias=False)
        self.norm0 = nn.BatchNorm2d(channels[0])
        layers: list[nn.Module] = []
        for i in range(k):
            last = i == k - 1
            layers.append(
                nn.ConvTranspose2d(channels[i], channels[i + 1], 5, 2, 2, output_padding=1, bias=last)
            )
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(channels[i + 1]), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(len(z), self.start, 4, 4)
        return self.body(torch.relu(self.norm0(h)))


class DCGANJointDiscriminator(nn.Module):
    """(x (N, 3, S, S), z (N, latent)) -> one logit per pair; z is added (broadcast over positions)
    to the pre-batch-norm output of every convolution after the first."""

    def __init__(self, latent: int = 64, width: int = 32, input_size: int = 32):
        super().__init__()
        k = _upsamplings(input_size)
        channels = [3] + [width * 2**i for i in range(k)]
        self.convs = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], 5, 2, 2, bias=i == 0) for i in range(k)
        )
        self.latents = nn.ModuleList(nn.Linear(latent, channels[i + 1], bias=False) for i in range(1, k))
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels[i + 1]) for i in range(1, k))
        self.act = nn.LeakyReLU(LEAK)
        self.output = nn.Linear(channels[-1] * 16, 1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.act(self.convs[0](x))
        for conv, latent, norm in zip(self.convs[1:], self.latents, self.norms):
            h = self.act(norm(conv(h) + latent(z)[:, :, None, None]))
        return self.output(h.flatten(1)).squeeze(1)


@dataclass
class Networks:
    """The networks of one run (None where the method has none)."""

    generator: nn.Module | None = None
    encoder: nn.Module | None = None
    discriminator: nn.Module | None = None

    def items(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in vars(self).items() if m is not None]

    def train(self, mode: bool = True) -> None:
        for _, m in self.items():
            m.train(mode)

    def to(self, device) -> Networks:
        for _, m in self.items():
            m.to(device)
        return self


def build_networks(options: TrainOptions, in_features: int = MNIST_PIXELS) -> Networks:
    """The method's networks for ``options`` (architecture, sizes), initialised N(0, 0.02) from the
    global torch RNG (seed it first); ``in_features``: pixels of an MLP input vector."""
    d, w, s = options.latent, options.gan_width, options.input_size
    wanted = options.networks
    nets = Networks()
    joint = options.method == "bigan"
    if options.arch == "mlp":
        h = options.hidden
        if "generator" in wanted:
            nets.generator = MLPGenerator(d, h, in_features)
        if "encoder" in wanted:
            nets.encoder = MLPEncoder(in_features, h, d)
        if "discriminator" in wanted:
            nets.discriminator = (
                MLPJointDiscriminator(in_features, d, h) if joint else MLPEncoder(in_features, h, 1)
            )
    else:
        widths = options.encoder_widths
        if "generator" in wanted:
            nets.generator = DCGANGenerator(d, w, s)
        if "encoder" in wanted:
            nets.encoder = ConvEncoder(d, widths, s)
        if "discriminator" in wanted:
            nets.discriminator = DCGANJointDiscriminator(d, w, s) if joint else ConvEncoder(1, widths, s)
    for _, net in nets.items():
        init_normal_(net)
    if isinstance(nets.discriminator, DCGANJointDiscriminator):
        with torch.no_grad():
            for latent in nets.discriminator.latents:  # weights multiplying z into 5x5 conv outputs
                latent.weight.normal_(0.0, INIT_STD * options.latent_init_scale)
    return nets


def feature_network(options: TrainOptions) -> dict:
    """Which network of the run holds its features, and how to rebuild it (checkpoint metadata, read
    by :func:`deepfeat.backbones.bigan.load_bigan`)."""
    name = "discriminator" if options.method == "gan" else "encoder"
    out = options.latent if name == "encoder" else 1
    if options.arch == "conv":
        return ConvEncoder(out, options.encoder_widths, options.input_size).config() | {"state": name}
    return {"kind": "mlp", "hidden": options.hidden, "out_features": out, "state": name}


def decayed_parameters(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(multiplicative weights of linear and convolution layers, everything else: biases, batch norm
    scales and shifts): weight decay applies to the first group only."""
    decay, other = [], []
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            weight = name == "weight" and isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)
            (decay if weight else other).append(p)
    return decay, other
