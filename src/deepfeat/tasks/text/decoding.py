"""Sentences from a :class:`~deepfeat.tasks.text.decoders.ConditionedDecoder`, batched over inputs.

- :func:`beam_search`: keeps the ``width`` most probable partial sentences of every input and
  expands them word by word; a sentence ends with ``<eos>`` (at ``max_length`` words the end is
  forced and its probability counted). It stops for an input once its best finished sentence is more
  probable than every unfinished one (log-probabilities only decrease); scores are summed
  log-probabilities without length normalisation. Width 1 is greedy decoding.
- :func:`sample`: the thesis' sampling strategy: N sentences drawn from the softmax of the logits
  multiplied by the inverse temperature T, the most probable under the model (T = 1) kept. Every
  input draws from its own generator seeded by ``seeds[i]`` (inverse-CDF sampling), so a result does
  not depend on the batch it was computed in.
- :func:`sequence_log_likelihood` / :func:`pair_log_likelihood`: log p(sentence | condition) by
  teacher forcing, for one sentence per condition or for every (condition, sentence) pair (retrieval).
  Layers below the one that reads the condition, and the sentence's share of that layer's inputs,
  are computed once per sentence and reused across conditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deepfeat.errors import ConfigError
from deepfeat.report.wording import counted
from deepfeat.tasks.text.decoders import ConditionedDecoder, reorder_state, word_log_probs
from deepfeat.tasks.text.vocabulary import BOS_ID, EOS_ID, PAD_ID
from deepfeat.validation import check_float, check_int

NEG = -1e30  # log-probability of a word that may not be produced (<pad>, <bos>)


@dataclass
class Decoded:
    """One sentence per input: word indices (without ``<eos>``) and its log-probability under the
    model; with sampling and ``keep_all``, every sample of every input and their log-probabilities."""

    tokens: list[list[int]]
    log_prob: np.ndarray
    samples: list[list[list[int]]] | None = None
    sample_log_prob: np.ndarray | None = None


def _log_probs(decoder: ConditionedDecoder, words: torch.Tensor, state: dict, scale: float = 1.0):
    """(model log-probabilities, log-probabilities at inverse temperature ``scale``, new state)."""
    logits, state = decoder.step(words, state)
    model = word_log_probs(logits).clamp_min(NEG)
    return model, (model if scale == 1.0 else word_log_probs(logits, scale).clamp_min(NEG)), state


@torch.no_grad()
def beam_search(
    decoder: ConditionedDecoder,
    cond: torch.Tensor,
    *,
    width: int = 1,
    max_length: int = 20,
    min_length: int = 0,
) -> Decoded:
    """The most probable sentence of every row of ``cond`` found by beam search of ``width``.

    At every step the ``width`` most probable expansions of the live sentences are kept, ``<eos>``
    included; those ending with ``<eos>`` leave the beam as finished sentences. Width 1 is therefore
    greedy decoding (the most probable word at every step, until ``<eos>`` is the most probable).
    ``<eos>`` is not allowed before ``min_length`` words (default 0: the exact search; 1 rules out
    the empty sentence, which a search without length normalisation prefers as soon as ``<eos>``
    enters the beam at the first step, as it does for briefly trained models)."""
    check_int("beam width", width, 1)
    check_int("max_length", max_length, 1)
    check_int("min_length", min_length, 0)
    if min_length > max_length:
        raise ConfigError(f"min_length {min_length} is above max_length {max_length}")
    decoder.eval()
    batch, device = len(cond), cond.device
    offsets = torch.arange(batch, device=device)[:, None] * width
    state = reorder_state(decoder.start(cond), torch.arange(batch, device=device).repeat_interleave(width))
    scores = torch.full((batch, width), NEG, device=device)
    scores[:, 0] = 0.0  # one live sentence per input to begin with
    words = torch.full((batch * width,), BOS_ID, dtype=torch.long, device=device)
    history = torch.zeros((batch * width, 0), dtype=torch.long, device=device)
    best_tokens: list[list[int]] = [[] for _ in range(batch)]
    best = np.full(batch, -np.inf)

    def finish(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, sources: np.ndarray) -> None:
        hist = history.cpu().numpy()
        for b, v, src in zip(rows, values, sources):
            if v > best[b]:
                best[b], best_tokens[b] = float(v), hist[src].tolist()

    for t in range(max_length + 1):
        logp, _, state = _log_probs(decoder, words, state)
        vocab = logp.shape[-1]
        if t < min_length:
            logp = logp.clone()
            logp[:, EOS_ID] = NEG
        total = scores.reshape(-1, 1) + logp
        if t == max_length:  # the end is forced on every live sentence
            ended = total[:, EOS_ID].reshape(batch, width).cpu().numpy()
            b, k = np.nonzero(ended > NEG / 2)
            finish(b, k, ended[b, k], (offsets.cpu().numpy()[b, 0] + k))
            break
        top, index = total.reshape(batch, width * vocab).topk(width, dim=1)
        beam, word = index // vocab, index % vocab
        source = (beam + offsets).reshape(-1)
        is_end = (word == EOS_ID) & (top > NEG / 2)
        if bool(is_end.any()):
            b, k = np.nonzero(is_end.cpu().numpy())
            finish(b, k, top.cpu().numpy()[b, k], source.reshape(batch, width).cpu().numpy()[b, k])
        scores = top.masked_fill(word == EOS_ID, NEG)
        alive = scores.max(dim=1).values.cpu().numpy()
        if np.all((alive <= NEG / 2) | (best >= alive)):
            break
        state = reorder_state(state, source)
        history = torch.cat([history[source], word.reshape(-1, 1)], dim=1)
        words = word.reshape(-1)
    return Decoded(tokens=best_tokens, log_prob=best)


@torch.no_grad()
def sample(
    decoder: ConditionedDecoder,
    cond: torch.Tensor,
    *,
    n_samples: int = 100,
    temperature: float = 1.5,
    seeds: Sequence[int],
    max_length: int = 20,
    keep_all: bool = False,
    min_length: int = 0,
) -> Decoded:
    """For every row of ``cond``: ``n_samples`` sentences sampled at inverse temperature
    ``temperature`` (logits x T before the softmax), the most probable under the model kept
    (``keep_all``: every sample returned as well). ``<eos>`` is not drawn before ``min_length``
    words."""
    check_int("samples", n_samples, 1)
    check_float("temperature (inverse)", temperature, 0.0, low_open=True)
    check_int("max_length", max_length, 1)
    check_int("min_length", min_length, 0)
    if min_length > max_length:
        raise ConfigError(f"min_length {min_length} is above max_length {max_length}")
    if len(seeds) != len(cond):
        raise ConfigError(f"{len(seeds)} seeds for {len(cond)} inputs")
    decoder.eval()
    batch, n = len(cond), n_samples
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    state = reorder_state(decoder.start(cond), torch.arange(batch, device=cond.device).repeat_interleave(n))
    words = torch.full((batch * n,), BOS_ID, dtype=torch.long, device=cond.device)
    total = torch.zeros(batch * n, dtype=torch.float64)
    done = torch.zeros(batch * n, dtype=torch.bool)
    out = torch.full((batch * n, max_length), PAD_ID, dtype=torch.long)
    for t in range(max_length + 1):
        model, tempered, state = _log_probs(decoder, words, state, scale=temperature)
        if t == max_length:
            chosen = torch.full((batch * n,), EOS_ID, dtype=torch.long)
        else:
            u = torch.cat([torch.rand(n, generator=g, dtype=torch.float64) for g in generators])
            if t < min_length:
                tempered = tempered.clone()
                tempered[:, EOS_ID] = NEG
            cdf = tempered.double().exp().cpu().cumsum(dim=-1)
            chosen = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1)).squeeze(1)
            chosen = chosen.clamp_max(cdf.shape[-1] - 1)
        step = model.gather(1, chosen.to(model.device)[:, None]).squeeze(1).double().cpu()
        total += step.masked_fill(done, 0.0)
        if t < max_length:
            out[:, t] = chosen.masked_fill(done | (chosen == EOS_ID), PAD_ID)
        done |= chosen == EOS_ID
        if bool(done.all()):
            break
        words = chosen.to(cond.device)
    total = total.reshape(batch, n)
    pick = total.argmax(dim=1)
    rows = [[w for w in row if w != PAD_ID] for row in out.tolist()]
    decoded = Decoded(
        tokens=[rows[b * n + int(pick[b])] for b in range(batch)],
        log_prob=total.gather(1, pick[:, None]).squeeze(1).numpy(),
    )
    if keep_all:
        decoded.samples = [rows[b * n : (b + 1) * n] for b in range(batch)]
        decoded.sample_log_prob = total.numpy()
    return decoded


def pad_sentences(sentences: Sequence[Sequence[int]], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (``<bos>`` + words) and targets (words + ``<eos>``), (N, T) padded with ``<pad>``, from
    sentences of word indices that end with ``<eos>``."""
    if not sentences:
        raise ConfigError("no sentence given")
    steps = max(len(s) for s in sentences)
    inputs = torch.full((len(sentences), steps), PAD_ID, dtype=torch.long)
    targets = torch.full((len(sentences), steps), PAD_ID, dtype=torch.long)
    for i, s in enumerate(sentences):
        s = list(s)
        if not s or s[-1] != EOS_ID:
            raise ConfigError(f"sentence {i} does not end with <eos>")
        targets[i, : len(s)] = torch.tensor(s)
        inputs[i, 0] = BOS_ID
        inputs[i, 1 : len(s)] = torch.tensor(s[:-1])
    return inputs.to(device), targets.to(device)


