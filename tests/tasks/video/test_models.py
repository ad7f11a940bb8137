"""The clip classifiers: the LSTM unit of Section 4.1, averaging over frames and clips, top stages
equal to the backbone's own layers, and a temporal model that learns what a single frame cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.backbones import load_backbone
from deepfeat.errors import ConfigError
from deepfeat.features.capture import LayerCapture
from deepfeat.tasks.video.features import grid_pool
from deepfeat.tasks.video.models import LRCN, TopStages, VideoClassifier, build_net, top_spec
from deepfeat.tasks.video.training import TrainOptions, _epoch


def test_lstm_is_the_unit_of_section_4_1():
    """h_t from torch's LSTM equals the thesis' equations (i, f, o, g; c_t = f c + i g; h = o tanh c)."""
    torch.manual_seed(0)
    net = LRCN(dim=5, n_classes=3, hidden=4, dropout_in=0, dropout=0).eval()
    x = torch.randn(1, 6, 5)
    h_torch, _ = net.lstm(x)
    w_x, w_h = net.lstm.weight_ih_l0, net.lstm.weight_hh_l0
    b = net.lstm.bias_ih_l0 + net.lstm.bias_hh_l0
    h, c = torch.zeros(4), torch.zeros(4)
    for t in range(6):
        z = w_x @ x[0, t] + w_h @ h + b
        i, f, g, o = torch.sigmoid(z[:4]), torch.sigmoid(z[4:8]), torch.tanh(z[8:12]), torch.sigmoid(z[12:])
        c = f * c + i * g
        h = o * torch.tanh(c)
        torch.testing.assert_close(h_torch[0, t], h)
    logits = net(x)
    torch.testing.assert_close(logits, net.out(h_torch))  # a linear softmax layer at every step


def test_video_probabilities_average_frames_and_clips():
    torch.manual_seed(0)
    seq = np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32)
    single = VideoClassifier(
        build_net("single", (6,), 4), list("abcd"), {"model": "single", "stream": "rgb"}, (6,)
    )
    w, b = single.net.head.out.weight.detach().numpy(), single.net.head.out.bias.detach().numpy()
    logits = seq @ w.T + b
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    np.testing.assert_allclose(single.video_proba(seq, batch=7), soft.mean(0), rtol=1e-5)
    config = {"model": "lrcn", "stream": "flow", "clip_length": 16, "clip_stride": 8}
    lrcn = VideoClassifier(build_net("lrcn", (6,), 4, hidden=5), list("abcd"), config, (6,))
    windows = [(0, 16), (8, 24), (14, 30)]
    expected = np.mean([lrcn.clip_proba(seq[None, a:b])[0] for a, b in windows], axis=0)
    np.testing.assert_allclose(lrcn.video_proba(seq), expected, rtol=1e-5)
    assert lrcn.predict_proba([seq, seq[:5]]).shape == (2, 4)
    assert np.allclose(lrcn.predict_proba([seq[:5]]).sum(), 1)
    with pytest.raises(ConfigError, match="frames"):
        lrcn.clip_proba(np.zeros((1, 3, 7), np.float32))


def test_top_stages_reproduce_the_backbone():
    """Trainable copies of the top stages applied to cached maps give the backbone's own layer."""
    backbone = load_backbone("efficientnet_lite0")
    spec = top_spec(backbone, "head")
    assert (spec.source, spec.output) == ("stage7", "head")
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode(), LayerCapture(backbone, backbone.catalog.resolve(["stage7", "head"])) as cap:
        out = cap.run(x)
    for grid in (1, 2):
        top = TopStages(backbone, spec, grid).eval()
        with torch.no_grad():
            got = top(out["stage7"].clone())
        torch.testing.assert_close(got, grid_pool(out["head"], grid), rtol=1e-4, atol=1e-4)
        assert all(p.requires_grad for p in top.parameters())
    top.train()
    assert not top.stages[1].training  # BatchNorm statistics stay frozen
    assert all(not p.requires_grad for p in backbone.module.parameters())  # the backbone is untouched
    with pytest.raises(ConfigError, match="use layer 'head'"):
        top_spec(backbone, "pool")


def test_lrcn_learns_the_order_of_frames_that_single_frames_cannot_tell():
    """Class 0: a feature rises over the clip; class 1: it falls. Every frame has the same
    distribution in both classes, so the single-frame model stays near chance; LRCN does not."""
    rng = np.random.default_rng(0)
    sequences, targets = [], []
    for i in range(64):
        ramp = np.linspace(-1, 1, 12) * rng.uniform(0.5, 1.5) + rng.normal(0, 0.1, 12)
        y = i % 2
        seq = np.stack([ramp if y == 0 else ramp[::-1], rng.normal(0, 1, 12)], axis=1).astype(np.float32)
        sequences.append(seq)
        targets.append(y)
    targets = torch.tensor(targets)
    opts = TrainOptions(epochs=1, batch_size=16, clip_length=8, lr=0.02, dropout_in=0.0, dropout=0.0)
    accuracy = {}
    for model in ("single", "lrcn"):
        torch.manual_seed(0)
        net = build_net(model, (2,), 2, hidden=16, dropout_in=0.0, dropout=0.0)
        optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
        gen = torch.Generator().manual_seed(0)
        for epoch in range(40):
            _epoch(net, optimizer, sequences[:48], targets[:48], opts, gen, torch.device("cpu"), epoch, False)
        clf = VideoClassifier(
            net, ["up", "down"], {"model": model, "stream": "rgb", "clip_length": 8, "clip_stride": 4}, (2,)
        )
        accuracy[model] = float((clf.predict(sequences[48:]) == targets[48:].numpy()).mean())
    assert accuracy["lrcn"] >= 0.9
    assert accuracy["single"] <= 0.75
