"""End-to-end training of a Fisher-vector layer (Wieschollek et al., "Backpropagation Training for
Fisher Vectors within Neural Networks"): the GMM parameters, and optionally a feature transform
tanh(W z + b) in front of them, learn from the gradient a linear SVM on the Fisher vectors sends back.

Modules
    :class:`FisherVectorLayer` computes eqs. (2)-(4) of descriptor sets (B, T, D), padded sets with a
    mask, from GMM parameters kept unconstrained as in the paper: weights w_k = s(nu_k) / sum_l s(nu_l)
    with s the logistic sigmoid (eq. 11) and variances sigma2_k = eps + exp(zeta_k) (eq. 12, one zeta
    per component and dimension). :class:`FVNormalization` is the signed power and L2 normalisation
    (eqs. 5, 6 and 14) with a finite gradient at 0. :class:`FeatureTransform` is tanh(W z + b).
    Gradients come from autograd (vector-Jacobian products through the sufficient statistics, O(B T K D)
    per batch); no Jacobian is ever formed.

Exact start of the feature transform
    The paper feeds the transform inputs z chosen so that tanh(W z + b) equals the fixed descriptors x
    at the start, with W Xavier-initialised. We do exactly that: W0 is drawn by Xavier (uniform) and
    b0 = 0, and z = W0^-1 (atanh(u) - b0) is computed once in float64 from u, the descriptors mapped
    into (-tanh_range, tanh_range) by a fixed per-dimension affine map fitted on the training
    descriptors. A per-dimension affine map changes no Fisher vector of a diagonal GMM (posteriors and
    (x - mu) / sigma are invariant when the GMM is mapped with it), so the GMM is mapped along and the
    layer starts from exactly the Fisher vectors of the fixed descriptors. But W0^-1 inflates z, and
    with it the gradient of W, by up to the condition number of W0, which for a Xavier draw is large
    (D = 64: a median of about 270 over 20 seeds, once 1.3e4; the constructor warns above 1e3), so two
    other starts are offered: ``"orthogonal"``, a random orthogonal W0, whose entries have exactly the
    Xavier variance 1/D but whose condition number is 1, and ``"identity"``, W0 = I. Test descriptors
    outside the training range are clipped to (-1, 1) before atanh (a warning says how many).

Training (the setting of the paper's Table 2)
    1. Fisher vectors of the training images with the initial GMM; a one-vs-rest linear SVM (hinge
       loss by liblinear, or squared hinge) trained to its optimum: per-class AP "before".
    2. Epochs of mini-batch SGD on the GMM parameters (``train=("gmm",)``) and optionally W, b
       (``train=("gmm", "transform")``), the SVM (theta, b) held fixed within an epoch. The gradient sent
       back into the Fisher vector f_i of image i is, averaged over the batch,
       ``gradient="paper"``: -sum_c y_ic theta_c (y in {-1, +1}), which pushes every image to the
       correct side of every hyperplane (the paper's choice); ``"hinge"``: the true sub-gradient of the
       SVM loss, -sum_c y_ic theta_c [y_ic s_ic < 1] (hinge) or -2 sum_c y_ic theta_c max(0, 1 - y_ic
       s_ic) (squared hinge), with the constant C left to the learning rate.
    3. After every epoch the Fisher vectors are recomputed and the SVM is re-solved to its optimum
       (block-coordinate descent on (GMM, theta)); the SVM objective 1/2 ||theta||^2 + C sum loss and
       per-class AP are recorded. The last epoch gives AP "after".
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from deepfeat.errors import ConfigError, DataError
from deepfeat.features.fisher import (
    CHUNK_ROWS,
    DTYPES,
    TRANSFORM_INITS,
    DiagonalGMM,
    FeatureTransform,
    FisherHead,
    FisherVectorLayer,
    FVNormalization,
    GMMParams,
    as_descriptor_sets,
    as_gmm_params,
    check_device,
    check_finite_sets,
    padded_batches,
)
from deepfeat.metrics import average_precision_per_class
from deepfeat.probes.linear import LinearProbe

log = logging.getLogger(__name__)

GRADIENTS = ("paper", "hinge")
SVM_LOSSES = ("hinge", "squared_hinge")
TRAINABLE = ("gmm", "transform")
#: Descriptors (drawn at random from the training images) a GMM is fitted on when none is given.
GMM_FIT_SAMPLE = 100_000

__all__ = [
    "GRADIENTS",
    "FVNormalization",
    "FeatureTransform",
    "FisherE2E",
    "FisherHead",
    "FisherVectorLayer",
    "svm_objective",
    "train_fisher_e2e",
]


# --- the SVM ----------------------------------------------------------------------------------------


def svm_objective(
    F: np.ndarray, Y: np.ndarray, coef: np.ndarray, intercept: np.ndarray, C: float, loss: str
) -> float:
    """1/2 ||theta||^2 + C sum_i sum_c loss(y_ic (theta_c . f_i + b_c)) of a one-vs-rest SVM."""
    margins = (2 * Y - 1) * (F.astype(np.float64) @ coef.T.astype(np.float64) + intercept)
    slack = np.maximum(0.0, 1.0 - margins)
    data = slack.sum() if loss == "hinge" else np.square(slack).sum()
    return float(0.5 * np.square(coef.astype(np.float64)).sum() + C * data)


def _ap_summary(Y: np.ndarray, scores: np.ndarray) -> dict:
    ap = average_precision_per_class(Y, scores)
    return {
        "ap": [None if np.isnan(a) else round(float(a), 6) for a in ap],
        "map": float(np.nanmean(ap)),
    }


# --- training ---------------------------------------------------------------------------------------


class FisherE2E:
    """Joint training of a Fisher-vector layer's GMM (and optionally a tanh feature transform) with a
    one-vs-rest linear SVM on multi-label targets; see the module docstring for the procedure.

    Parameters
    ----------
    train: what the SGD updates: ``("gmm",)`` or ``("gmm", "transform")``.
    gradient: ``"paper"`` (-y theta) or ``"hinge"`` (the SVM loss's true sub-gradient).
    svm_loss, C: the SVM (``"hinge"`` or ``"squared_hinge"``; scikit-learn's C).
    epochs, batch_size, lr, momentum: the SGD (the paper: batches of 24 images, lr 1e-4, no momentum).
    lr_transform: learning rate of W and b (default: ``lr``). Every descriptor of every image moves with
        W, so the transform usually needs a smaller rate than the GMM.
    power, l2: the Fisher-vector normalisation.
    n_components: GMM components when ``fit`` gets no GMM (then fitted on at most ``GMM_FIT_SAMPLE``
        training descriptors).
    eps: variance floor of eq. (12) (default 1e-3 times the smallest initial variance).
    transform_init, tanh_range: start of the feature transform (see the module docstring).
    random_state: seeds the batch order, the transform's W0 and a GMM fitted here.
    device, dtype: where and in which precision (``"float32"``, ``"float64"``) to train.
    progress: show a progress bar.

    After ``fit``: ``head_`` (FisherHead), ``probe_`` (the last SVM, a LinearProbe), ``results_``
    (JSON-ready dict: settings, AP and objective before and after, per-epoch history).
    """

    def __init__(
        self,
        *,
        train: Sequence[str] = ("gmm",),
        gradient: str = "paper",
        svm_loss: str = "hinge",
        C: float = 1.0,
        epochs: int = 5,
        batch_size: int = 24,
        lr: float = 1e-4,
        lr_transform: float | None = None,
        momentum: float = 0.0,
        power: float | None = 0.5,
        l2: bool = True,
        n_components: int = 32,
        eps: float | None = None,
        transform_init: str = "xavier",
        tanh_range: float = 0.9,
        random_state: int | None = 0,
        device: str = "cpu",
        dtype: str = "float32",
        progress: bool = True,
    ):
        self.train = train
        self.gradient = gradient
        self.svm_loss = svm_loss
        self.C = C
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_transform = lr_transform
        self.momentum = momentum
        self.power = power
        self.l2 = l2
        self.n_components = n_components
        self.eps = eps
        self.transform_init = transform_init
        self.tanh_range = tanh_range
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.progress = progress

    def _validate(self) -> tuple[torch.device, torch.dtype]:
        train = (self.train,) if isinstance(self.train, str) else tuple(self.train)
        if not train or any(t not in TRAINABLE for t in train) or "gmm" not in train:
            raise ConfigError(f"train must be ('gmm',) or ('gmm', 'transform'), got {self.train!r}")
        if self.gradient not in GRADIENTS:
            raise ConfigError(f"unknown gradient {self.gradient!r}; valid: {', '.join(GRADIENTS)}")
        if self.svm_loss not in SVM_LOSSES:
            raise ConfigError(f"unknown svm_loss {self.svm_loss!r}; valid: {', '.join(SVM_LOSSES)}")
        for name in ("C", "lr", "lr_transform"):
            value = getattr(self, name)
            if name == "lr_transform" and value is None:
                continue
            if not (isinstance(value, numbers.Real) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(self.momentum, numbers.Real) and 0 <= self.momentum < 1):
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        for name, minimum in (("epochs", 0), ("batch_size", 1), ("n_components", 1)):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if not (isinstance(self.tanh_range, numbers.Real) and 0 < self.tanh_range < 1):
            raise ConfigError(f"tanh_range must be in (0, 1), got {self.tanh_range!r}")
        if self.transform_init not in TRANSFORM_INITS:
            raise ConfigError(
                f"unknown transform_init {self.transform_init!r}; valid: {', '.join(TRANSFORM_INITS)}"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        self._train = train
        return check_device(self.device), DTYPES[self.dtype]

    # -- data ------------------------------------------------------------------------------------------
    @staticmethod
    def _targets(Y, n: int, name: str = "Y") -> np.ndarray:
        y = np.asarray(Y)
        if y.ndim != 2 or y.shape[0] != n or not np.isin(y, (0, 1)).all():
            raise DataError(
                f"{name} must be an (n_images={n}, n_classes) 0/1 indicator matrix, got {y.shape}"
            )
        return y.astype(np.int64)

    def _sets(self, descriptors, name: str, device, dtype):
        sets = as_descriptor_sets(descriptors, name)
        if isinstance(sets, torch.Tensor):
            sets = sets.to(device=device, dtype=dtype)
        else:
            sets = [s.to(device=device, dtype=dtype) for s in sets]
        check_finite_sets(sets, name)
        return sets

    def _inputs(self, sets):
        with torch.no_grad():
            if isinstance(sets, torch.Tensor):
                return self.head_.inputs(sets)
            return [self.head_.inputs(s) for s in sets]

    def _encode_inputs(self, inputs) -> np.ndarray:
        out = []
        with torch.no_grad():
            for _, x, mask in padded_batches(inputs, CHUNK_ROWS):
                out.append(self.head_(x, mask).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def encode(self, descriptors) -> np.ndarray:
        """Normalised Fisher vectors (n, (2D + 1) K) of raw descriptor sets with the trained head."""
        device, dtype = check_device(self.device), DTYPES[self.dtype]
        return self._encode_inputs(self._inputs(self._sets(descriptors, "descriptors", device, dtype)))

    def decision_function(self, descriptors) -> np.ndarray:
        """SVM scores (n, n_classes) of raw descriptor sets."""
        return self.probe_.decision_function(self.encode(descriptors))

    # -- building --------------------------------------------------------------------------------------
    def _build_head(self, sets, gmm, device, dtype) -> FisherHead:
        params = as_gmm_params(gmm).to("cpu", torch.float64)
        d = sets.shape[-1] if isinstance(sets, torch.Tensor) else sets[0].shape[1]
        if params.dim != d:
            raise DataError(f"descriptors have dimension {d}, the GMM has {params.dim}")
        shift = scale = transform = None
        if "transform" in self._train:
            flat = sets.reshape(-1, d) if isinstance(sets, torch.Tensor) else torch.cat(list(sets))
            lo, hi = flat.min(0).values.double().cpu(), flat.max(0).values.double().cpu()
            shift = (lo + hi) / 2
            scale = ((hi - lo) / 2).clamp_min(1e-12) / self.tanh_range
            # the same per-dimension affine map applied to the GMM leaves every Fisher vector unchanged
            params = GMMParams(
                params.weights, (params.means - shift) / scale, params.variances / scale.square()
            )
            transform = FeatureTransform(d, self.transform_init, self.random_state)
        layer = FisherVectorLayer.from_gmm(params, eps=self.eps, dtype=torch.float64)
        head = FisherHead(layer, FVNormalization(self.power, self.l2), transform, shift, scale)
        return head.to(device=device, dtype=dtype)

    def _fit_svm(self, F: np.ndarray, Y: np.ndarray) -> tuple[LinearProbe, dict]:
        probe = LinearProbe(loss=self.svm_loss, C=float(self.C), random_state=self.random_state)
        probe.fit(F, Y)
        objective = svm_objective(F, Y, probe.coef_, probe.intercept_, float(self.C), self.svm_loss)
        return probe, {"objective": objective}

    def _evaluate(self, inputs, Y, eval_inputs, Y_eval) -> dict:
        F = self._encode_inputs(inputs)
        self.probe_, row = self._fit_svm(F, Y)
        train = _ap_summary(Y, self.probe_.decision_function(F))
        row.update({"train_ap": train["ap"], "train_map": train["map"]})
        if eval_inputs is not None:
            test = _ap_summary(Y_eval, self.probe_.decision_function(self._encode_inputs(eval_inputs)))
            row.update({"test_ap": test["ap"], "test_map": test["map"]})
        return row

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self, descriptors, Y, gmm=None, *, eval_set: tuple | None = None) -> FisherE2E:
        """Train on descriptor sets of the training images (dense (n, T, D) or a list of (T_i, D)
        arrays, already reduced, e.g. by PCA) and their labels ``Y`` (n, n_classes) 0/1. ``gmm``: the
        starting GMM (fitted on the training descriptors here when None). ``eval_set``: (descriptors,
        Y) of held-out images, scored before, after and at every epoch."""
        start = time.perf_counter()
        device, dtype = self._validate()
        sets = self._sets(descriptors, "descriptors", device, dtype)
        n = len(sets)
        Y = self._targets(Y, n)
        if gmm is None:
            flat = sets.reshape(-1, sets.shape[-1]) if isinstance(sets, torch.Tensor) else torch.cat(sets)
            if len(flat) > GMM_FIT_SAMPLE:
                pick = np.random.default_rng(self.random_state).choice(
                    len(flat), GMM_FIT_SAMPLE, replace=False
                )
                flat = flat[torch.from_numpy(np.sort(pick)).to(flat.device)]
            gmm = DiagonalGMM(self.n_components, random_state=self.random_state, device=str(device)).fit(flat)
        self.head_ = self._build_head(sets, gmm, device, dtype)
        inputs = self._inputs(sets)
        eval_inputs = Y_eval = None
        if eval_set is not None:
            eval_sets = self._sets(eval_set[0], "eval_set descriptors", device, dtype)
            Y_eval = self._targets(eval_set[1], len(eval_sets), "eval_set Y")
            eval_inputs = self._inputs(eval_sets)

        before = self._evaluate(inputs, Y, eval_inputs, Y_eval)
        history = [{"epoch": 0, **before, "seconds": round(time.perf_counter() - start, 3)}]
        groups = [{"params": list(self.head_.layer.parameters())}]
        if "transform" in self._train:
            lr_t = self.lr if self.lr_transform is None else self.lr_transform
            groups.append({"params": list(self.head_.transform.parameters()), "lr": float(lr_t)})
        optimizer = torch.optim.SGD(groups, lr=float(self.lr), momentum=float(self.momentum))
        rng = np.random.default_rng(self.random_state)
        steps_per_epoch = math.ceil(n / self.batch_size)
        bar = tqdm(
            total=self.epochs * steps_per_epoch,
            desc="fisher e2e",
            unit="batch",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        Ysign = torch.as_tensor(2 * Y - 1, dtype=dtype, device=device)
        for epoch in range(1, self.epochs + 1):
            theta = torch.as_tensor(self.probe_.coef_, dtype=dtype, device=device)
            bias = torch.as_tensor(self.probe_.intercept_, dtype=dtype, device=device)
            order = rng.permutation(n)
            surrogate = 0.0
            for b0 in range(0, n, self.batch_size):
                idx = order[b0 : b0 + self.batch_size]
                x, mask = self._batch(inputs, idx)
                fv = self.head_(x, mask)
                coef = self._signal(fv.detach(), Ysign[idx], theta, bias)
                upstream = -(coef @ theta) / len(idx)  # dL/df_i, averaged over the batch
                optimizer.zero_grad(set_to_none=True)
                fv.backward(upstream)  # a vector-Jacobian product through the whole head
                optimizer.step()
                surrogate += float((upstream * fv.detach()).sum()) * len(idx)
                bar.update(1)
            row = self._evaluate(inputs, Y, eval_inputs, Y_eval)
            row["surrogate_loss"] = surrogate / n
            history.append({"epoch": epoch, **row, "seconds": round(time.perf_counter() - start, 3)})
            bar.set_postfix(objective=f"{row['objective']:.4g}", train_map=f"{row['train_map']:.4f}")
        bar.close()
        self.results_ = self._results(n, Y, eval_inputs, history, time.perf_counter() - start)
        return self

    def _signal(self, fv, ysign, theta, bias) -> torch.Tensor:
        """Per-image, per-class weights a_ic of the signal -sum_c a_ic theta_c sent back into f_i."""
        if self.gradient == "paper":
            return ysign
        margins = ysign * (fv @ theta.T + bias)
        if self.svm_loss == "hinge":
            return ysign * (margins < 1).to(fv.dtype)
        return 2 * ysign * (1 - margins).clamp_min(0)

    @staticmethod
    def _batch(inputs, idx) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(inputs, torch.Tensor):
            return inputs[torch.as_tensor(idx, device=inputs.device)], None
        group = [inputs[i] for i in idx]
        (_, x, mask) = next(padded_batches(group, max(len(s) for s in group) * len(group)))
        return x, mask

    def _results(self, n, Y, eval_inputs, history, seconds) -> dict:
        layer = self.head_.layer
        return {
            "method": "fisher_e2e",
            "settings": {
                "train": list(self._train),
                "gradient": self.gradient,
                "svm_loss": self.svm_loss,
                "C": float(self.C),
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "lr": float(self.lr),
                "lr_transform": (
                    float(self.lr if self.lr_transform is None else self.lr_transform)
                    if "transform" in self._train
                    else None
                ),
                "momentum": float(self.momentum),
                "power": self.power,
                "l2": self.l2,
                "eps": layer.eps,
                "transform_init": self.transform_init if "transform" in self._train else None,
                "tanh_range": self.tanh_range if "transform" in self._train else None,
                "random_state": self.random_state,
                "device": str(self.device),
                "dtype": self.dtype,
                "svm_refit": "to its optimum after every epoch (theta fixed within an epoch)",
            },
            "data": {
                "n_train": n,
                "n_eval": None if eval_inputs is None else len(eval_inputs),
                "n_classes": int(Y.shape[1]),
                "descriptor_dim": layer.dim,
                "n_components": layer.n_components,
                "fisher_dim": layer.out_dim,
            },
            "before": _summary(history[0]),
            "after": _summary(history[-1]),
            "history": history,
            "seconds": round(seconds, 3),
        }


def _summary(row: dict) -> dict:
    keys = ("objective", "train_ap", "train_map", "test_ap", "test_map")
    return {k: row[k] for k in keys if k in row}


def train_fisher_e2e(descriptors, Y, gmm=None, *, eval_set: tuple | None = None, **params) -> dict:
    """Train as :class:`FisherE2E` (``params`` are its parameters) and return its JSON-ready results."""
    return FisherE2E(**params).fit(descriptors, Y, gmm, eval_set=eval_set).results_
