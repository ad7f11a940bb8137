"""The three sentence models of thesis Figure 4.5 over predicted slots, on the shared text pieces
(:mod:`deepfeat.tasks.text`: decoder, vocabulary, decoding):

- ``a``: LSTM encoder-decoder over the max labels. The slots' max labels, in slot order, are a
  sequence of input tokens ("knife cut carrot board") read by a two-layer encoder
  (:class:`SlotEncoder`); its final states (h, c) of each layer are the decoder's initial states
  and the decoder sees nothing else of the video (:class:`InitialStateDecoder`): the input must be
  memorised, as in Sutskever et al.'s translation model.
- ``b``: LSTM decoder with the max labels: their one-hot vectors, concatenated, are the decoder's
  static input at every step (as an image's features are in captioning).
- ``c``: the same decoder with the predicted probability vectors instead of the one-hot maxima.

The decoder of ``b`` and ``c`` is LRCN's two-layer unfactored decoder (``lrcn_2u``), as in Section
4.5.1; ``a`` has two encoder and two decoder layers of the same size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepfeat.checkpoint import keeps_rng, load_checkpoint, save_checkpoint
from deepfeat.errors import CheckpointError, ConfigError, DataError
from deepfeat.tasks.text.decoders import ConditionedDecoder, DecoderConfig, RecurrentLayer
from deepfeat.tasks.text.decoding import Strategy, generate
from deepfeat.tasks.text.vocabulary import Vocabulary
from deepfeat.tasks.video_description.slots import SlotPredictions
from deepfeat.validation import check_choice, check_device

ARCHS = ("a", "b", "c")
#: architecture -> which slot input it reads (Figure 4.5)
INPUTS = {"a": "max", "b": "max", "c": "prob"}
LABELS = {
    "a": "(a) LSTM encoder-decoder",
    "b": "(b) LSTM decoder",
    "c": "(c) LSTM decoder",
}
KIND = "video-description-model"


class SlotEncoder(nn.Module):
    """Architecture (a)'s encoder: slot tokens (B, S) -> the final (h, c) of every layer, flattened to
    (B, layers * 2 * hidden) in the order h0, c0, h1, c1, ..."""

    def __init__(
        self, n_tokens: int, embed_size: int, hidden_size: int, layers: int, unit: str, dropout: float
    ):
        super().__init__()
        self.embed = nn.Embedding(n_tokens, embed_size)
        nn.init.uniform_(self.embed.weight, -0.08, 0.08)
        self.layers = nn.ModuleList(
            RecurrentLayer(embed_size if i == 0 else hidden_size, 0, hidden_size, unit) for i in range(layers)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.embed(tokens))
        finals = []
        for layer in self.layers:
            pre = layer.input_part(x)
            static = layer.static_part(None, len(tokens))
            state = layer.zero_state(len(tokens), pre)
            outputs = []
            for t in range(tokens.shape[1]):
                h, state = layer.cell(pre[:, t] + static, state)
                outputs.append(h)
            finals += [state[0], state[1]]
            x = self.drop(torch.stack(outputs, dim=1))
        return torch.cat(finals, dim=1)


class InitialStateDecoder(ConditionedDecoder):
    """A :class:`ConditionedDecoder` whose conditioning vector is its layers' initial states (h, c),
    flattened as :class:`SlotEncoder` gives them, instead of a static input at every step."""

    def __init__(self, config: DecoderConfig):
        if config.architecture != "lrcn_2u" or config.cond_dim != 2 * config.n_layers * config.hidden_size:
            raise ConfigError("an initial-state decoder is lrcn_2u with cond_dim = 2 * layers * hidden_size")
        super().__init__(config)
        self.layers[config.static_layer].weight_sh = None  # the condition enters as the initial state

    def _initial(self, cond: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.config.hidden_size
        h = cond[:, (2 * index) * size : (2 * index + 1) * size]
        c = cond[:, (2 * index + 1) * size : (2 * index + 2) * size]
        return h, (h if self.config.unit == "rnn" else c)

    def forward(self, cond: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.embed(inputs))
        for index, layer in enumerate(self.layers):
            pre = layer.input_part(x)
            static = layer.static_part(None, len(inputs))
            state = self._initial(cond, index)
            outputs = []
            for t in range(inputs.shape[1]):
                h, state = layer.cell(pre[:, t] + static, state)
                outputs.append(h)
            x = self.drop(torch.stack(outputs, dim=1))
        return self.out(x)

    def start(self, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.layers):
            state[f"static{index}"] = layer.static_part(None, len(cond))
            state[f"h{index}"], state[f"c{index}"] = self._initial(cond, index)
        return state


def build(
    arch: str, slot_sizes: list[int], vocab_size: int, hidden: int, embed: int, dropout: float, unit: str
):
    """(decoder, encoder or None) of architecture ``arch`` for slots of ``slot_sizes`` values."""
    check_choice("architecture (--arch)", arch, ARCHS)
    if arch == "a":
        config = DecoderConfig(vocab_size, 4 * hidden, "lrcn_2u", unit, hidden, embed, dropout)
        encoder = SlotEncoder(sum(slot_sizes), embed, hidden, 2, unit, dropout)
        return InitialStateDecoder(config), encoder
    config = DecoderConfig(vocab_size, sum(slot_sizes), "lrcn_2u", unit, hidden, embed, dropout)
    return ConditionedDecoder(config), None


@dataclass
class DescriptionModel:
    """A trained video-description model: its architecture, the slots (and values) it reads, the
    vocabulary, the decoder (and encoder for ``a``), and what it was trained on (``meta``)."""

    arch: str
    slots: dict[str, list[str]]
    vocab: Vocabulary
    decoder: ConditionedDecoder
    encoder: SlotEncoder | None = None
    meta: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{LABELS[self.arch]} ({INPUTS[self.arch]})"

    def check_slots(self, preds: SlotPredictions) -> None:
        if preds.slots != self.slots:
            for s, values in self.slots.items():
                if preds.slots.get(s) != values:
                    raise DataError(
                        f"slot {s!r}: the model reads values {values}, the predictions give "
                        f"{preds.slots.get(s, 'no such slot')}"
                    )
            raise DataError(
                f"the predictions have other slots ({list(preds.slots)}) than the model ({list(self.slots)})"
            )

    def inputs(self, preds: SlotPredictions) -> torch.Tensor:
        """The model's input rows for ``preds``: slot tokens (a), one-hot maxima (b) or probabilities (c)."""
        self.check_slots(preds)
        if self.arch == "a":
            return torch.from_numpy(preds.tokens())
        return torch.from_numpy(np.ascontiguousarray(preds.vectors(INPUTS[self.arch]), dtype=np.float32))

    def conditioner(self) -> nn.Module:
        return self.encoder if self.encoder is not None else nn.Identity()

    @torch.no_grad()
    def describe(
        self,
        preds: SlotPredictions,
        strategy: Strategy | None = None,
        *,
        batch_size: int = 64,
        progress: bool = False,
    ) -> list[list[str]]:
        """One sentence (tokens) per video of ``preds``."""
        device = next(self.decoder.parameters()).device
        conditioner = self.conditioner().to(device).eval()
        self.decoder.eval()
        cond = conditioner(self.inputs(preds).to(device))
        out = generate(
            self.decoder,
            cond,
            strategy or Strategy(),
            max_length=self.vocab.max_length,
            batch_size=batch_size,
            progress=progress,
        )
        return [self.vocab.decode(t) for t in out.tokens]

    def to(self, device) -> DescriptionModel:
        self.decoder.to(device)
        if self.encoder is not None:
            self.encoder.to(device)
        return self

    def save(self, path: str | os.PathLike) -> Path:
        state = {"decoder": {k: v.detach().cpu() for k, v in self.decoder.state_dict().items()}}
        if self.encoder is not None:
            state["encoder"] = {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()}
        meta = {
            "arch": self.arch,
            "slots": self.slots,
            "vocabulary": self.vocab.to_dict(),
            "decoder": self.decoder.config.to_dict(),
            **self.meta,
        }
        return save_checkpoint(path, state, kind=KIND, meta=meta, rng=False)

    @classmethod
    @keeps_rng
    def load(cls, path: str | os.PathLike, device: str | None = None) -> DescriptionModel:
        """A model saved by :meth:`save` (a model folder or its ``model.pt``); nothing in it is run."""
        path = Path(path)
        if path.is_dir():
            path = path / "model.pt"
        if not path.exists():
            raise DataError(
                f"{path}: no video-description model here (train one with 'deepfeat video describe train')"
            )
        ck = load_checkpoint(path, kind=KIND)
        try:
            meta = dict(ck.meta)
            arch, slots = meta.pop("arch"), {str(k): list(v) for k, v in meta.pop("slots").items()}
            vocab = Vocabulary.from_dict(meta.pop("vocabulary"))
            config = DecoderConfig.from_dict(meta.pop("decoder"))
            decoder, encoder = build(
                arch,
                [len(v) for v in slots.values()],
                config.vocab_size,
                config.hidden_size,
                config.embed_size,
                config.dropout,
                config.unit,
            )
            decoder.load_state_dict(ck.state["decoder"])
            if encoder is not None:
                encoder.load_state_dict(ck.state["encoder"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: damaged video-description model ({exc})") from None
        model = cls(arch, slots, vocab, decoder, encoder, meta)
        return model.to(check_device(device))
