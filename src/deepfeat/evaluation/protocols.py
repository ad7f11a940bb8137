"""Evaluation protocols: which samples train a probe and which test it, reproducibly from a seed.

- :class:`KShot`: k samples per class for training, the rest (optionally at most ``max_test`` per
  class) for testing, repeated over seeded splits (DeCAF's Caltech-101 protocol: 30 per class, five
  splits; one-shot is k = 1).
- :class:`FixedSplit`: the train / test split the data defines (folder names or a manifest column).
- :class:`RandomSplit`: a seeded random hold-out fraction, repeated (for data without a split,
  including multi-label data).
- :class:`DomainAdaptation`: DeCAF Table 2.1's supervised adaptation setting between a source and a
  target domain: train on source only (S), on a few labelled target samples only (T) or on both (ST),
  always test on the remaining target samples (Saenko et al.'s protocol: 20 source and 3 target
  samples per class by default), repeated over seeded splits.

A split names its rows per domain (``{"data": rows}`` for single-domain protocols), so the same
evaluation code trains on one domain or on two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deepfeat.errors import ConfigError, DataError

TRAIN_SPLIT_NAMES = ("train",)
TEST_SPLIT_NAMES = ("test", "val", "valid", "validation")
DA_MODES = ("S", "T", "ST")


@dataclass
class Split:
    """One train / test partition: row indices per domain, and how it was drawn."""

    name: str
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    seed: int | None = None
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON (row indices included, so the split can be reproduced exactly)."""
        return {
            "name": self.name,
            "seed": self.seed,
            "train": {k: v.tolist() for k, v in self.train.items()},
            "test": {k: v.tolist() for k, v in self.test.items()},
            **self.info,
        }


def _class_counts(targets: np.ndarray, classes: list[str] | None) -> np.ndarray:
    if targets.ndim != 1:
        raise ConfigError(
            "this protocol needs single-label data; use 'fixed' or 'random' for multi-label data"
        )
    n_classes = len(classes) if classes is not None else int(targets.max()) + 1
    return np.bincount(targets, minlength=n_classes)


def _check_classes(counts: np.ndarray, classes: list[str] | None, need: int, what: str) -> None:
    present = np.flatnonzero(counts > 0)
    if len(present) < 2:
        raise DataError(f"{what}: the data holds {len(present)} class; a probe needs at least 2")
    short = [c for c in present if counts[c] < need]
    if short:
        names = [classes[c] if classes else str(c) for c in short]
        detail = ", ".join(f"{n!r} ({counts[c]})" for n, c in zip(names[:5], short[:5]))
        raise DataError(
            f"{what}: {len(short)} classes have fewer than {need} images: {detail}; "
            "lower k or drop those classes"
        )


def _per_class_draw(targets: np.ndarray, k: int, rng: np.random.Generator, max_rest: int | None = None):
    """k random rows per class, and the rest (at most max_rest per class), both sorted."""
    picked, rest = [], []
    for c in np.unique(targets):
        rows = rng.permutation(np.flatnonzero(targets == c))
        picked.append(rows[:k])
        remaining = rows[k:]
        rest.append(remaining if max_rest is None else remaining[:max_rest])
    return np.sort(np.concatenate(picked)), np.sort(np.concatenate(rest))


@dataclass
class KShot:
    """``k`` training samples per class, the rest for testing, over ``n_splits`` seeded splits."""

    k: int = 30
    n_splits: int = 5
    random_state: int = 0
    max_test: int | None = None

    def __post_init__(self) -> None:
        if self.k < 1 or self.n_splits < 1:
            raise ConfigError(f"k and n_splits must be at least 1, got k={self.k}, n_splits={self.n_splits}")

    @property
    def name(self) -> str:
        return f"kshot{self.k}"

    def splits(self, targets: np.ndarray, classes: list[str] | None = None) -> list[Split]:
        """The seeded splits of a label vector."""
        counts = _class_counts(targets, classes)
        _check_classes(counts, classes, self.k + 1, f"{self.k}-shot protocol (k train + at least 1 test)")
        out = []
        for i in range(self.n_splits):
            seed = self.random_state + i
            train, test = _per_class_draw(targets, self.k, np.random.default_rng(seed), self.max_test)
            out.append(Split(f"{self.name}-seed{seed}", {"data": train}, {"data": test}, seed, {"k": self.k}))
        return out


@dataclass
class FixedSplit:
    """The data's own split: rows whose split is ``train`` train, rows in ``test`` / ``val`` test."""

    @property
    def name(self) -> str:
        return "fixed"

    def splits(self, targets: np.ndarray, split_names: np.ndarray | None, classes=None) -> list[Split]:
        """One split from per-row split names."""
        if split_names is None:
            raise DataError(
                "the data defines no train/test split (no split folders or 'split' column); "
                "use a k-shot or random protocol"
            )
        names = np.asarray([str(s).lower() for s in split_names])
        train = np.flatnonzero(np.isin(names, TRAIN_SPLIT_NAMES))
        test = np.flatnonzero(np.isin(names, TEST_SPLIT_NAMES))
        if train.size == 0 or test.size == 0:
            found = sorted(set(names.tolist()))
            raise DataError(f"fixed split needs 'train' rows and 'test' or 'val' rows; the data has {found}")
        if targets.ndim == 1:
            counts = np.bincount(targets[train], minlength=int(targets.max()) + 1)
            _check_classes(counts, classes, 1, "fixed split (training part)")
        return [Split("fixed", {"data": train}, {"data": test}, None, {})]


