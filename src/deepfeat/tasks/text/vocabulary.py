"""The word vocabulary of a sentence model: words seen at least ``min_count`` times in the training
captions, an unknown-word token for the rest, begin / end of sentence tokens and a length limit.

Indices: 0 ``<pad>`` (padding, never predicted), 1 ``<bos>`` (the "previous word" of the first step,
never predicted), 2 ``<eos>`` (ends a caption; predicted), 3 ``<unk>`` (any word outside the
vocabulary), then the words by decreasing count (ties alphabetical). A caption longer than
``max_length`` words is cut to its first ``max_length`` words before ``<eos>``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from deepfeat.errors import ConfigError
from deepfeat.validation import check_int

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


@dataclass
class Vocabulary:
    """Index <-> word maps; build from tokenised captions with :meth:`build`."""

    words: list[str]
    min_count: int = 1
    max_length: int = 20
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if list(self.words[: len(SPECIALS)]) != list(SPECIALS):
            raise ConfigError(f"a vocabulary starts with the special tokens {SPECIALS}")
        check_int("max_length (words per caption)", self.max_length, 1)
        self._index = {w: i for i, w in enumerate(self.words)}
        if len(self._index) != len(self.words):
            raise ConfigError("a vocabulary lists each word once")

    @classmethod
    def build(
        cls,
        captions: Iterable[Sequence[str]],
        *,
        min_count: int = 5,
        max_length: int = 20,
        max_size: int | None = None,
    ) -> Vocabulary:
        """The words of tokenised ``captions`` seen at least ``min_count`` times (at most ``max_size``
        of them, the most frequent)."""
        check_int("min_count", min_count, 1)
        check_int("max_length (words per caption)", max_length, 1)
        if max_size is not None:
            check_int("max_size", max_size, 1)
        counts = Counter(w for tokens in captions for w in tokens)
        for special in SPECIALS:
            counts.pop(special, None)
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[:max_size]
        if not kept:
            raise ConfigError(
                f"no word is seen {min_count} times in the training captions; lower min_count "
                f"(--min-count), or give more captions ({sum(counts.values())} words, {len(counts)} distinct)"
            )
        return cls(
            words=[*SPECIALS, *kept],
            min_count=min_count,
            max_length=max_length,
            counts={w: counts[w] for w in kept},
        )

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def index(self, word: str) -> int:
        """The index of ``word`` (``<unk>``'s for a word outside the vocabulary)."""
        return self._index.get(word, UNK_ID)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Word indices of a tokenised caption, cut to ``max_length`` words, followed by ``<eos>``."""
        return [self.index(w) for w in list(tokens)[: self.max_length]] + [EOS_ID]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of an index sequence up to the first ``<eos>``, without padding and ``<bos>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i in (PAD_ID, BOS_ID):
                continue
            out.append(self.words[i])
        return out

    def coverage(self, captions: Iterable[Sequence[str]]) -> float:
        """Share of the words of ``captions`` inside the vocabulary."""
        total = known = 0
        for tokens in captions:
            total += len(tokens)
            known += sum(w in self._index for w in tokens)
        return known / total if total else 1.0

    def to_dict(self) -> dict:
        """Plain JSON (saved with every model)."""
        return {
            "words": list(self.words),
            "min_count": self.min_count,
            "max_length": self.max_length,
            "counts": dict(self.counts),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        try:
            return cls(
                words=list(data["words"]),
                min_count=int(data.get("min_count", 1)),
                max_length=int(data.get("max_length", 20)),
                counts={str(k): int(v) for k, v in dict(data.get("counts", {})).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"damaged vocabulary record ({exc})") from None
