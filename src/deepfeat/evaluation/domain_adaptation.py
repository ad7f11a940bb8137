"""Domain adaptation splits (DeCAF Table 2.1's supervised setting): train on source only (S), on a
few labelled target samples only (T) or on both (ST), always test on the remaining target samples,
repeated over seeded splits. Saenko et al.'s Office protocol draws 20 source images per class when the
source is Amazon and 8 when it is Webcam or DSLR, and 3 labelled target images per class:
``DomainAdaptation.office31(source)`` sets those counts, and ``k_source`` may also map domain names to
counts. As a scikit-learn splitter, ``groups`` carries each row's domain ("source" / "target")."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from deepfeat.errors import ConfigError
from deepfeat.evaluation.protocols import (
    Protocol,
    Split,
    _check_classes,
    _check_seed,
    _class_counts,
    _per_class_draw,
    label_codes,
)
from deepfeat.validation import check_choice, check_int

DA_MODES = ("S", "T", "ST")
#: Source images per class of Saenko et al.'s Office protocol, by source domain (3 target images each).
OFFICE31_SOURCE_COUNTS = {"amazon": 20, "webcam": 8, "dslr": 8}


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
