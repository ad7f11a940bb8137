"""Fixtures of the BiGAN tests: a tiny MNIST-like .npz, tiny options, one torch thread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepfeat.tasks.bigan import TrainOptions


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run faster on one thread (no parallel-region overhead), and reproducibly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 uint8 'digits': a bright bar whose position depends on the class (0..3), plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    x = rng.integers(0, 40, (n, 28, 28)).astype(np.int64)
    for i, c in enumerate(labels):
        x[i, 4 + 5 * c : 8 + 5 * c, 4:24] += 200
    return np.clip(x, 0, 255).astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture
def mnist_file(tmp_path: Path) -> Path:
    """A small .npz in MNIST's layout (256 training, 64 test digits, 4 classes)."""
    x_train, y_train = digits(256, 0)
    x_test, y_test = digits(64, 1)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def tiny(**kwargs) -> TrainOptions:
    """Options with tiny networks: MLP with 16 hidden units, or a conv net of a few channels."""
    base = dict(
        epochs=1,
        batch_size=32,
        hidden=16,
        latent_dim=4,
        encoder_widths=(4, 6, 8, 8, 4),
        gan_width=4,
        bn_batches=2,
    )
    base.update(kwargs)
    return TrainOptions(**base)
