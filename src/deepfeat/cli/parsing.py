"""Command-line spellings turned into the library's typed objects: comma lists, protocols, choices.

Only the CLI parses strings; every error names the option and says what would be valid.
"""

from __future__ import annotations

from enum import Enum

from deepfeat.errors import ConfigError
from deepfeat.evaluation.domain_adaptation import OFFICE31_SOURCE_COUNTS, DomainAdaptation
from deepfeat.evaluation.protocols import (
    FixedSplit,
    KShot,
    Protocol,
    RandomSplit,
)

PROTOCOL_SPELLINGS = "kshot:K, fixed, random:FRACTION, da[:KS:KT] or da:office31"


class Method(str, Enum):
    activations = "activations"
    gradient = "gradient"
    interactive = "interactive"
    fisher = "fisher"


class PreprocessName(str, Enum):
    backbone = "backbone"
    decaf = "decaf"
    interactive = "interactive"
    warp = "warp"


class OnBadImage(str, Enum):
    skip = "skip"
    fail = "fail"


class Loader(str, Enum):
    threads = "threads"
    processes = "processes"


class KernelNormalize(str, Enum):
    factors = "factors"
    gradient = "gradient"
    none = "none"


def names(text: str | None, option: str) -> list[str]:
    """The non-empty items of a comma-separated option value; an error naming the option when none."""
    items = [x.strip() for x in (text or "").split(",") if x.strip()]
    if not items:
        raise ConfigError(f"{option} names nothing; give a comma-separated list")
    return items


def ints(text: str | None, option: str, minimum: int | None = None) -> list[int]:
    """Whole numbers from a comma-separated option value."""
    out = []
    for item in names(text, option):
        try:
            value = int(item)
        except ValueError:
            raise ConfigError(f"{option} takes comma-separated whole numbers, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{option} takes numbers of at least {minimum}, got {value}")
        out.append(value)
    return out


def protocol(text: str, n_splits: int | None = None, seed: int = 0, default_splits: int = 5) -> Protocol:
    """A protocol from its CLI spelling (see :data:`PROTOCOL_SPELLINGS`) and ``--splits`` / ``--seed``
    (``n_splits`` None: ``default_splits``; a given one is refused for ``fixed``, which has one split)."""
    given = n_splits is not None
    n_splits = default_splits if n_splits is None else n_splits
    if n_splits < 1:
        raise ConfigError(f"--splits must be at least 1, got {n_splits}")
    name, _, arg = text.strip().partition(":")

    def number(value: str, kind, what: str):
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(f"--protocol {text!r}: {what} must be a number, got {value!r}") from None

    if name == "kshot":
        k = number(arg or "30", int, "K (training images per class)")
        if k < 1:
            raise ConfigError(f"--protocol {text!r}: K (training images per class) must be at least 1")
        return KShot(k=k, n_splits=n_splits, random_state=seed)
    if name == "fixed":
        if arg:
            raise ConfigError(f"--protocol {text!r}: 'fixed' takes no argument")
        if given and n_splits != 1:
            raise ConfigError(
                f"--splits {n_splits}: --protocol fixed has one split (the data's own train / test); "
                "--splits applies to the seeded protocols (kshot, random and, in evaluate, da)"
            )
        return FixedSplit()
    if name == "random":
        fraction = number(arg or "0.3", float, "FRACTION (held-out share)")
        if not 0 < fraction < 1:
            raise ConfigError(
                f"--protocol {text!r}: random:FRACTION holds out a fraction of the images, between 0 and 1 "
                "(e.g. random:0.3)"
            )
        return RandomSplit(test_size=fraction, n_splits=n_splits, random_state=seed)
    if name == "da":
        if arg == "office31":
            return DomainAdaptation(
                k_source=dict(OFFICE31_SOURCE_COUNTS), n_splits=n_splits, random_state=seed
            )
        ks, _, kt = arg.partition(":")
        k_source = None if ks == "all" else number(ks or "20", int, "KS (source images per class)")
        k_target = number(kt or "3", int, "KT (labelled target images per class)")
        return DomainAdaptation(k_source=k_source, k_target=k_target, n_splits=n_splits, random_state=seed)
    raise ConfigError(f"unknown --protocol {text!r}; valid: {PROTOCOL_SPELLINGS}")
