"""LRCN's sequence models (thesis Section 4.4, Figure 4.4): a stack of recurrent layers predicting the
next word from the previous one, conditioned on a vector at every step.

The conditioning vector (image features for captioning; predicted semantic slots for video
description) is the *static input* of one layer: concatenated with that layer's sequence input at
every time step, as LRCN duplicates a static input over time. Architectures:

- ``lrcn_1u``: one layer; its input is the embedded previous word and the conditioning vector;
- ``lrcn_2u``: two layers, word and conditioning vector into the first, its output into the second;
- ``lrcn_2f``: two layers, "factored": the word alone into the first, its output and the conditioning
  vector into the second (the first layer is blind to the condition).

Units: ``lstm`` (Zaremba and Sutskever's LSTM, Section 4.1, gates in torch's order i, f, g, o) or the
"vanilla" ``rnn`` (h_t = tanh(W_x x_t + W_h h_{t-1} + b)). The top layer's output goes through a linear
layer to one logit per vocabulary word. Dropout (probability ``dropout``) acts on the non-recurrent
connections: the word embeddings and every layer's output.

Since the static input is the same at every step, its share of each layer's pre-activations,
W_s s + b, is computed once per sequence; the sequence inputs' share is computed for all steps in one
product, and only h_{t-1} W_h runs step by step. The result equals ``nn.LSTM`` / ``nn.RNN`` over the
concatenated input (tested).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from deepfeat.errors import ConfigError
from deepfeat.tasks.text.vocabulary import BOS_ID, PAD_ID
from deepfeat.validation import check_choice, check_float, check_int

ARCHITECTURES = ("lrcn_1u", "lrcn_2u", "lrcn_2f")
UNITS = ("lstm", "rnn")
#: the thesis' sizes: LSTMs of 1000 hidden units, 1000-dimensional word embeddings
THESIS_HIDDEN = 1000
THESIS_EMBED = 1000
THESIS_DROPOUT = 0.5


@dataclass
class DecoderConfig:
    """Shape of a :class:`ConditionedDecoder`."""

    vocab_size: int
    cond_dim: int
    architecture: str = "lrcn_2f"
    unit: str = "lstm"
    hidden_size: int = THESIS_HIDDEN
    embed_size: int = THESIS_EMBED
    dropout: float = THESIS_DROPOUT

    def validate(self) -> DecoderConfig:
        check_int("vocab_size", self.vocab_size, 5)
        check_int("cond_dim (conditioning vector size)", self.cond_dim, 1)
        check_choice("architecture", self.architecture, ARCHITECTURES)
        check_choice("unit", self.unit, UNITS)
        check_int("hidden_size", self.hidden_size, 1)
        check_int("embed_size", self.embed_size, 1)
        check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        return self

    @property
    def n_layers(self) -> int:
        return 1 if self.architecture == "lrcn_1u" else 2

    @property
    def static_layer(self) -> int:
        """Index of the layer that receives the conditioning vector."""
        return 1 if self.architecture == "lrcn_2f" else 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DecoderConfig:
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data}).validate()
        except TypeError as exc:
            raise ConfigError(f"damaged decoder configuration ({exc})") from None


class RecurrentLayer(nn.Module):
    """One LSTM or RNN layer with a sequence input and an optional static input."""

    def __init__(self, input_size: int, static_size: int, hidden_size: int, unit: str):
        super().__init__()
        self.unit = unit
        self.hidden_size = hidden_size
        gates = (4 if unit == "lstm" else 1) * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size))
        self.weight_sh = nn.Parameter(torch.empty(gates, static_size)) if static_size else None
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size))
        self.bias = nn.Parameter(torch.empty(gates))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def input_part(self, x: torch.Tensor) -> torch.Tensor:
        """x W_ih^T for every step at once: (..., input) -> (..., gates)."""
        return x @ self.weight_ih.T

    def static_part(self, static: torch.Tensor | None, batch: int) -> torch.Tensor:
        """W_s s + b, once per sequence: (B, gates)."""
        if self.weight_sh is None:
            return self.bias.expand(batch, -1)
        if static is None:
            raise ConfigError("this layer takes the conditioning vector; none was given")
        return static @ self.weight_sh.T + self.bias

    def zero_state(self, batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = like.new_zeros(batch, self.hidden_size)
        return h, (h.clone() if self.unit == "lstm" else h)

    def cell(
        self, pre: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One step from the pre-activations without the recurrent part; returns h_t and the state."""
        h, c = state
        gates = pre + h @ self.weight_hh.T
        if self.unit == "rnn":
            h = torch.tanh(gates)
            return h, (h, h)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)

    def run(self, pre_inputs: torch.Tensor, static_part: torch.Tensor) -> torch.Tensor:
        """Outputs (B, T, H) of the whole sequence from its input part (B, T, gates) and static part."""
        batch, steps = pre_inputs.shape[:2]
        state = self.zero_state(batch, pre_inputs)
        outputs = []
        for t in range(steps):
            h, state = self.cell(pre_inputs[:, t] + static_part, state)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class ConditionedDecoder(nn.Module):
    """Next-word model p(w_t | w_<t, s) of one of LRCN's architectures (see the module docstring).

    Teacher forcing: ``forward(cond, inputs)`` with ``inputs`` the previous words (``<bos>`` first)
    gives logits (B, T, V). Step by step (decoding): ``start(cond)`` then ``step(words, state)``.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config.validate()
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_size)
        nn.init.uniform_(self.embed.weight, -0.08, 0.08)
        layers = []
        for index in range(c.n_layers):
            size = c.embed_size if index == 0 else c.hidden_size
            static = c.cond_dim if index == c.static_layer else 0
            layers.append(RecurrentLayer(size, static, c.hidden_size, c.unit))
        self.layers = nn.ModuleList(layers)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden_size, c.vocab_size)

    # -- teacher forcing ------------------------------------------------------------------------
    def forward(self, cond: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of the next word at every step, given the previous words ``inputs`` (B, T)."""
        x = self.drop(self.embed(inputs))
        for index, layer in enumerate(self.layers):
            static = cond if index == self.config.static_layer else None
            x = self.drop(layer.run(layer.input_part(x), layer.static_part(static, len(inputs))))
        return self.out(x)

    # -- step by step ---------------------------------------------------------------------------
    def start(self, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        """The decoding state before the first word: zero recurrent states, static parts computed once.
        Every entry is batch-first, so that beams reorder it with ``index_select(0, ...)``."""
        batch = len(cond)
        state: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.layers):
            static = cond if index == self.config.static_layer else None
            state[f"static{index}"] = layer.static_part(static, batch)
            state[f"h{index}"], state[f"c{index}"] = layer.zero_state(batch, cond)
        return state

    def step(
        self, words: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (B, V) of the next word after ``words`` (B,), and the new state."""
        x = self.drop(self.embed(words))
        new: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.layers):
            pre = layer.input_part(x) + state[f"static{index}"]
            h, (new[f"h{index}"], new[f"c{index}"]) = layer.cell(
                pre, (state[f"h{index}"], state[f"c{index}"])
            )
            new[f"static{index}"] = state[f"static{index}"]
            x = self.drop(h)
        return self.out(x), new


def word_log_probs(logits: torch.Tensor, inverse_temperature: float = 1.0) -> torch.Tensor:
    """log p(word) over the words a sentence may hold (``<pad>`` and ``<bos>`` excluded), from logits
    (..., V), in float32; the one definition used by training, scoring and decoding."""
    logits = logits.float().clone()
    logits[..., PAD_ID] = float("-inf")
    logits[..., BOS_ID] = float("-inf")
    if inverse_temperature != 1.0:
        logits = logits * inverse_temperature
    return torch.log_softmax(logits, dim=-1)


def reorder_state(state: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rows ``index`` of every entry of a decoding state (beam reordering, expansion)."""
    return {k: v.index_select(0, index) for k, v in state.items()}