@dataclass
class RandomSplit:
    """A seeded random hold-out of ``test_size`` of the rows (stratified for single-label data)."""

    test_size: float = 0.3
    n_splits: int = 5
    random_state: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.test_size < 1:
            raise ConfigError(f"test_size must be between 0 and 1, got {self.test_size}")

    @property
    def name(self) -> str:
        return f"random{self.test_size:g}"

    def splits(self, targets: np.ndarray, classes=None) -> list[Split]:
        """The seeded hold-out splits."""
        from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

        if targets.ndim == 1:
            _check_classes(_class_counts(targets, classes), classes, 2, "random split")
            splitter = StratifiedShuffleSplit
        else:
            splitter = ShuffleSplit
        out = []
        for i in range(self.n_splits):
            seed = self.random_state + i
            s = splitter(n_splits=1, test_size=self.test_size, random_state=seed)
            train, test = next(s.split(np.zeros(len(targets)), targets))
            out.append(
                Split(f"{self.name}-seed{seed}", {"data": np.sort(train)}, {"data": np.sort(test)}, seed)
            )
        return out


@dataclass
class DomainAdaptation:
    """Source -> target adaptation splits for the modes S, T and ST (see the module docstring).

    ``k_source`` source samples per class (None: all of them) and ``k_target`` labelled target samples
    per class train; the other target samples test. The same target test set serves all three modes
    within one seeded split, so S, T and ST are compared on identical test samples.
    """

    k_source: int | None = 20
    k_target: int = 3
    n_splits: int = 5
    random_state: int = 0
    modes: tuple[str, ...] = DA_MODES

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in DA_MODES]
        if bad or not self.modes:
            raise ConfigError(f"unknown adaptation modes {bad}; valid: {', '.join(DA_MODES)}")
        if self.k_target < 1 and any("T" in m for m in self.modes):
            raise ConfigError("modes T and ST need k_target >= 1 labelled target samples per class")

    @property
    def name(self) -> str:
        return "da"

    def splits(self, source_targets: np.ndarray, target_targets: np.ndarray, classes=None) -> list[Split]:
        """Splits over two domains, ``source`` and ``target`` (same class list in both)."""
        s_counts = _class_counts(source_targets, classes)
        t_counts = _class_counts(target_targets, classes)
        if self.k_source is not None:
            _check_classes(s_counts, classes, self.k_source, f"source domain ({self.k_source} per class)")
        else:
            _check_classes(s_counts, classes, 1, "source domain")
        _check_classes(
            t_counts, classes, self.k_target + 1, f"target domain ({self.k_target} per class + test)"
        )
        out = []
        for i in range(self.n_splits):
            seed = self.random_state + i
            rng = np.random.default_rng(seed)
            if self.k_source is None:
                src = np.arange(len(source_targets))
            else:
                src, _ = _per_class_draw(source_targets, self.k_source, rng)
            tgt_train, tgt_test = _per_class_draw(target_targets, self.k_target, rng)
            for mode in self.modes:
                train = {}
                if "S" in mode:
                    train["source"] = src
                if "T" in mode:
                    train["target"] = tgt_train
                out.append(
                    Split(
                        f"{mode}-seed{seed}",
                        train,
                        {"target": tgt_test},
                        seed,
                        {"mode": mode, "k_source": self.k_source, "k_target": self.k_target},
                    )
                )
        return out


def parse_protocol(text: str, n_splits: int = 5, random_state: int = 0):
    """Protocol from its CLI spelling: ``kshot:K``, ``fixed``, ``random:FRACTION`` or ``da``
    (``da:KS:KT`` for other per-class counts; KS may be ``all``)."""
    name, _, arg = text.partition(":")
    try:
        if name == "kshot":
            return KShot(k=int(arg or 30), n_splits=n_splits, random_state=random_state)
        if name == "fixed":
            return FixedSplit()
        if name == "random":
            return RandomSplit(test_size=float(arg or 0.3), n_splits=n_splits, random_state=random_state)
        if name == "da":
            ks, _, kt = arg.partition(":")
            k_source = None if ks == "all" else int(ks or 20)
            return DomainAdaptation(
                k_source=k_source, k_target=int(kt or 3), n_splits=n_splits, random_state=random_state
            )
    except ValueError as exc:
        raise ConfigError(f"cannot read protocol {text!r} ({exc})") from None
    raise ConfigError(f"unknown protocol {text!r}; valid: kshot:K, fixed, random:FRACTION, da[:KS:KT]")
