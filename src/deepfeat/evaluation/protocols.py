"""Evaluation protocols: which samples train a probe and which test it, reproducibly from a seed.

- :class:`KShot`: k samples per class for training, the rest (optionally at most ``max_test`` per
  class) for testing, repeated over seeded splits (DeCAF's Caltech-101 protocol: 30 per class, five
  splits; one-shot is k = 1).
- :class:`FixedSplit`: the train / test split the data defines (folder names or a manifest column).
- :class:`RandomSplit`: a seeded random hold-out fraction, repeated (for data without a split,
  including multi-label data).
- :class:`DomainAdaptation`: DeCAF Table 2.1's supervised adaptation setting between a source and a
  target domain: train on source only (S), on a few labelled target samples only (T) or on both (ST),
  always test on the remaining target samples, repeated over seeded splits. Saenko et al.'s Office
  protocol draws 20 source images per class when the source is Amazon and 8 when it is Webcam or DSLR,
  and 3 labelled target images per class: ``DomainAdaptation.office31(source)`` sets those counts,
  and ``k_source`` may also map domain names to counts.

Every protocol draws :class:`Split` objects with :meth:`splits` (a split names its rows per domain,
``{"data": rows}`` for single-domain protocols, so the same evaluation code trains on one domain or on
two), and is also a scikit-learn splitter (``split(X, y, groups)``, ``get_n_splits``), usable in
``cross_val_score`` and ``GridSearchCV``: ``groups`` carries the per-row split names for
:class:`FixedSplit` and the per-row domain (``"source"`` / ``"target"``) for :class:`DomainAdaptation`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from deepfeat.errors import ConfigError, DataError
from deepfeat.report.wording import counted, listed
from deepfeat.validation import check_choice, check_float, check_int

TRAIN_SPLIT_NAMES = ("train", "trainval")
TEST_SPLIT_NAMES = ("test",)
#: test rows where the data has no ``test`` split (hymenoptera: train / val)
VAL_SPLIT_NAMES = ("val", "valid", "validation")
DA_MODES = ("S", "T", "ST")
#: Source images per class of Saenko et al.'s Office protocol, by source domain (3 target images each).
OFFICE31_SOURCE_COUNTS = {"amazon": 20, "webcam": 8, "dslr": 8}


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


@dataclass
class DomainAdaptation(Protocol):
    """Source -> target adaptation splits for the modes S, T and ST (see the module docstring).

    ``k_source`` source samples per class (None: all of them; a mapping: by source domain name, e.g.
    :data:`OFFICE31_SOURCE_COUNTS`) and ``k_target`` labelled target samples per class train; the
    other target samples test. The same target test set serves all three modes within one seeded
    split, so S, T and ST are compared on identical test samples.
    """

    k_source: int | Mapping[str, int] | None = 20
    k_target: int = 3
    n_splits: int = 5
    random_state: int = 0
    modes: tuple[str, ...] = DA_MODES

    two_domains = True

    def __post_init__(self) -> None:
        if not self.modes:
            raise ConfigError(f"modes names no adaptation mode; valid: {', '.join(DA_MODES)}")
        for mode in self.modes:
            check_choice("adaptation mode", mode, DA_MODES)
        self.modes = tuple(self.modes)
        check_int("n_splits (number of splits)", self.n_splits, 1)
        _check_seed(self.random_state, self.n_splits)
        check_int("k_target (labelled target images per class)", self.k_target, 0)
        if self.k_target < 1 and any("T" in m for m in self.modes):
            raise ConfigError("modes T and ST need k_target >= 1 labelled target samples per class")
        if isinstance(self.k_source, Mapping):
            self.k_source = {
                str(k).lower(): check_int(f"k_source[{k!r}]", v, 1) for k, v in self.k_source.items()
            }
        elif self.k_source is not None:
            check_int("k_source (source images per class)", self.k_source, 1)

    @classmethod
    def office31(cls, source: str, **kwargs) -> DomainAdaptation:
        """Saenko et al.'s counts for an Office-31 source domain (amazon: 20, webcam / dslr: 8 per
        class; 3 labelled target images per class)."""
        name = check_choice("Office-31 domain", source.lower(), OFFICE31_SOURCE_COUNTS)
        return cls(k_source=OFFICE31_SOURCE_COUNTS[name], **kwargs)

    @property
    def name(self) -> str:
        return "da"

    def get_n_splits(self, X: Any = None, y: ArrayLike | None = None, groups: ArrayLike | None = None) -> int:
        return self.n_splits * len(self.modes)

    def source_count(self, source_name: str | None) -> int | None:
        """Source images per class for a source domain called ``source_name``."""
        if not isinstance(self.k_source, Mapping):
            return self.k_source
        key = (source_name or "").lower()
        if source_name is None and len(self.k_source) > 1:
            raise ConfigError(
                f"k_source gives counts for the source domains {sorted(self.k_source)}, and split() does "
                "not know which one the source rows come from: give k_source as a number (e.g. "
                "DomainAdaptation.office31('amazon'))"
            )
        if source_name is None:  # one domain named: the source
            return next(iter(self.k_source.values()))
        if key not in self.k_source:
            raise ConfigError(
                f"k_source gives counts for the source domains {sorted(self.k_source)}; the source is "
                f"{source_name!r}: give k_source as a number (on the command line: --protocol da:KS:KT)"
            )
        return self.k_source[key]

    def split(
        self, X: Any, y: ArrayLike | None = None, groups: ArrayLike | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if y is None or groups is None:
            raise ConfigError("domain adaptation splits need y and groups ('source' / 'target' per row)")
        (y, classes), groups = label_codes(y), np.asarray(groups).astype(str)
        src, tgt = np.flatnonzero(groups == "source"), np.flatnonzero(groups == "target")
        if src.size + tgt.size != len(groups):
            raise ConfigError("groups must be 'source' or 'target' for every row")
        for s in self.splits(y[src], classes, target_targets=y[tgt]):
            rows = {"source": src, "target": tgt}
            train = np.concatenate([rows[d][idx] for d, idx in s.train.items()])
            yield np.sort(train), rows["target"][s.test["target"]]

    def splits(
        self,
        targets: np.ndarray,
        classes: list[str] | None = None,
        *,
        split_names: np.ndarray | None = None,
        target_targets: np.ndarray | None = None,
        source_name: str | None = None,
    ) -> list[Split]:
        """Splits over two domains, ``source`` (``targets``) and ``target`` (``target_targets``),
        with the same class list in both."""
        if target_targets is None:
            raise ConfigError("domain adaptation needs the target domain's labels (target data)")
        source_targets = targets
        k_source = self.source_count(source_name)
        s_counts = _class_counts(source_targets, classes)
        t_counts = _class_counts(target_targets, classes)
        if k_source is not None:
            _check_classes(s_counts, classes, k_source, f"source domain ({k_source} per class)")
        else:
            _check_classes(s_counts, classes, 1, "source domain")
        _check_classes(
            t_counts, classes, self.k_target + 1, f"target domain ({self.k_target} per class + test)"
        )
        out = []
        for i in range(self.n_splits):
            seed = self.random_state + i
            rng = np.random.default_rng(seed)
            if k_source is None:
                src = np.arange(len(source_targets))
            else:
                src, _ = _per_class_draw(source_targets, k_source, rng)
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
                        {"mode": mode, "k_source": k_source, "k_target": self.k_target},
                    )
                )
        return out
