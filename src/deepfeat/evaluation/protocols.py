"""Evaluation protocols: which samples train a probe and which test it, reproducibly from a seed.

- :class:`KShot`: k samples per class for training, the rest (optionally at most ``max_test`` per
  class) for testing, repeated over seeded splits (DeCAF's Caltech-101 protocol: 30 per class, five
  splits; one-shot is k = 1).
- :class:`FixedSplit`: the train / test split the data defines (folder names or a manifest column).
- :class:`RandomSplit`: a seeded random hold-out fraction, repeated (for data without a split,
  including multi-label data).
- :class:`~deepfeat.evaluation.domain_adaptation.DomainAdaptation` (its own module): DeCAF Table
  2.1's supervised adaptation between a source and a target domain (S, T and ST).

Every protocol draws :class:`Split` objects with :meth:`splits` (a split names its rows per domain,
``{"data": rows}`` for single-domain protocols, so the same evaluation code trains on one domain or on
two), and is also a scikit-learn splitter (``split(X, y, groups)``, ``get_n_splits``), usable in
``cross_val_score`` and ``GridSearchCV``: ``groups`` carries the per-row split names for
:class:`FixedSplit` and the per-row domain (``"source"`` / ``"target"``) for :class:`DomainAdaptation`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from deepfeat.errors import ConfigError, DataError
from deepfeat.report.wording import counted, listed
from deepfeat.validation import check_float, check_int

TRAIN_SPLIT_NAMES = ("train", "trainval")
TEST_SPLIT_NAMES = ("test",)
#: test rows where the data has no ``test`` split (hymenoptera: train / val)
VAL_SPLIT_NAMES = ("val", "valid", "validation")


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


def label_codes(y) -> tuple[np.ndarray, list[str] | None]:
    """Labels as the protocols count them: class codes 0..K-1 and the class names (any label values:
    strings, negative or float numbers, as the probes take them); a 0/1 indicator matrix as it is."""
    y = np.asarray(y)
    if y.ndim != 1:
        return y, None
    values, codes = np.unique(y, return_inverse=True)
    return codes.astype(np.int64), [str(v) for v in values.tolist()]


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
        detail = listed([(classes[c] if classes else str(c), counts[c]) for c in short], form=_name_count)
        have = counted(len(short), "class has", "classes have")
        raise DataError(f"{what}: {have} fewer than {need} images: {detail}; lower k or drop those classes")


def _name_count(item: tuple) -> str:
    name, count = item
    return f"{str(name)!r} ({int(count)})"


def _per_class_draw(targets: np.ndarray, k: int, rng: np.random.Generator, max_rest: int | None = None):
    """k random rows per class, and the rest (at most max_rest per class), both sorted."""
    picked, rest = [], []
    for c in np.unique(targets):
        rows = rng.permutation(np.flatnonzero(targets == c))
        picked.append(rows[:k])
        remaining = rows[k:]
        rest.append(remaining if max_rest is None else remaining[:max_rest])
    return np.sort(np.concatenate(picked)), np.sort(np.concatenate(rest))


class Protocol:
    """Base class: draws seeded :class:`Split` objects and exposes them as a scikit-learn splitter."""

    name: str = "protocol"
    two_domains: bool = False

    def splits(
        self,
        targets: np.ndarray,
        classes: list[str] | None = None,
        *,
        split_names: np.ndarray | None = None,
        target_targets: np.ndarray | None = None,
        source_name: str | None = None,
    ) -> list[Split]:
        """The splits of a label vector (or indicator matrix); ``split_names`` are the data's own
        per-row split names (:class:`FixedSplit`), ``target_targets`` the target domain's labels
        (:class:`DomainAdaptation`)."""
        raise NotImplementedError

    def get_n_splits(self, X: Any = None, y: ArrayLike | None = None, groups: ArrayLike | None = None) -> int:
        """Number of splits (scikit-learn splitter API)."""
        raise NotImplementedError

    def split(
        self, X: Any, y: ArrayLike | None = None, groups: ArrayLike | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(train rows, test rows) of X per split (scikit-learn splitter API); see the module docstring
        for what ``groups`` means per protocol."""
        if y is None:
            raise ConfigError(f"the {self.name} protocol needs the labels y to split")
        codes, classes = label_codes(y)
        names = None if groups is None else np.asarray(groups, dtype=object)
        for s in self.splits(codes, classes, split_names=names):
            yield s.train["data"], s.test["data"]

    def to_dict(self) -> dict:
        """Plain JSON: the protocol's name and parameters."""
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"name": self.name, **params}


def _check_seed(random_state, n_splits: int) -> None:
    """Split i draws with seed random_state + i: all of them must be valid seeds (0 to 2**32 - 1)."""
    check_int("random_state (seed of the first split)", random_state, 0, 2**32 - n_splits)


