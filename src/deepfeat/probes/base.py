"""Pieces every probe shares: the default C grid, checks of features, C and device, and target
preparation (class codes or a multi-label indicator with its mask of counted entries)."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from deepfeat.errors import ConfigError, DataError
from deepfeat.validation import check_choice, check_device, refuse_complex, refuse_sparse

#: the C grid searched by default: 1e-4 ... 1e2, one value per decade
DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 7))
#: criteria of the C search
SCORINGS = ("accuracy", "mean_class_accuracy", "map")


def check_features(X, name: str = "X") -> np.ndarray:
    """float32 (n, d) features; a clear error for sparse or complex input, NaN / infinite values or a
    wrong shape."""
    refuse_sparse(X, name, "the probes take dense (n_samples, n_features) arrays")
    try:
        raw = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be a numeric (n_samples, n_features) array ({exc})") from None
    refuse_complex(raw, name, "real features only")
    try:
        with np.errstate(over="ignore"):  # values beyond float32 are named below
            arr = raw.astype(np.float32, copy=False)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be a numeric (n_samples, n_features) array ({exc})") from None
    if arr.ndim == 1:
        raise DataError(
            f"{name} must be a 2-D (n_samples, n_features) array, got a 1-D one of shape {arr.shape}; "
            f"Reshape your data: {name}.reshape(-1, 1) for one feature, {name}.reshape(1, -1) for one sample"
        )
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise DataError(
            f"{name} must be a non-empty (n_samples, n_features) array: 0 feature(s) (shape={arr.shape}) "
            "while a minimum of 1 is required."
        )
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty (n_samples, n_features) array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        if raw.dtype.kind == "f" and np.isfinite(raw).all():  # finite, but not in float32
            largest = float(np.abs(raw).max())
            raise DataError(
                f"{name} has values beyond float32's range (largest magnitude {largest:.3g}, first rows: "
                f"{rows[:5].tolist()}); the probes compute in float32: rescale the features"
            )
        raise DataError(
            f"{name} has {int(bad.sum())} NaN or infinite values in {rows.size} rows "
            f"(first rows: {rows[:5].tolist()}); clean or drop those samples"
        )
    return arr


def check_products(X: np.ndarray, name: str = "X") -> None:
    """A clear error where float32 rows X are too large for the probes' products (Gram matrices, sums
    over the features) to stay within float32's range."""
    limit = np.sqrt(np.finfo(np.float32).max / (4.0 * max(X.shape[1], 1)))
    largest = max(float(X.max()), -float(X.min())) if X.size else 0.0  # (no |X| copy)
    if largest > limit:
        raise DataError(
            f"{name} has values up to {largest:.3g}, and products of its rows overflow float32 beyond "
            f"{limit:.3g}; rescale the features (e.g. StandardScaler, or normalize=True)"
        )


def unit_rows(X: np.ndarray) -> np.ndarray:
    """float32 rows of X scaled to unit L2 norm (zero rows stay zero); the squared norms summed in
    float64 (those of float32 rows overflow from about 1e19 on) without a float64 copy of X."""
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))[:, None]
    return (X / np.maximum(norms, 1e-12)).astype(np.float32)