def _token_logp(decoder: ConditionedDecoder, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed log-probabilities of ``targets`` (B, T) from the top layer's outputs (B, T, H)."""
    logp = word_log_probs(decoder.out(hidden)).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp.masked_fill(targets == PAD_ID, 0.0).sum(-1)


@torch.no_grad()
def sequence_log_likelihood(
    decoder: ConditionedDecoder, cond: torch.Tensor, sentences: Sequence[Sequence[int]]
) -> torch.Tensor:
    """log p(sentence_i | cond_i) for every i (sentences end with ``<eos>``), float64 (N,)."""
    decoder.eval()
    inputs, targets = pad_sentences(sentences, cond.device)
    logp = word_log_probs(decoder(cond, inputs)).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp.masked_fill(targets == PAD_ID, 0.0).sum(-1).double()


@torch.no_grad()
def pair_log_likelihood(
    decoder: ConditionedDecoder,
    cond: torch.Tensor,
    sentences: Sequence[Sequence[int]],
    *,
    pairs_per_batch: int = 4096,
    sentences_per_block: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """float64 (n_conditions, n_sentences): log p(sentence_j | cond_i) for every pair.

    Sentences go in blocks of similar length (``sentences_per_block``), each paired with as many
    conditions as fit in ``pairs_per_batch``."""
    from tqdm.auto import tqdm

    check_int("pairs_per_batch", pairs_per_batch, 1)
    check_int("sentences_per_block", sentences_per_block, 1)
    decoder.eval()
    c = decoder.config
    inputs, targets = pad_sentences(sentences, cond.device)
    n_cond, n_sent = len(cond), len(sentences)
    x = decoder.embed(inputs)
    for index in range(c.static_layer):  # blind to the condition: once per sentence
        layer = decoder.layers[index]
        x = layer.run(layer.input_part(x), layer.static_part(None, n_sent))
    first = decoder.layers[c.static_layer]
    sentence_part = first.input_part(x)  # (n_sent, T, gates)
    static_part = first.static_part(cond, n_cond)  # (n_cond, gates), bias included
    lengths = (targets != PAD_ID).sum(1)
    order = torch.argsort(lengths, stable=True)
    out = np.zeros((n_cond, n_sent))
    block = min(n_sent, sentences_per_block)
    per_batch = max(1, pairs_per_batch // block)
    bar = tqdm(total=n_cond * n_sent, desc="score pairs", unit="pair", disable=not progress, unit_scale=True)
    for s0 in range(0, n_sent, block):
        sent = order[s0 : s0 + block]
        steps = int(lengths[sent].max())
        for c0 in range(0, n_cond, per_batch):
            conds = torch.arange(c0, min(n_cond, c0 + per_batch), device=cond.device)
            ci, sj = conds.repeat_interleave(len(sent)), sent.repeat(len(conds))
            pre = sentence_part[sj, :steps] + static_part[ci][:, None, :]
            h = first.run(pre, torch.zeros_like(static_part[ci]))
            for index in range(c.static_layer + 1, c.n_layers):
                layer = decoder.layers[index]
                h = layer.run(layer.input_part(h), layer.static_part(None, len(h)))
            logp = _token_logp(decoder, h, targets[sj, :steps])
            out[ci.cpu().numpy(), sj.cpu().numpy()] = logp.double().cpu().numpy()
            bar.update(len(ci))
    bar.close()
    return out


@dataclass(frozen=True)
class Strategy:
    """How sentences are generated: beam search of width ``beam`` (1 = greedy), or, with ``samples``
    set, the best of ``samples`` samples at inverse temperature ``temperature``. ``min_length``:
    sentences have at least this many words (default 0: the exact search, which a briefly trained
    model often ends at once with the empty sentence; 1 rules that out)."""

    beam: int = 1
    samples: int | None = None
    temperature: float = 1.5
    min_length: int = 0

    def validate(self) -> Strategy:
        check_int("min_length", self.min_length, 0)
        if self.samples is None:
            check_int("beam width", self.beam, 1)
        else:
            check_int("samples", self.samples, 1)
            check_float("temperature (inverse)", self.temperature, 0.0, low_open=True)
        return self

    @property
    def name(self) -> str:
        at_least = f", at least {counted(self.min_length, 'word')}" if self.min_length else ""
        if self.samples is None:
            return ("greedy (beam 1)" if self.beam == 1 else f"beam {self.beam}") + at_least
        return f"sample N={self.samples} T={self.temperature:g}{at_least}"

    def to_dict(self) -> dict:
        at_least = {"min_length": self.min_length} if self.min_length else {}
        if self.samples is None:
            return {"strategy": "beam", "beam": self.beam, **at_least}
        return {"strategy": "sample", "samples": self.samples, "temperature": self.temperature, **at_least}


def generate(
    decoder: ConditionedDecoder,
    cond: torch.Tensor,
    strategy: Strategy,
    *,
    seeds: Sequence[int] | None = None,
    max_length: int = 20,
    batch_size: int = 64,
    progress: bool = False,
) -> Decoded:
    """Sentences for every row of ``cond`` by ``strategy``, ``batch_size`` inputs at a time (sampling
    draws input i from its own generator seeded by ``seeds[i]``; default: i)."""
    from tqdm.auto import tqdm

    strategy.validate()
    check_int("batch_size", batch_size, 1)
    seeds = list(range(len(cond))) if seeds is None else list(seeds)
    parts = []
    step = batch_size if strategy.samples is None else max(1, batch_size * 16 // strategy.samples)
    for start in tqdm(range(0, len(cond), step), desc=strategy.name, unit="batch", disable=not progress):
        block = cond[start : start + step]
        if strategy.samples is None:
            parts.append(
                beam_search(
                    decoder, block, width=strategy.beam, max_length=max_length, min_length=strategy.min_length
                )
            )
        else:
            parts.append(
                sample(
                    decoder,
                    block,
                    n_samples=strategy.samples,
                    temperature=strategy.temperature,
                    seeds=seeds[start : start + step],
                    max_length=max_length,
                    min_length=strategy.min_length,
                )
            )
    return Decoded(
        tokens=[t for p in parts for t in p.tokens],
        log_prob=np.concatenate([p.log_prob for p in parts]) if parts else np.zeros(0),
    )