@dataclass
class KShot(Protocol):
    """``k`` training samples per class, the rest for testing, over ``n_splits`` seeded splits."""

    k: int = 30
    n_splits: int = 5
    random_state: int = 0
    max_test: int | None = None

    def __post_init__(self) -> None:
        check_int("k (training images per class)", self.k, 1)
        check_int("n_splits (number of splits)", self.n_splits, 1)
        _check_seed(self.random_state, self.n_splits)
        if self.max_test is not None:
            check_int("max_test", self.max_test, 1)

    @property
    def name(self) -> str:
        return f"kshot{self.k}"

    def get_n_splits(self, X: Any = None, y: ArrayLike | None = None, groups: ArrayLike | None = None) -> int:
        return self.n_splits

    def splits(
        self,
        targets: np.ndarray,
        classes: list[str] | None = None,
        *,
        split_names: np.ndarray | None = None,
        target_targets: np.ndarray | None = None,
        source_name: str | None = None,
    ) -> list[Split]:
        counts = _class_counts(targets, classes)
        _check_classes(counts, classes, self.k + 1, f"{self.k}-shot protocol (k train + at least 1 test)")
        out = []
        for i in range(self.n_splits):
            seed = self.random_state + i
            train, test = _per_class_draw(targets, self.k, np.random.default_rng(seed), self.max_test)
            out.append(Split(f"{self.name}-seed{seed}", {"data": train}, {"data": test}, seed, {"k": self.k}))
        return out


@dataclass
class FixedSplit(Protocol):
    """The data's own split: ``train`` (or VOC's ``trainval``) rows train; ``test`` rows test, or
    the ``val`` rows where there is no test split. Validation rows beside a test split are left out
    (the probes choose C by cross-validation on the training rows), and counted in the split's info."""

    @property
    def name(self) -> str:
        return "fixed"

    def get_n_splits(self, X: Any = None, y: ArrayLike | None = None, groups: ArrayLike | None = None) -> int:
        return 1

    def splits(
        self,
        targets: np.ndarray,
        classes: list[str] | None = None,
        *,
        split_names: np.ndarray | None = None,
        target_targets: np.ndarray | None = None,
        source_name: str | None = None,
    ) -> list[Split]:
        if split_names is None:
            raise DataError(
                "the data defines no train/test split (no split folders or 'split' column; as a "
                "scikit-learn splitter, pass each row's split name as groups=); use a k-shot or random "
                "protocol"
            )
        names = np.asarray([str(s).lower() for s in split_names])
        found = sorted(set(names.tolist()))
        train = np.flatnonzero(np.isin(names, TRAIN_SPLIT_NAMES))
        if len(set(found) & set(TRAIN_SPLIT_NAMES)) > 1:
            raise DataError(f"fixed split: the data has both 'train' and 'trainval' rows ({found}); keep one")
        test = np.flatnonzero(np.isin(names, TEST_SPLIT_NAMES))
        held = VAL_SPLIT_NAMES if test.size == 0 else TEST_SPLIT_NAMES
        test = np.flatnonzero(np.isin(names, held))
        if train.size == 0 or test.size == 0:
            raise DataError(
                "fixed split needs 'train' (or 'trainval') rows and 'test' or 'val' rows; "
                f"the data has {found}"
            )
        unused = {
            name: int((names == name).sum()) for name in found if name not in (*TRAIN_SPLIT_NAMES, *held)
        }
        if targets.ndim == 1:
            n_classes = len(classes) if classes is not None else int(targets.max()) + 1
            counts = np.bincount(targets[train], minlength=n_classes)
            _check_classes(counts, classes, 1, "fixed split (training part)")
        return [Split("fixed", {"data": train}, {"data": test}, None, {"unused": unused} if unused else {})]


@dataclass
class RandomSplit(Protocol):
    """A seeded random hold-out of ``test_size`` of the rows (stratified for single-label data)."""

    test_size: float = 0.3
    n_splits: int = 5
    random_state: int = 0

    def __post_init__(self) -> None:
        check_float("the held-out fraction (test_size)", self.test_size, 0, 1, low_open=True, high_open=True)
        check_int("n_splits (number of splits)", self.n_splits, 1)
        _check_seed(self.random_state, self.n_splits)

    @property
    def name(self) -> str:
        return f"random{self.test_size:g}"

    def get_n_splits(self, X: Any = None, y: ArrayLike | None = None, groups: ArrayLike | None = None) -> int:
        return self.n_splits

    def splits(
        self,
        targets: np.ndarray,
        classes: list[str] | None = None,
        *,
        split_names: np.ndarray | None = None,
        target_targets: np.ndarray | None = None,
        source_name: str | None = None,
    ) -> list[Split]:
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
