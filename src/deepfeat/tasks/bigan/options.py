"""Typed options of a BiGAN training run, checked before any data is read or model built.

Methods (thesis Section 5.3.1; the same architectures and optimiser for all):

========== ==========================================================================================
bigan      generator G, encoder E and joint discriminator D(x, z) (the thesis' model)
gan        a standard GAN: G and an x-only discriminator; its hidden layers are the "D" features
lr         latent regressor: a GAN, plus E trained to predict z from G(z) (sigmoid cross-entropy);
           E never influences G
jlr        joint latent regressor: as lr, and G also minimises the regression loss (``jlr_weight``)
ae-l2      autoencoder G(E(x)) with squared pixel error; ae-l1 with absolute error
random     no training: the initialisation, batch norm statistics estimated on the data
========== ==========================================================================================

Architectures: ``mlp`` (appendix 5.5.3.1: two hidden layers of 1024, leaky ReLU 0.2 in D and E,
ReLU in G, parameter-free batch norm after the second hidden layer; permutation-invariant MNIST) and
``conv`` (appendix 5.5.3.2 at CPU size: DCGAN-style G and joint D of ``gan_width`` base channels, the
AlexNet-like encoder of :mod:`deepfeat.backbones.bigan` with ``encoder_widths``; 32 or 64 pixels).

Optimisation (appendix 5.5.3): Adam (lr 2e-4, beta1 0.5, beta2 0.999), mini-batches of 128, l2 weight
decay 2.5e-5 on multiplicative weights only, N(0, 0.02) initialisation; ``decay="exponential"``
keeps the step size for the first half of the epochs and decays it exponentially to
``final_lr_factor`` times it (2e-6) at the last epoch. D, G and E are updated simultaneously from one
forward pass (``simultaneous``; alternating D and G/E updates otherwise), G and E with the inverted
objective (``inverted``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from deepfeat.backbones.bigan import ENCODER_WIDTHS, check_encoder_config
from deepfeat.validation import check_choice, check_device, check_float, check_int

METHODS = ("bigan", "gan", "lr", "jlr", "ae-l2", "ae-l1", "random")
ARCHS = ("mlp", "conv")
DECAYS = ("exponential", "none")
#: networks each method trains ("random" trains none but keeps an encoder)
NETWORKS = {
    "bigan": ("generator", "encoder", "discriminator"),
    "gan": ("generator", "discriminator"),
    "lr": ("generator", "encoder", "discriminator"),
    "jlr": ("generator", "encoder", "discriminator"),
    "ae-l2": ("generator", "encoder"),
    "ae-l1": ("generator", "encoder"),
    "random": ("encoder",),
}
DEFAULT_LATENT = {"mlp": 50, "conv": 64}


@dataclass
class TrainOptions:
    """Settings of one run (see the module docstring); ``latent_dim`` None: 50 (mlp, the thesis'
    MNIST prior) or 64 (conv; the thesis uses 200 on ImageNet). ``latent_init_scale``: the conv joint
    D's weights on z (added to 5x5 convolution outputs) start N(0, 0.02 x this); the thesis' 25 (the
    kernel area) makes z outweigh the image path at the start, and with CPU-length runs the
    discriminator then never leaves chance level (see the README's BiGAN section); 1 gives the
    standard initialisation. ``sample_every``: epochs between
    sample grids and reconstructions (PNG); ``bn_batches``: batches used to re-estimate batch norm
    statistics after every epoch (the features and checkpoints use them); ``max_images``: train on a
    seeded subset. ``device``: torch device (None: CPU)."""

    method: str = "bigan"
    arch: str = "mlp"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 2.5e-5
    decay: str = "exponential"
    final_lr_factor: float = 0.01
    latent_dim: int | None = None
    hidden: int = 1024
    input_size: int = 32
    encoder_widths: tuple[int, ...] = ENCODER_WIDTHS
    gan_width: int = 32
    latent_init_scale: float = 25.0
    inverted: bool = True
    simultaneous: bool = True
    jlr_weight: float = 0.25
    sample_every: int = 1
    bn_batches: int = 20
    max_images: int | None = None
    seed: int = 0
    device: str | None = None

    def validate(self) -> TrainOptions:
        """Check every option (a ConfigError naming it and what is valid); returns self."""
        check_choice("method", self.method, METHODS)
        check_choice("arch", self.arch, ARCHS)
        check_choice("decay", self.decay, DECAYS)
        check_int("epochs", self.epochs, 0 if self.method == "random" else 1)
        check_int("batch_size", self.batch_size, 2)
        check_float("lr", self.lr, 0, low_open=True)
        check_float("beta1", self.beta1, 0, 1, high_open=True)
        check_float("beta2", self.beta2, 0, 1, high_open=True)
        check_float("weight_decay", self.weight_decay, 0)
        check_float("final_lr_factor", self.final_lr_factor, 0, 1, low_open=True)
        check_int("latent_dim", self.latent, 1)
        check_int("hidden (MLP units)", self.hidden, 1)
        check_int("gan_width", self.gan_width, 1)
        check_float("latent_init_scale", self.latent_init_scale, 0, low_open=True)
        check_encoder_config(self.encoder_widths, self.input_size, self.latent)
        check_float("jlr_weight", self.jlr_weight, 0)
        check_int("sample_every", self.sample_every, 1)
        check_int("bn_batches", self.bn_batches, 1)
        if self.max_images is not None:
            check_int("max_images", self.max_images, self.batch_size)
        check_int("seed", self.seed, 0)
        check_device(self.device)
        return self

    @property
    def latent(self) -> int:
        """The latent dimension in use."""
        return int(self.latent_dim) if self.latent_dim is not None else DEFAULT_LATENT.get(self.arch, 50)

    @property
    def networks(self) -> tuple[str, ...]:
        return NETWORKS[self.method]

    def learning_rate(self, epoch: int) -> float:
        """Step size of epoch ``epoch`` (0-based): constant for the first half, then exponential decay
        reaching ``final_lr_factor`` * lr at the last epoch (``decay="exponential"``)."""
        if self.decay == "none" or self.epochs < 2:
            return self.lr
        constant = math.ceil(self.epochs / 2)
        if epoch < constant:
            return self.lr
        progress = (epoch - constant + 1) / (self.epochs - constant)
        return self.lr * self.final_lr_factor**progress

    def to_dict(self) -> dict:
        """Plain-JSON settings (the latent dimension resolved)."""
        out = asdict(self)
        out["encoder_widths"] = [int(w) for w in self.encoder_widths]
        out["latent_dim"] = self.latent
        return out

    def run_config(self) -> dict:
        """The settings a resumed run must share with the run it continues: all but ``device``."""
        out = self.to_dict()
        out.pop("device")
        return out
