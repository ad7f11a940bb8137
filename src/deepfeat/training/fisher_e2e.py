"""End-to-end training of a Fisher-vector layer (Wieschollek et al., "Backpropagation Training for
Fisher Vectors within Neural Networks"): the GMM parameters, and optionally a feature transform
tanh(W z + b) in front of them, learn from the gradient a linear SVM on the Fisher vectors sends back.
The layer itself (:class:`~deepfeat.features.fisher.FisherHead` and its parts, the exact start of the
transform) lives in :mod:`deepfeat.features.fisher.layer`, encoding and scoring with the trained heads
in :mod:`deepfeat.training.fisher_heads`, the SVMs and their signal in
:mod:`deepfeat.training.fisher_svm`.

Two readings of the paper's multi-class setting (``heads``)
    ``"per_class"`` (the paper's): its SVM layer is a binary one-vs-rest SVM, and Table 2 reports one run
    per class. Every class c gets its own head (GMM and transform, all starting from the same ones) and
    its own binary SVM; head c learns from class c's signal only, and class c is scored by it.
    ``"shared"``: one head for all classes, trained with the sum over classes of the per-class signals,
    so that one set of Fisher vectors serves every class. This is a deviation from the paper (cheaper:
    one encoding instead of one per class); the results say so where it is used.

Training (the setting of the paper's Table 2)
    1. Fisher vectors of the training images with the initial GMM; one-vs-rest linear SVMs (hinge loss
       by liblinear, or squared hinge) trained to their optimum: per-class AP "before".
    2. Epochs of mini-batch SGD on the GMM parameters (``train=("gmm",)``) and optionally W, b
       (``train=("gmm", "transform")``), the SVMs (theta, b) held fixed within an epoch. The gradient sent
       back into the Fisher vector f_i of image i is, averaged over the batch and summed over the classes
       of the head, ``gradient="paper"``: -y_ic theta_c (y in {-1, +1}), which pushes every image to the
       correct side of the hyperplane (the paper's choice); ``"hinge"``: the true sub-gradient of the SVM
       loss, -y_ic theta_c [y_ic s_ic < 1] (hinge) or -2 y_ic theta_c max(0, 1 - y_ic s_ic) (squared
       hinge), with the constant C left to the learning rate.
    3. After every epoch the Fisher vectors are recomputed and the SVMs re-solved to their optimum
       (block-coordinate descent on (GMM, theta)); the SVM objective 1/2 ||theta||^2 + C sum loss and
       per-class AP are recorded. The last epoch gives AP "after".
    VOC "difficult" labels (``difficult``, an (n, n_classes) mask) count in no loss, signal, objective or
    AP, for training and held-out images alike.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from deepfeat.errors import ConfigError
from deepfeat.features.fisher import (
    DTYPES,
    TRANSFORM_INITS,
    DiagonalGMM,
    FisherHead,
    check_device,
)
from deepfeat.training.fisher_heads import FisherHeads
from deepfeat.training.fisher_svm import (
    GRADIENTS,
    SVM_LOSSES,
    ap_summary,
    check_difficult,
    check_targets,
    fit_ovr_svm,
    svm_objective,
    svm_signal,
)
from deepfeat.validation import check_choice, check_float, check_int

log = logging.getLogger(__name__)

HEADS = ("shared", "per_class")
TRAINABLE = ("gmm", "transform")
#: Descriptors (drawn at random from the training images) a GMM is fitted on when none is given.
GMM_FIT_SAMPLE = 100_000
SHARED_DEVIATION = (
    "one GMM (and transform) shared by all classes, trained with the sum over classes of the per-class "
    "signals; the paper trains a binary one-vs-rest model per class (its Table 2 reports per-class runs)"
)

_SETTINGS = (
    "heads", "gradient", "svm_loss", "C", "epochs", "batch_size", "lr", "momentum", "power", "l2",
    "random_state", "dtype",
)  # fmt: skip

__all__ = ["GRADIENTS", "HEADS", "SVM_LOSSES", "FisherE2E", "svm_objective", "train_fisher_e2e"]


class FisherE2E(FisherHeads):
    """Joint training of Fisher-vector layers' GMMs (and optionally tanh feature transforms) with
    one-vs-rest linear SVMs on multi-label targets; see the module docstring for the procedure.

    Parameters
    ----------
    heads: ``"per_class"`` (one head and binary SVM per class, the paper's reading) or ``"shared"`` (one
        head for all classes, trained with the summed signal: a deviation from the paper).
    train: what the SGD updates: ``("gmm",)`` or ``("gmm", "transform")``.
    gradient: ``"paper"`` (-y theta) or ``"hinge"`` (the SVM loss's true sub-gradient).
    svm_loss, C: the SVMs (``"hinge"`` or ``"squared_hinge"``; scikit-learn's C).
    epochs, batch_size, lr, momentum: the SGD (the paper: batches of 24 images, lr 1e-4, no momentum).
    lr_transform: learning rate of W and b (default: ``lr``). Every descriptor of every image moves with
        W, so the transform usually needs a smaller rate than the GMM.
    power, l2: the Fisher-vector normalisation.
    n_components: GMM components when ``fit`` gets no GMM (then fitted on at most ``GMM_FIT_SAMPLE``
        training descriptors).
    eps: variance floor of eq. (12) (default 1e-3 times the smallest initial variance).
    transform_init, tanh_range: start of the feature transform (see :mod:`deepfeat.features.fisher.layer`).
    random_state: seeds the batch order, the transform's W0 and a GMM fitted here.
    device, dtype: where and in which precision (``"float32"``, ``"float64"``) to train.
    progress: show a progress bar.

    After ``fit``: ``heads_`` (FisherHead per head; ``head_`` when there is one), ``classes_of_head_``
    (the classes each head scores), ``svms_`` ((coef, intercept) per head), ``results_`` (JSON-ready:
    settings, AP and objective before and after, per-epoch history).
    """

    def __init__(
        self,
        *,
        heads: str = "shared",
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
        self.heads = heads
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
        check_choice("heads", self.heads, HEADS)
        train = (self.train,) if isinstance(self.train, str) else tuple(self.train)
        for part in train:
            check_choice("trainable part", part, TRAINABLE)
        if "gmm" not in train:
            raise ConfigError(f"train must be ('gmm',) or ('gmm', 'transform'), got {self.train!r}")
        check_choice("gradient", self.gradient, GRADIENTS)
        check_choice("svm_loss", self.svm_loss, SVM_LOSSES)
        check_float("C", self.C, 0, low_open=True)
        check_float("lr", self.lr, 0, low_open=True)
        if self.lr_transform is not None:
            check_float("lr_transform", self.lr_transform, 0, low_open=True)
        check_float("momentum", self.momentum, 0, 1, high_open=True)
        check_int("epochs", self.epochs, 0)
        check_int("batch_size", self.batch_size, 1)
        check_int("n_components", self.n_components, 1)
        check_float("tanh_range", self.tanh_range, 0, 1, low_open=True, high_open=True)
        check_choice("transform_init", self.transform_init, TRANSFORM_INITS)
        check_choice("dtype", self.dtype, DTYPES)
        self._train = train
        return check_device(self.device), DTYPES[self.dtype]

    # -- data ------------------------------------------------------------------------------------------
    def _evaluate(self, inputs, Y, hard, evaluation) -> dict:
        """Re-solve every head's SVMs on its current Fisher vectors; objective and AP."""
        scores = np.zeros(Y.shape, dtype=np.float64)
        objective = 0.0
        for h, classes in enumerate(self.classes_of_head_):
            F = self._encode_inputs(inputs, h)
            ignore = None if hard is None else hard[:, classes]
            coef, intercept = fit_ovr_svm(
                F, Y[:, classes], loss=self.svm_loss, C=self.C, ignore=ignore, random_state=self.random_state
            )
            self.svms_[h] = (coef, intercept)
            objective += svm_objective(F, Y[:, classes], coef, intercept, self.C, self.svm_loss, ignore)
            scores[:, classes] = F @ coef.T + intercept
        train = ap_summary(Y, scores, hard)
        row = {"objective": objective, "train_ap": train["ap"], "train_map": train["map"]}
        if evaluation is not None:
            eval_inputs, Y_eval, hard_eval = evaluation
            test = ap_summary(Y_eval, self._scores(eval_inputs), hard_eval)
            row.update({"test_ap": test["ap"], "test_map": test["map"], "test_map_voc07": test["map_voc07"]})
        return row

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self, descriptors, Y, gmm=None, *, difficult=None, eval_set: tuple | None = None) -> FisherE2E:
        """Train on descriptor sets of the training images (dense (n, T, D) or a list of (T_i, D)
        arrays, already reduced, e.g. by PCA) and their labels ``Y`` (n, n_classes) 0/1. ``gmm``: the
        starting GMM (fitted on the training descriptors here when None). ``difficult``: (n, n_classes)
        mask of labels left out of every loss, signal and AP. ``eval_set``: (descriptors, Y) or
        (descriptors, Y, difficult) of held-out images, scored before, after and at every epoch."""
        start = time.perf_counter()
        device, dtype = self._validate()
        sets = self._sets(descriptors, "descriptors", device, dtype)
        n = len(sets)
        Y = check_targets(Y, n)
        hard = check_difficult(difficult, Y.shape, "difficult")
        if gmm is None:
            flat = sets.reshape(-1, sets.shape[-1]) if isinstance(sets, torch.Tensor) else torch.cat(sets)
            if len(flat) > GMM_FIT_SAMPLE:
                pick = np.random.default_rng(self.random_state).choice(
                    len(flat), GMM_FIT_SAMPLE, replace=False
                )
                flat = flat[torch.from_numpy(np.sort(pick)).to(flat.device)]
            gmm = DiagonalGMM(self.n_components, random_state=self.random_state, device=str(device)).fit(flat)
        head = self._build_head(sets, gmm, device, dtype)
        n_classes = Y.shape[1]
        per_class = self.heads == "per_class"
        self.classes_of_head_ = [[c] for c in range(n_classes)] if per_class else [list(range(n_classes))]
        self.heads_ = [copy.deepcopy(head) for _ in self.classes_of_head_] if per_class else [head]
        self.svms_ = [None] * len(self.heads_)
        inputs = self._inputs(sets)
        evaluation = None
        if eval_set is not None:
            eval_sets = self._sets(eval_set[0], "eval_set descriptors", device, dtype)
            Y_eval = check_targets(eval_set[1], len(eval_sets), "eval_set Y")
            hard_eval = check_difficult(
                eval_set[2] if len(eval_set) > 2 else None, Y_eval.shape, "eval_set difficult"
            )
            evaluation = (self._inputs(eval_sets), Y_eval, hard_eval)

        before = self._evaluate(inputs, Y, hard, evaluation)
        history = [{"epoch": 0, **before, "seconds": round(time.perf_counter() - start, 3)}]
        optimizers = [self._optimizer(h) for h in self.heads_]
        rng = np.random.default_rng(self.random_state)
        steps_per_epoch = math.ceil(n / self.batch_size)
        bar = tqdm(
            total=self.epochs * steps_per_epoch,
            desc="fisher e2e",
            unit="batch",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        ysign = torch.as_tensor(2 * Y - 1, dtype=dtype, device=device)
        keep = None if hard is None else torch.as_tensor(~hard, device=device)
        for epoch in range(1, self.epochs + 1):
            svms = [tuple(torch.as_tensor(a, dtype=dtype, device=device) for a in svm) for svm in self.svms_]
            order = rng.permutation(n)
            surrogate = 0.0
            for b0 in range(0, n, self.batch_size):
                idx = order[b0 : b0 + self.batch_size]
                x, mask = self._batch(inputs, idx)
                for h, classes in enumerate(self.classes_of_head_):
                    surrogate += self._step(h, optimizers[h], x, mask, idx, classes, ysign, keep, *svms[h])
                bar.update(1)
            row = self._evaluate(inputs, Y, hard, evaluation)
            row["surrogate_loss"] = surrogate / n
            history.append({"epoch": epoch, **row, "seconds": round(time.perf_counter() - start, 3)})
            bar.set_postfix(objective=f"{row['objective']:.4g}", train_map=f"{row['train_map']:.4f}")
        bar.close()
        self.results_ = self._results(n, Y, hard, evaluation, history, time.perf_counter() - start)
        return self

    def _optimizer(self, head: FisherHead) -> torch.optim.Optimizer:
        groups = [{"params": list(head.layer.parameters())}]
        if "transform" in self._train:
            lr_t = self.lr if self.lr_transform is None else self.lr_transform
            groups.append({"params": list(head.transform.parameters()), "lr": float(lr_t)})
        return torch.optim.SGD(groups, lr=float(self.lr), momentum=float(self.momentum))

    def _step(self, h, optimizer, x, mask, idx, classes, ysign, keep, theta, bias) -> float:
        """One SGD step of head ``h`` on a batch with its classes' signal; its surrogate loss times the
        batch size."""
        fv = self.heads_[h](x, mask)
        upstream = self._upstream(fv.detach(), idx, classes, ysign, keep, theta, bias)
        optimizer.zero_grad(set_to_none=True)
        fv.backward(upstream)  # a vector-Jacobian product through the whole head
        optimizer.step()
        return float((upstream * fv.detach()).sum()) * len(idx)

    def _upstream(self, fv, idx, classes, ysign, keep, theta, bias) -> torch.Tensor:
        """dL/df (batch, fisher_dim) sent into the Fisher vectors ``fv`` of images ``idx`` by the SVMs
        (theta, bias) of ``classes``: -sum_c a_ic theta_c averaged over the batch (see
        :func:`~deepfeat.training.fisher_svm.svm_signal`)."""
        a = svm_signal(
            fv,
            ysign[idx][:, classes],
            theta,
            bias,
            gradient=self.gradient,
            loss=self.svm_loss,
            keep=None if keep is None else keep[idx][:, classes],
        )
        return -(a @ theta) / len(idx)

    def _signal(self, fv, ysign, theta, bias, keep=None) -> torch.Tensor:
        """Per-image, per-class weights a_ic of the signal -sum_c a_ic theta_c sent back into f_i."""
        return svm_signal(fv, ysign, theta, bias, gradient=self.gradient, loss=self.svm_loss, keep=keep)

    def _results(self, n, Y, hard, evaluation, history, seconds) -> dict:
        layer = self.heads_[0].layer
        transform = "transform" in self._train
        hard_eval = None if evaluation is None else evaluation[2]
        lr_t = float(self.lr if self.lr_transform is None else self.lr_transform)
        return {
            "method": "fisher_e2e",
            "settings": {
                **{k: getattr(self, k) for k in _SETTINGS},
                "deviation_from_paper": SHARED_DEVIATION if self.heads == "shared" else None,
                "train": list(self._train),
                "lr_transform": lr_t if transform else None,
                "eps": layer.eps,
                "transform_init": self.transform_init if transform else None,
                "tanh_range": self.tanh_range if transform else None,
                "device": str(self.device),
                "svm_refit": "to its optimum after every epoch (theta fixed within an epoch)",
                "difficult": "left out of every loss, signal, objective and AP",
            },
            "data": {
                "n_train": n,
                "n_eval": None if evaluation is None else len(evaluation[0]),
                "n_classes": int(Y.shape[1]),
                "n_heads": len(self.heads_),
                "difficult_train": 0 if hard is None else int(hard.sum()),
                "difficult_eval": 0 if hard_eval is None else int(hard_eval.sum()),
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
    keys = ("objective", "train_ap", "train_map", "test_ap", "test_map", "test_map_voc07")
    return {k: row[k] for k in keys if k in row}


def train_fisher_e2e(
    descriptors, Y, gmm=None, *, difficult=None, eval_set: tuple | None = None, **params
) -> dict:
    """Train as :class:`FisherE2E` (``params`` are its parameters) and return its JSON-ready results."""
    model = FisherE2E(**params)
    return model.fit(descriptors, Y, gmm, difficult=difficult, eval_set=eval_set).results_