def tensor_of(arr: np.ndarray, device=None) -> torch.Tensor:
    """``arr`` as a tensor sharing its memory where it can, read-only arrays included (a DataFrame's
    values, a memory-mapped store: the probes never write into their inputs, so torch's warning
    about non-writable arrays does not apply)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(arr, device=device)


def feature_names(X) -> np.ndarray | None:
    """The column names of a DataFrame-like ``X`` when all are strings (scikit-learn's rule), else None."""
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = np.asarray(list(columns), dtype=object)
    return names if len(names) and all(isinstance(n, str) for n in names) else None


def check_feature_names(estimator, X, *, reset: bool) -> None:
    """scikit-learn's feature-name contract: ``fit`` (``reset``) records ``feature_names_in_`` from a
    DataFrame's string columns; later calls refuse other or reordered columns (a DataError) and warn
    when names are missing."""
    names = feature_names(X)
    if reset:
        if names is not None:
            estimator.feature_names_in_ = names
        elif hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
        return
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is None:
        return
    if names is None:
        warnings.warn(
            f"X does not have valid feature names, but {type(estimator).__name__} was fitted with "
            "feature names",
            UserWarning,
            stacklevel=3,
        )
    elif len(names) != len(fitted) or (names != fitted).any():
        differ = [f"{a!r} (fit: {b!r})" for a, b in zip(names, fitted) if a != b][:3]
        raise DataError(
            "The feature names should match those that were passed during fit: columns "
            f"{', '.join(differ) or f'{len(names)} against {len(fitted)}'}; select X[probe.feature_names_in_]"
        )


def check_C(C, Cs) -> None:
    """Validate a probe's ``C`` (a positive number or ``"cv"``) and, for ``"cv"``, its grid ``Cs``."""
    if isinstance(C, str):
        if C != "cv":
            raise ConfigError(f"C must be a positive number or 'cv', got {C!r}")
        try:
            grid = [float(c) for c in Cs]
        except (TypeError, ValueError):
            grid = None
        if not grid or any(not c > 0 or not np.isfinite(c) for c in grid):
            raise ConfigError(f"Cs must be a non-empty list of positive numbers, got {Cs!r}")
        return
    try:
        value = float(C)
    except (TypeError, ValueError):
        raise ConfigError(f"C must be a positive number or 'cv', got {C!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise ConfigError(f"C must be positive, got {C}")


def check_cv(cv):
    """``cv`` of the C search: a number of folds (at least 2; returned as an int), a scikit-learn
    splitter (an object with ``split``) or a list of (train, validation) index pairs; a clear error
    otherwise."""
    if (hasattr(cv, "split") and not isinstance(cv, str)) or (
        isinstance(cv, list | tuple) and cv and not isinstance(cv[0], int | bool)
    ):
        return cv
    if isinstance(cv, bool) or not isinstance(cv, int | np.integer) or cv < 2:
        raise ConfigError(
            f"cv must be at least 2 folds, a splitter such as StratifiedKFold(5) or a list of (train, "
            f"validation) index pairs; got {cv!r}"
        )
    return int(cv)


def check_scoring(scoring: str | None) -> str | None:
    """``scoring`` when it is None or one of :data:`SCORINGS`."""
    return None if scoring is None else check_choice("scoring", scoring, SCORINGS)


def resolve_device(device) -> torch.device:
    """``"cpu"``, ``"cuda"`` (``"cuda:N"``) or a :class:`torch.device` (None: the CPU), checked by
    :func:`deepfeat.validation.check_device`."""
    return check_device(device)


#: multiply-adds of one objective evaluation per thread below which extra threads do not pay. A trade
#: for shared cores: with every problem from 1 million on given 2 threads (interleaved whole fits,
#: 4 December, medians of 5), a quiet 2-core host ran multi-class fits 1.3-1.5x faster (10 classes x
#: 1,200-8,000 x 192, x 1,200-3,060 x 1,280, 102 x 1,200 x 192 logistic; 0.97-1.45x squared hinge) but
#: two classes x 8,000 x 1,280 2x slower (beside NumPy's reduction threads), and with one other busy
#: process the multi-class fits ran 2.1-4.6x slower (10 x 1,200 x 192 squared hinge 0.55 -> 2.5 s)
WORK_PER_THREAD = 20_000_000


@contextlib.contextmanager
def thread_budget(work: int) -> Iterator[int]:
    """Torch's intra-op threads for a fit whose objective evaluation costs about ``work`` multiply-adds:
    at most ``torch.get_num_threads()``, and fewer for small problems, whose many small operations
    only pay thread hand-overs (costly on shared, loaded cores); large products and factorisations
    inside take back the threads held back (:func:`dense_threads`). Restored on exit."""
    before = torch.get_num_threads()
    token = _OUTER_THREADS.set(before)
    try:
        with _torch_threads(max(1, min(before, int(work // WORK_PER_THREAD)))) as n:
            yield n
    finally:
        _OUTER_THREADS.reset(token)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[int]:
    """Torch's intra-op threads set to ``n`` inside, the previous count restored on exit."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != before:
            torch.set_num_threads(before)


#: multiply-adds per thread from which a dense matrix product inside a :func:`thread_budget` (a Gram
#: matrix, a projection, an exact Hessian) takes the threads the budget held back (2 threads, float32:
#: a weighted Gram matrix of 300-3,060 x 193 rows 1.7-1.9x faster). Interleaved whole fits (C search
#: and final fit, medians of 9; logistic / squared hinge, the same C and coefficients): two classes x
#: 3,060 x 1,280 1.11x / 1.19x, x 1,200 x 1,280 1.12x / 1.20x, x 8,000 x 1,280 1.23x / 1.12x, x 3,060
#: x 192 1.11x / 1.11x, x 1,200 x 192 1.13x / 1.04x, x 300 x 1,280 1.05x / 1.08x; ten classes x 1,200
#: x 1,280 1.11x / 1.07x; 0.96-1.07x (within their spread) at two classes x 300 x 192 and 8,000 x 192
#: and ten classes x 300-3,060 x 192
DENSE_WORK_PER_THREAD = 5_000_000
#: ... and a Cholesky factorisation (batched factors of 3 x 460^2 ran 1.3x slower on 2 threads than on
#: one, of 3 x 715^2 1.2x faster)
FACTOR_WORK_PER_THREAD = 50_000_000
#: torch's intra-op threads outside the innermost :func:`thread_budget` (None: outside any)
_OUTER_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar("outer_threads", default=None)


@contextlib.contextmanager
def dense_threads(work: float, factor: bool = False) -> Iterator[int]:
    """Torch's intra-op threads for one dense operation of about ``work`` multiply-adds (a product, or
    with ``factor`` a factorisation) inside a :func:`thread_budget`: the threads outside it, as many as
    the work pays (``DENSE_WORK_PER_THREAD``, ``FACTOR_WORK_PER_THREAD``), never fewer than now. A
    large product splits well across threads, where the budget's iterations of small operations do
    not. Restored on exit."""
    outer, now = _OUTER_THREADS.get(), torch.get_num_threads()
    per_thread = FACTOR_WORK_PER_THREAD if factor else DENSE_WORK_PER_THREAD
    with _torch_threads(now if outer is None else max(now, min(outer, int(work // per_thread)))) as n:
        yield n


_BLAS: list = []  # threadpoolctl's controller of the loaded BLAS libraries, made on first use


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """NumPy's (and SciPy's) BLAS on one thread inside, the previous counts restored on exit: for
    solvers of many small NumPy products, whose BLAS worker threads would otherwise keep spinning
    after each call beside torch's (see :mod:`deepfeat.probes.binary_logistic`). The setting is the
    process's, so it is taken in the main thread only: threadpoolctl lets one thread control
    OpenBLAS, and a fit in another thread could neither be sure to set it nor to restore it (two
    overlapping fits in threads left it at one thread for good)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _BLAS:
        from threadpoolctl import ThreadpoolController

        _BLAS.append(ThreadpoolController())
    with _BLAS[0].limit(limits=1, user_api="blas"):
        yield


def prepare_targets(
    y, ignore=None, n_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, bool]:
    """Class codes (n,) or a 0/1 indicator matrix (n, K), the mask of counted entries (multi-label with
    ``ignore`` only, else None), the classes and whether the targets are multi-label; clear errors for
    a single class, a label without positives or negatives (ignored entries excluded), bad shapes,
    missing labels (NaN, None) and continuous numbers. ``n_samples``: the rows of X, which y must
    match. An (n, 1) 0/1 matrix is a one-label indicator matrix (one-vs-rest analyses use it)."""
    if y is None:
        raise DataError(
            "the probe requires y to be passed, but the target y is None: give one class label per row "
            "of X, or an (n_samples, n_labels) 0/1 matrix"
        )
    y = np.asarray(y)
    if y.ndim == 0:
        raise DataError(f"y must hold one label per sample, got the single value {y.item()!r}")
    if n_samples is not None and len(y) != n_samples:
        raise DataError(f"X has {n_samples} samples but y has {len(y)}")
    if y.ndim == 2:
        if not np.isin(y, (0, 1)).all():
            hint = "; for class labels pass a 1-D y (y.ravel())" if y.shape[1] == 1 else ""
            raise DataError(f"multi-label targets must be a 0/1 indicator matrix, got shape {y.shape}{hint}")
        positives = y.sum(axis=0)
        bad = np.flatnonzero((positives == 0) | (positives == len(y)))
        if bad.size:
            raise DataError(
                f"labels {bad.tolist()} are positive for none or all of the training samples; "
                "a one-vs-rest probe needs both"
            )
        mask = None if ignore is None else ~np.asarray(ignore, dtype=bool)
        if mask is not None:
            if mask.shape != y.shape:
                raise DataError(f"ignore must have the shape of the targets {y.shape}, got {mask.shape}")
            counted_pos, counted_neg = (y * mask).sum(0), ((1 - y) * mask).sum(0)
            bad = np.flatnonzero((counted_pos == 0) | (counted_neg == 0))
            if bad.size:
                raise DataError(
                    f"labels {bad.tolist()} have no positive or no negative training sample left once "
                    "the ignored (difficult) entries are excluded; a one-vs-rest probe needs both"
                )
        return y.astype(np.int64), mask, np.arange(y.shape[1]), True
    if y.ndim != 1:
        raise DataError(f"y must be a vector of labels or an indicator matrix, got shape {y.shape}")
    if ignore is not None:
        raise ConfigError("ignore applies only to multi-label (indicator matrix) targets")
    _check_labels(y)
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(
            f"the training data holds a single class ({classes.tolist()[0]!r}); a classifier needs 2 or "
            "more, not one class"
        )
    return codes.astype(np.int64).ravel(), None, classes, False


def _check_labels(y: np.ndarray) -> None:
    """A clear error for missing labels (NaN, None) and for continuous numbers given as class labels."""
    if y.dtype == object:
        missing = np.flatnonzero([v is None or (isinstance(v, float) and v != v) for v in y])
    elif np.issubdtype(y.dtype, np.floating):
        missing = np.flatnonzero(np.isnan(y))
    else:
        return
    if y.dtype == object and not missing.size:
        kinds = {"text" if isinstance(v, str | bytes) else "number" for v in y}
        if len(kinds) > 1:
            raise DataError(
                "y mixes text and numbers as labels (e.g. "
                f"{next(v for v in y if isinstance(v, str | bytes))!r} and "
                f"{next(v for v in y if not isinstance(v, str | bytes))!r}); give labels of one kind"
            )
    if missing.size:
        raise DataError(
            f"y has {missing.size} missing labels (NaN or None; first rows: {missing[:5].tolist()}); "
            "drop those samples or give them a class"
        )
    if np.issubdtype(y.dtype, np.floating):
        fractional = np.flatnonzero(y != np.round(y))
        if fractional.size:
            raise DataError(
                f"y holds continuous numbers (e.g. {float(y[fractional[0]]):g}), and the probes are "
                "classifiers: give class labels (integers or strings), not a regression target"
            )


def one_vs_rest_targets(codes: np.ndarray, n_outputs: int) -> np.ndarray:
    """0/1 targets (n, K) of per-output problems: an indicator matrix as it is, class codes one-hot
    (K = 1: one problem, the second class positive)."""
    if codes.ndim == 2:
        return codes
    if n_outputs == 1:
        return (codes == 1)[:, None].astype(np.int64)
    return np.eye(n_outputs, dtype=np.int64)[codes]
