"""The three LRCN architectures and both units against torch's own recurrent layers, and the
step-by-step interface against teacher forcing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepfeat.errors import ConfigError
from deepfeat.tasks.text.decoders import ARCHITECTURES, ConditionedDecoder, DecoderConfig


def make(arch="lrcn_2f", unit="lstm", seed=0, **kw) -> ConditionedDecoder:
    torch.manual_seed(seed)
    cfg = DecoderConfig(vocab_size=13, cond_dim=5, architecture=arch, unit=unit, hidden_size=7, embed_size=6)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return ConditionedDecoder(cfg).eval()


def torch_layer(layer, unit):
    """nn.LSTM / nn.RNN over [sequence input; static input] with the layer's weights."""
    in_size = layer.weight_ih.shape[1] + (0 if layer.weight_sh is None else layer.weight_sh.shape[1])
    ref = (nn.LSTM if unit == "lstm" else nn.RNN)(in_size, layer.hidden_size, batch_first=True)
    with torch.no_grad():
        w = layer.weight_ih if layer.weight_sh is None else torch.cat([layer.weight_ih, layer.weight_sh], 1)
        ref.weight_ih_l0.copy_(w)
        ref.weight_hh_l0.copy_(layer.weight_hh)
        ref.bias_ih_l0.copy_(layer.bias)
        ref.bias_hh_l0.zero_()
    return ref


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("unit", ["lstm", "rnn"])
def test_teacher_forcing_equals_torch_recurrent_layers(arch, unit):
    dec = make(arch, unit)
    cond = torch.randn(3, 5)
    words = torch.randint(0, 13, (3, 8))
    got = dec(cond, words)
    x = dec.embed(words)
    for index, layer in enumerate(dec.layers):
        ref = torch_layer(layer, unit)
        inp = x
        if index == dec.config.static_layer:
            inp = torch.cat([x, cond[:, None, :].expand(-1, x.shape[1], -1)], dim=2)
        x = ref(inp)[0]
    want = dec.out(x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_conditioning_goes_where_figure_4_4_puts_it(arch):
    dec = make(arch)
    static = [layer.weight_sh is not None for layer in dec.layers]
    assert static == {"lrcn_1u": [True], "lrcn_2u": [True, False], "lrcn_2f": [False, True]}[arch]
    assert dec.layers[0].weight_ih.shape[1] == 6  # the word embedding always enters the first layer


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_step_by_step_equals_teacher_forcing(arch):
    dec = make(arch)
    cond = torch.randn(2, 5)
    words = torch.randint(0, 13, (2, 6))
    full = dec(cond, words)
    state = dec.start(cond)
    for t in range(6):
        logits, state = dec.step(words[:, t], state)
        torch.testing.assert_close(logits, full[:, t], atol=1e-6, rtol=1e-5)


def test_config_checks_name_the_option():
    with pytest.raises(ConfigError, match="architecture"):
        DecoderConfig(vocab_size=10, cond_dim=3, architecture="lrcn_3x").validate()
    with pytest.raises(ConfigError, match="unit"):
        DecoderConfig(vocab_size=10, cond_dim=3, unit="gru").validate()
    with pytest.raises(ConfigError, match="dropout"):
        DecoderConfig(vocab_size=10, cond_dim=3, dropout=1.0).validate()
