"""Linear probes on fixed features: L2-regularised logistic regression and linear SVMs.

Objective (scikit-learn's parametrisation, so C grids mean the same thing):

    C * sum_i loss(W x_i + b, y_i) + 1/2 ||W||^2          (the intercept b is not penalised)

with ``loss`` the multinomial cross-entropy (``logistic``, ``multi_class="multinomial"``), the binary
cross-entropy per class (``logistic``, one-vs-rest), the squared hinge per class (``squared_hinge``,
one-vs-rest, as LinearSVC) or the hinge (``hinge``; solved exactly by liblinear through
scikit-learn, since the hinge is not differentiable). Two classes make one binary problem, as in
scikit-learn: one weight vector, and ``decision_function`` returns one score per sample (that of
``classes_[1]``). Multi-label targets (an indicator matrix) are always one-vs-rest, as VOC
classification is scored; entries marked ``ignore`` (VOC "difficult") do not enter the loss of their
class. ``sample_weight`` and ``class_weight`` weight the loss as in scikit-learn (see
:mod:`deepfeat.probes.weights`).

The smooth losses are minimised in torch (on ``device``) by a batched L-BFGS in a centred, row-space,
curvature-scaled basis (exact reparametrisations, see :mod:`deepfeat.probes.solver`; small
problems by Newton methods: exact Hessians for few per-output problems, Newton-CG for the squared
hinge and the softmax), except small two-class logistic problems on the CPU (at most 256
dimensions and 250,000 entries: 1,295 rows at d = 192), solved in NumPy
(:mod:`deepfeat.probes.binary_logistic`). ``C="cv"`` picks C from ``Cs`` by
stratified k-fold cross-validation on the training data only (see :mod:`deepfeat.probes.selection`),
every fold walking the C path from its previous solution, solved to ``cv_tol``; small searches
solve the folds together as one problem.
DeCAF's dropout on features (``dropout``, ``dropout_copies``): see :mod:`deepfeat.probes.dropout`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from functools import partial

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning

from deepfeat.errors import ConfigError
from deepfeat.probes.base import (
    DEFAULT_CS,
    check_C,
    check_cv,
    check_feature_names,
    check_features,
    check_products,
    check_scoring,
    one_blas_thread,
    prepare_targets,
    resolve_device,
    tensor_of,
    thread_budget,
    unit_rows,
)
from deepfeat.probes.basis import Basis, FittedPath, PreparedFeatures
from deepfeat.probes.binary_logistic import BinaryLogistic, applies
from deepfeat.probes.dropout import dropout_copies
from deepfeat.probes.exact import DUAL_ROWS, DUAL_ROWS_FLOAT32
from deepfeat.probes.hinge import fit_hinge, iteration_limits
from deepfeat.probes.objectives import make_problem, stack_folds
from deepfeat.probes.predictions import LinearPredictions
from deepfeat.probes.selection import select_C
from deepfeat.probes.solver import solve, solve_path, stacks_folds
from deepfeat.probes.weights import (
    check_class_weight,
    check_sample_weight,
    entry_weights,
)
from deepfeat.validation import check_bool, check_choice, check_float, check_int

LOSSES = ("logistic", "squared_hinge", "hinge")
MULTI_CLASS = ("multinomial", "ovr")


class LinearProbe(LinearPredictions, ClassifierMixin, BaseEstimator):
    """Linear classifier on fixed features, multi-class or multi-label, C by cross-validation.

    Parameters
    ----------
    loss: ``"logistic"``, ``"squared_hinge"`` (linear SVM, LinearSVC's default) or ``"hinge"``.
    C: inverse regularisation strength, or ``"cv"`` to choose it from ``Cs`` by cross-validation.
    Cs: the grid searched when ``C="cv"``.
    cv: number of stratified folds for the search (reduced when a class has fewer samples; with fewer
        than 2 samples in some class, ``fallback_C`` is used), a scikit-learn splitter (split on the
        labels) or a list of (train, validation) index pairs.
    scoring: criterion of the search: ``"accuracy"``, ``"mean_class_accuracy"`` or ``"map"``
        (default: accuracy for single-label, mAP for multi-label targets).
    multi_class: ``"multinomial"`` (softmax) or ``"ovr"`` for the logistic loss; SVMs are one-vs-rest.
    normalize: L2-normalise every feature vector first.
    dropout, dropout_copies: DeCAF's dropout on features (see the module docstring).
    max_iter, tol: iteration limit per C and tolerance on the curvature-scaled gradient (None: 300 and
        1e-5); for ``loss="hinge"`` liblinear's epoch limit and stopping tolerance (None: 5000 and 1e-4).
    cv_tol: that tolerance for the fits made while choosing C (None: ``tol``); validation scores need
        less precision than the final fit, which is solved to ``tol`` and polished in float64.
    path_patience: stop walking up the C grid after this many Cs without a better validation score
        (None: evaluate every C).
    fallback_C: C used when cross-validation is impossible.
    class_weight: None, ``"balanced"`` or {label: weight}: multiplies each sample's loss by its class's
        weight (single-label targets; see :mod:`deepfeat.probes.weights`).
    device: ``"cpu"``, ``"cuda"`` or a :class:`torch.device` for the smooth losses (the hinge loss
        always runs on the CPU, in liblinear).
    random_state: seed of the folds and the dropout masks.
    """

    def __init__(
        self,
        loss: str = "logistic",
        C: float | str = "cv",
        Cs: Sequence[float] = DEFAULT_CS,
        cv: int | object = 3,
        scoring: str | None = None,
        multi_class: str = "multinomial",
        normalize: bool = False,
        dropout: float = 0.0,
        dropout_copies: int = 4,
        max_iter: int | None = None,
        tol: float | None = None,
        cv_tol: float | None = 1e-4,
        path_patience: int | None = None,
        fallback_C: float = 1.0,
        class_weight: str | dict | None = None,
        device: str | torch.device = "cpu",
        random_state: int | None = 0,
    ):
        self.loss = loss
        self.C = C
        self.Cs = Cs
        self.cv = cv
        self.scoring = scoring
        self.multi_class = multi_class
        self.normalize = normalize
        self.dropout = dropout
        self.dropout_copies = dropout_copies
        self.max_iter = max_iter
        self.tol = tol
        self.cv_tol = cv_tol
        self.path_patience = path_patience
        self.fallback_C = fallback_C
        self.class_weight = class_weight
        self.device = device
        self.random_state = random_state

    def _validate_params(self) -> None:
        check_choice("loss", self.loss, LOSSES)
        check_choice("multi_class", self.multi_class, MULTI_CLASS)
        check_bool("normalize", self.normalize)
        check_C(self.C, self.Cs)
        check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        if self.dropout > 0 and self.loss == "hinge":
            raise ConfigError(
                "loss='hinge' (liblinear) does not train on dropout copies; use loss='squared_hinge' "
                "with dropout, or dropout=0"
            )
        check_int("dropout_copies", self.dropout_copies, minimum=1)
        if self.path_patience is not None:
            check_int("path_patience", self.path_patience, minimum=1)
        check_cv(self.cv)
        check_scoring(self.scoring)
        if self.max_iter is not None:
            check_int("max_iter", self.max_iter, minimum=1)
        if self.tol is not None:
            check_float("tol", self.tol, 0.0, low_open=True)
        if self.cv_tol is not None:
            check_float("cv_tol", self.cv_tol, 0.0, low_open=True)
        check_C(self.fallback_C, ())
        check_class_weight(self.class_weight)
        resolve_device(self.device)

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        ignore: ArrayLike | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> LinearProbe:
        """Fit on features ``X`` (n, d) and labels ``y`` (n,) or an indicator matrix (n, K).

        ``ignore`` (multi-label only): (n, K) mask of entries left out of their class's loss;
        ``sample_weight``: (n,) non-negative weights of the samples' losses (and of the C search's
        validation scores).
        """
        self._validate_params()
        check_feature_names(self, X, reset=True)
        X = check_features(X)
        codes, mask, self.classes_, self.multilabel_ = prepare_targets(y, ignore, n_samples=len(X))
        if self.loss == "hinge" and mask is not None:
            raise ConfigError("loss='hinge' does not support ignore masks; use 'squared_hinge'")
        sample_weight = check_sample_weight(sample_weight, len(X))
        weights = entry_weights(codes, mask, self.classes_, self.class_weight, sample_weight)
        K = len(self.classes_)
        # inference mode: no autograd bookkeeping on the solvers' thousands of small operations
        # (interleaved whole fits, 2 threads, medians of 5, logistic / squared hinge: 2 x 300 x 192
        # 1.16x / 1.08x, 2 x 3,060 x 192 1.08x / 1.19x, 10 x 1,200 x 192 1.07x / 1.09x, 102 x 300 x
        # 192 1.15x / 1.07x, 102 x 3,060 x 192 1.08x / 1.12x (medians of 3)); the caller's mode is
        # restored on exit and the coefficients leave as NumPy arrays
        work = len(X) * min(X.shape) * (K if self.multilabel_ or K > 2 else 1)
        device = resolve_device(self.device).type
        numpy = applies(self.loss, K, self.multilabel_, self.dropout, device, X.shape)  # one BLAS thread
        with thread_budget(work), torch.inference_mode(), one_blas_thread() if numpy else nullcontext():
            prepared = self.prepare_path(X, codes, weights)
            fold_models = None
            if isinstance(self.C, str):
                self.C_, self.cv_results_, fold_models = select_C(
                    self, prepared, codes, weights, sample_weight
                )
            else:
                self.C_, self.cv_results_ = float(self.C), None
            if isinstance(prepared, BinaryLogistic):  # NumPy, from the search's own fits
                fitted = prepared.final_fit(self.C_, fold_models, *self._limits()[::-1])
                coef, intercept = prepared.coefficients(fitted)
            else:
                init = None
                if fold_models and prepared.basis is not None and self.loss != "hinge":
                    init = (
                        torch.stack([m.W for m in fold_models]).mean(0),
                        torch.stack([m.b for m in fold_models]).mean(0),
                    )
                every = np.arange(len(X))
                fitted = self._fit_rows(prepared, every, codes, weights, self.C_, init, final=True)
                coef, intercept = (v.cpu().numpy() for v in self._coefficients(fitted))
        if not fitted.converged:
            self._warn_unconverged(fitted)
        if self._multinomial():  # softmax is unchanged by a common shift: zero-sum, as scikit-learn's
            intercept = intercept - intercept.mean()
        self.coef_ = coef.astype(np.float32)
        self.intercept_ = intercept.astype(np.float32)
        self.n_iter_ = fitted.n_iter
        self.n_features_in_ = X.shape[1]
        return self

    # -- the C-path protocol (deepfeat.probes.selection.PathProbe) ----------------------------
    def prepare_path(self, X: np.ndarray, codes: np.ndarray, weights: np.ndarray | None) -> PreparedFeatures:
        """Normalised features on the device and, without dropout, one basis for every fold."""
        device = resolve_device(self.device)
        X = self._normalized(np.asarray(X, dtype=np.float32))
        check_products(X)
        if applies(self.loss, len(self.classes_), self.multilabel_, self.dropout, device.type, X.shape):
            return BinaryLogistic(X, codes, weights)
        Xt = tensor_of(X, device)
        if self.loss == "hinge" or self.dropout > 0:
            return PreparedFeatures(Xt, None, None)
        # one output (two classes): Newton steps, indifferent to correlated coordinates, so the
        # rows' Cholesky factor instead of their eigendecomposition where n < d (measurements in
        # benchmarks/PROBES.md, run (j)); more outputs' first-order solvers need the latter
        factor = "cholesky" if self._n_outputs() == 1 and not self._multinomial() else "eigh"
        basis = Basis.of(Xt, factor=factor)
        # n < d: the basis's Gram matrix is Z Z^T, which only the squared hinge's dual steps use
        gram, basis.gram = basis.gram, None
        # n < d: the coordinates come with the factorisation, no product with a (d, n) basis
        # (interleaved C searches: 2 x 1,200 x 1,280 svm 0.70 -> 0.59 s, logistic 0.78 -> 0.66 s)
        return PreparedFeatures(
            Xt, basis, basis.own_coordinates(Xt), gram if self.loss == "squared_hinge" else None
        )

    def fit_path(
        self,
        prepared: PreparedFeatures,
        rows: np.ndarray,
        codes: np.ndarray,
        weights: np.ndarray | None,
        Cs: Sequence[float],
    ) -> Iterator[FittedPath]:
        """Fits on the training rows ``rows`` for each C of the increasing ``Cs``, warm-started
        (``weights``: the rows' entry weights or None)."""
        if isinstance(prepared, BinaryLogistic):
            for fits in prepared.folds_path([rows], Cs, *self._limits(search=True)[::-1], whole=False):
                yield fits[0]
            return
        if self.loss == "hinge":
            X = prepared.X[torch.as_tensor(rows, device=prepared.X.device)].cpu().numpy()
            for C in Cs:
                yield self._fit_hinge(X, codes, C, weights)
            return
        problem, basis = self._problem(prepared, rows, codes, weights)
        max_iter, tol = self._limits(search=True)
        for C, sol in zip(Cs, solve_path(problem, list(Cs), max_iter=max_iter, tol=tol)):
            yield FittedPath(C, sol.W, sol.b, basis, sol.n_iter)

    def fit_folds_path(
        self, prepared: PreparedFeatures, folds, codes, weights, Cs
    ) -> Iterator[list[FittedPath]] | None:
        """For small problems with one basis for every fold: the folds' fits for each C of the
        increasing ``Cs`` (a generator of one list per C), all folds solved as one problem whose
        groups of outputs see their fold's training rows only; None where :meth:`fit_path` per fold
        is the better way (large problems, the hinge, dropout)."""
        if isinstance(prepared, BinaryLogistic):
            return prepared.folds_path([train for train, _ in folds], Cs, *self._limits(search=True)[::-1])
        if self.loss == "hinge" or prepared.basis is None:
            return None
        loss = "multinomial" if self._multinomial() else self.loss
        if not stacks_folds(loss, self._n_outputs(), *prepared.Z.shape, len(folds)):
            return None
        return self._folds_path(prepared, folds, codes, weights, Cs)

    def _folds_path(self, prepared, folds, codes, weights, Cs) -> Iterator[list[FittedPath]]:
        base, basis = self._problem(prepared, np.arange(len(codes)), codes, weights)
        problem = stack_folds(base, [train for train, _ in folds])
        max_iter, tol = self._limits(search=True)
        F, K = len(folds), base.n_outputs
        for C, sol in zip(Cs, solve_path(problem, list(Cs), max_iter=max_iter, tol=tol)):
            W, b = sol.W.reshape(F, K, -1), sol.b.reshape(F, K)
            yield [FittedPath(C, W[f], b[f], basis, sol.n_iter) for f in range(F)]

    def decision_on(self, prepared: PreparedFeatures, model: FittedPath, rows: np.ndarray) -> np.ndarray:
        """Decision values of the prepared rows ``rows`` under a fit of :meth:`fit_path`."""
        if isinstance(prepared, BinaryLogistic):
            return prepared.decision(model, rows)
        idx = torch.as_tensor(rows, device=prepared.X.device)
        if model.basis is not None and model.basis is prepared.basis:
            scores = torch.addmm(model.b, prepared.Z[idx], model.W.t())
        else:
            coef, intercept = self._coefficients(model)
            X = prepared.X[idx] * (1.0 - self.dropout) if self.dropout > 0 else prepared.X[idx]
            scores = torch.addmm(intercept.to(X.dtype), X, coef.to(X.dtype).t())
        scores = scores.cpu().numpy()
        return scores[:, 0] if scores.shape[1] == 1 and not self.multilabel_ else scores

    def _normalized(self, X: np.ndarray) -> np.ndarray:
        return unit_rows(X) if self.normalize else X

    def _limits(self, search: bool = False) -> tuple[int, float]:  # (max_iter, tol) of a fit
        max_iter, tol = iteration_limits(self.loss, self.max_iter, self.tol)
        return max_iter, tol if not search or self.cv_tol is None else self.cv_tol

    def _n_outputs(self) -> int:
        K = len(self.classes_)
        return K if self.multilabel_ or K > 2 else 1

    def _multinomial(self) -> bool:
        """Whether the fit is one softmax problem (logistic, multinomial, single-label, K > 2)."""
        return (
            self.loss == "logistic"
            and self.multi_class == "multinomial"
            and not self.multilabel_
            and len(self.classes_) > 2
        )

    def _problem(self, prepared: PreparedFeatures, rows, codes, weights):
        """The training problem on ``rows`` and the basis its coordinates are in."""
        idx = torch.as_tensor(rows, device=prepared.X.device)
        if prepared.basis is not None:
            Z, basis, row_weight = prepared.Z[idx], prepared.basis, 1.0
        else:
            X, codes, weights, row_weight = dropout_copies(
                prepared.X[idx], codes, weights, self.dropout, self.dropout_copies, self.random_state
            )
            basis = Basis.of(X)
            Z = basis.own_coordinates(X)
        K = self._n_outputs()
        multinomial = self._multinomial()
        loss = "multinomial" if multinomial else self.loss
        problem = make_problem(Z, codes, weights, K, loss, multinomial, row_weight)
        # any problem small enough for dual steps takes its Gram matrix as a block of the whole
        # set's (one product for all folds, also where the set itself is larger: 102 classes x
        # 3,060 x 1,280 SVM 19.8 -> 11.2 s, 10 x 3,060 x 1,280 7.8 -> 7.0 s, 10 x 3,060 x 192 3.0
        # -> 3.3 s, interleaved, 2 threads)
        if prepared.basis is not None and len(idx) <= max(DUAL_ROWS, DUAL_ROWS_FLOAT32):
            problem.gram_from = partial(prepared.gram_of, idx)
        return problem, basis

    def _fit_rows(self, prepared, rows, codes, weights, C: float, init, final: bool) -> FittedPath:
        if self.loss == "hinge":
            X = prepared.X[torch.as_tensor(rows, device=prepared.X.device)].cpu().numpy()
            return self._fit_hinge(X, codes, C, weights, warn=final)
        problem, basis = self._problem(prepared, rows, codes, weights)
        max_iter, tol = self._limits()
        sol = solve(problem, C, max_iter=max_iter, tol=tol, init=init, polish=final)
        return FittedPath(C, sol.W, sol.b, basis, sol.n_iter, sol.grad_max, sol.converged or not final)

    def _warn_unconverged(self, fitted) -> None:
        warnings.warn(
            f"LinearProbe(loss={self.loss!r}, C={fitted.C:g}) stopped after {fitted.n_iter} iterations with "
            f"scaled gradient {fitted.grad_max:.2g} > tol={self._limits()[1]:g}; raise max_iter or tol",
            ConvergenceWarning,
            stacklevel=3,
        )

    def _coefficients(self, fitted: FittedPath) -> tuple[torch.Tensor, torch.Tensor]:
        if fitted.basis is None:
            return fitted.W, fitted.b
        return fitted.basis.to_coef(fitted.W, fitted.b)

    def _fit_hinge(self, X: np.ndarray, codes: np.ndarray, C: float, weights=None, warn=False) -> FittedPath:
        """One-vs-rest hinge-loss SVMs by liblinear (see :func:`deepfeat.probes.hinge.fit_hinge`)."""
        max_iter, tol = self._limits()
        coef, intercept, n_iter = fit_hinge(
            X, codes, self._n_outputs(), C, weights, max_iter=max_iter, tol=tol, warn=warn
        )
        return FittedPath(C, torch.from_numpy(coef), torch.from_numpy(intercept), None, n_iter)
