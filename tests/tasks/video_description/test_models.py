"""The three architectures: (a)'s encoder against torch's LSTM, its decoder's initial state, forward
against step-by-step decoding, inputs per architecture, saving and loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfeat.errors import DataError
from deepfeat.tasks.text.decoders import ConditionedDecoder
from deepfeat.tasks.text.vocabulary import Vocabulary
from deepfeat.tasks.video_description import DescriptionModel, SlotEncoder, slots_from_dict
from deepfeat.tasks.video_description.models import InitialStateDecoder, build

from .test_slots import FILE


def test_encoder_final_states_equal_torch_lstm():
    torch.manual_seed(0)
    enc = SlotEncoder(n_tokens=7, embed_size=5, hidden_size=6, layers=2, unit="lstm", dropout=0.0).eval()
    ref = torch.nn.LSTM(5, 6, num_layers=2, batch_first=True)
    with torch.no_grad():
        for k, layer in enumerate(enc.layers):
            getattr(ref, f"weight_ih_l{k}").copy_(layer.weight_ih)
            getattr(ref, f"weight_hh_l{k}").copy_(layer.weight_hh)
            getattr(ref, f"bias_ih_l{k}").copy_(layer.bias)
            getattr(ref, f"bias_hh_l{k}").zero_()
    tokens = torch.tensor([[1, 4, 6], [0, 3, 5]])
    _, (h, c) = ref(enc.embed(tokens))
    got = enc(tokens).detach()
    want = torch.cat([h[0], c[0], h[1], c[1]], dim=1).detach()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_initial_state_decoder_forward_equals_steps_and_reads_the_state():
    torch.manual_seed(1)
    decoder, encoder = build("a", [3, 2], vocab_size=9, hidden=8, embed=4, dropout=0.0, unit="lstm")
    assert isinstance(decoder, InitialStateDecoder) and encoder is not None
    assert decoder.layers[0].weight_sh is None  # nothing of the video at every step
    decoder.eval()
    cond = torch.randn(2, 32)
    inputs = torch.tensor([[1, 5, 6, 7], [1, 4, 4, 8]])
    logits = decoder(cond, inputs)
    state = decoder.start(cond)
    for t in range(inputs.shape[1]):
        step, state = decoder.step(inputs[:, t], state)
        torch.testing.assert_close(step, logits[:, t], rtol=1e-5, atol=1e-5)
    # the first layer's initial (h, c) is the first quarter and second quarter of cond
    other = cond.clone()
    other[:, :8] += 1.0
    assert not torch.allclose(decoder(other, inputs)[:, 0], logits[:, 0])
    other = cond.clone()
    other[:, 16:24] += 1.0  # the second layer's h
    assert not torch.allclose(decoder(other, inputs)[:, 0], logits[:, 0])


def test_b_and_c_are_two_layer_unfactored_decoders_with_the_slot_vector():
    for arch in "bc":
        decoder, encoder = build(arch, [3, 2], vocab_size=9, hidden=8, embed=4, dropout=0.0, unit="lstm")
        assert type(decoder) is ConditionedDecoder and encoder is None
        assert decoder.config.architecture == "lrcn_2u" and decoder.config.cond_dim == 5


def _model(arch: str) -> DescriptionModel:
    preds = slots_from_dict(FILE)
    vocab = Vocabulary.build([["a", "person", "cuts", "an", "onion"]], min_count=1)
    torch.manual_seed(2)
    decoder, encoder = build(arch, preds.sizes, len(vocab), 8, 4, 0.0, "lstm")
    return DescriptionModel(arch, dict(preds.slots), vocab, decoder, encoder)


def test_inputs_per_architecture():
    preds = slots_from_dict(FILE)
    a, b, c = (_model(x).inputs(preds) for x in "abc")
    assert a.dtype == torch.long and a.tolist() == preds.tokens().tolist()
    np.testing.assert_array_equal(b.numpy(), preds.vectors("max"))
    np.testing.assert_allclose(c.numpy(), preds.vectors("prob"))


@pytest.mark.parametrize("arch", ["a", "c"])
def test_save_load_gives_the_same_sentences(arch, tmp_path):
    model = _model(arch)
    preds = slots_from_dict(FILE)
    model.save(tmp_path / "model.pt")
    rng = torch.get_rng_state()
    back = DescriptionModel.load(tmp_path)
    assert torch.equal(rng, torch.get_rng_state())  # the caller's random stream is not advanced
    assert back.arch == arch and back.slots == model.slots
    assert back.describe(preds) == model.describe(preds)


def test_other_slots_refused():
    model = _model("b")
    data = {
        "slots": {"verb": ["cut", "peel"], "object": ["carrot", "onion"]},
        "videos": {"v": {"verb": "cut", "object": "onion"}},
    }
    with pytest.raises(DataError, match="slot 'verb'"):
        model.inputs(slots_from_dict(data))
