"""The probes' training objectives in basis coordinates, with hand-written gradients.

Every objective is scikit-learn's, divided by C N (which moves no optimum):

    (1/N) sum_i sum_k w_ik loss_k(z_i . w_k + b_k, y_i) + ||W||^2 / (2 C N)        (b not penalised)

``w_ik`` are entry weights (0 for an ignored multi-label entry; 1/copies for a dropout copy, so the
data term is the mean over the copies, not their sum) and N is the effective number of samples (the
rows divided by the copies). Losses:

- ``multinomial``: softmax cross-entropy over the K classes (one problem);
- ``logistic``: binary cross-entropy per output (K independent problems: one-vs-rest, multi-label,
  or the single output of a two-class problem);
- ``squared_hinge``: max(0, 1 - t f)^2 per output with t = +-1 (K independent problems).

Alongside values and gradients, an evaluation returns per-entry curvature weights ``h`` (n, K): the
diagonal of each loss's second derivative (p(1-p) for the logistic losses, 2 on margin violators for
the squared hinge), from which :meth:`Problem.diagonal` builds a diagonal preconditioner.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from deepfeat.probes.base import one_vs_rest_targets
from deepfeat.probes.basis import gram_in

#: largest curvature weight of each loss (at a zero margin; anywhere active for the squared hinge)
CURVATURE = {"multinomial": 0.25, "logistic": 0.25, "squared_hinge": 2.0}
#: curvature weights are floored at this fraction of the loss's largest one: a step may move a sample
#: to where its loss bends, so a vanishing estimate would make the first trial steps far too long
FLOOR = 1e-2
#: on the CPU, the gradient's product G^T Z (a reduction over the rows) runs 1.7-3.8x faster as
#: Z^T G on a transposed copy of Z when the rows are long and Z does not fit in cache; the copy is
#: kept for problems within TRANSPOSED_BYTES (above it, doubling Z's memory would hurt), of at least
#: TRANSPOSED_DIM dimensions and within TRANSPOSED_OUTPUTS outputs. Measured (2 threads, MKL, ms,
#: G^T Z against Z^T G): 8,000 x 1,280 x 3 float32 6.2 -> 2.9, x 16 outputs 6.9 -> 2.9; 5,000 x
#: 1,280 3.4 -> 2.0; 16,000 x 512 4.4 -> 2.5; float64 8,000 x 1,280 12.4 -> 4.1, 3,060 x 1,280 4.9
#: -> 1.3; but 3,060 x 1,280 float32 equal, slower for short rows (30,000 x 192: 1.7 -> 4.3) and
#: many outputs (3,060 x 1,472 x 102: 7.2 -> 8.8); little gain for one output (8,000 x 1,280: 1.7
#: -> 1.5). The copy costs about 15 evaluations' savings (47 ms at 8,000 x 1,280 float32), so it is
#: made at a problem's TRANSPOSED_AFTER-th evaluation (a float64 polish of a few evaluations does
#: not pay for it). Whole C searches, interleaved in one process: 2 x 8,000 x 1,280 logistic 4.13
#: -> 3.51 s, squared hinge 4.55 -> 4.18 s; 10 x 8,000 x 1,280 multinomial 5.41 -> 4.87 s, squared
#: hinge 13.3 -> 11.8 s; 3,060 rows unchanged; same C and coefficients
TRANSPOSED_BYTES = (20_000_000, 2_000_000_000)
TRANSPOSED_DIM = 512
TRANSPOSED_OUTPUTS = (2, 32)
TRANSPOSED_AFTER = 16
#: per-entry gradients, curvature weights and probabilities below these sizes are set to zero: the
#: logistic and softmax losses underflow towards subnormal numbers on rows separated by large
#: margins (large C; float32 below 1.2e-38), and a matrix product with subnormal entries ran 120x
#: slower (3,060 x 193 Hessian with half its weights subnormal: 211 against 1.8 ms). The limits
#: keep products of two flushed-size factors normal; entries this small change no sum they enter
#: at the precision it is kept in
FLUSH_BELOW = {torch.float32: 1e-30, torch.float64: 1e-290, torch.float16: 1e-4, torch.bfloat16: 1e-30}
#: False keeps the underflowed entries (only to compare against, as the tests do)
FLUSH = True


#: the gradient's reduction G^T Z of CPU problems with at least NUMPY_REDUCTION_ENTRIES entries
#: (n x r) and at most NUMPY_REDUCTION_OUTPUTS outputs goes through NumPy's BLAS where that is at
#: least NUMPY_REDUCTION_GAIN times faster than torch's on this machine (measured once per process,
#: :func:`numpy_reduction_faster`; True / False force it). On an AMD EPYC host torch's MKL ran these
#: skinny reductions 1.5-4x slower than NumPy's OpenBLAS (8,000 x 1,280 x 3 float32: 8.2 against
#: 3.7 ms, either orientation; the row pass alone, Z.sum(0), 2.7 ms). Whole C searches there,
#: interleaved in one process: 2 x 8,000 x 1,280 logistic 1.32-1.52x, squared hinge 1.46-1.71x; but
#: 10 x 8,000 x 1,280 (30 stacked outputs) 0.35-0.39x, where torch's heavier operations between the
#: products ran beside NumPy's BLAS threads: so only for one-output problems and their stacked folds.
#: From 3 million entries: 2 x 3,060 x 1,280 (3.9 million) logistic 1.16x, squared hinge 1.08x
NUMPY_REDUCTION: bool | str = "auto"
NUMPY_REDUCTION_ENTRIES = 3_000_000
NUMPY_REDUCTION_OUTPUTS = 3
NUMPY_REDUCTION_GAIN = 1.2


@functools.cache
def numpy_reduction_faster() -> bool:
    """Whether NumPy computes G^T Z (8,192 x 1,024 float32 rows, 3 outputs) at least
    ``NUMPY_REDUCTION_GAIN`` times faster than torch (the better of G^T Z and Z^T G on a transposed
    copy) on this machine: the fastest of 10 interleaved runs after 3 warm-up rounds (medians of
    7 without warm-up flipped between processes on a 2-core host: ratio 1.17-3.18, the fastest
    1.57-2.02; about 0.5 s)."""
    gen = torch.Generator().manual_seed(0)
    Z = torch.randn(8192, 1024, generator=gen)
    G = torch.randn(8192, 3, generator=gen)
    Zt, Zn = Z.t().contiguous(), Z.numpy()
    runs = {
        "torch": lambda: torch.mm(G.t(), Z),
        "transposed": lambda: torch.mm(Zt, G),
        "numpy": lambda: np.matmul(G.t().numpy(), Zn),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(13):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if round_ >= 3:
                times[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in times.items()}
    return min(best["torch"], best["transposed"]) >= NUMPY_REDUCTION_GAIN * best["numpy"]


def flush_tiny(x: torch.Tensor) -> torch.Tensor:
    """``x`` with entries of magnitude below ``FLUSH_BELOW`` set to zero, in place."""
    if not FLUSH:
        return x
    return x.masked_fill_(x.abs() < FLUSH_BELOW.get(x.dtype, 0.0), 0.0)


@dataclass
class Problem:
    """One training problem: projected features, targets and entry weights, on one device."""

    Z: torch.Tensor  # (n, r) projected (centred, rotated) features
    loss: str  # "multinomial", "logistic" or "squared_hinge"
    T: torch.Tensor  # (n,) class indices (multinomial), else (n, K) targets in {0, 1} / {-1, +1}
    weight: torch.Tensor | None  # (n, K) or (n, 1) entry weights (None: all 1)
    N: float  # effective number of samples
    n_outputs: int  # K (all groups' classes together for a grouped multinomial problem)
    fixed: torch.Tensor | None = None  # (K,) outputs without both targets among counted entries
    groups: int = 1  # multinomial only: independent softmax problems, weight (n, groups) selects rows
    _Z2: torch.Tensor | None = None
    _Zt: torch.Tensor | None = None
    _evaluations: int = 0
    _grams: dict = field(default_factory=dict, repr=False)  # by dtype, from :meth:`gram`
    #: where the Gram matrix in a dtype comes from when another object already holds it (the rows'
    #: block of the whole training set's, or the problem a stacked problem shares its rows with)
    gram_from: Callable[[torch.dtype], torch.Tensor] | None = None
    _copies: dict = field(default_factory=dict, repr=False)  # by dtype, from :meth:`to`
    _augmented: dict = field(default_factory=dict, repr=False)  # by dtype, from :meth:`augmented`

    @property
    def multinomial(self) -> bool:
        return self.loss == "multinomial"

    @property
    def n_blocks(self) -> int:
        """Independent problems: one per group (multinomial, coupled classes) or one per output."""
        return self.groups if self.multinomial else self.n_outputs

    @property
    def n_classes(self) -> int:
        """Classes of one multinomial group (the outputs of a per-output problem)."""
        return self.n_outputs // self.groups if self.multinomial else self.n_outputs

    @property
    def Z2(self) -> torch.Tensor:
        """The squared coordinates in float32, for :meth:`diagonal` (an estimate: float64 would only
        double the pass over them; 2 x 1,200 x 1,280 squared hinge, 37 diagonals per C search)."""
        if self._Z2 is None:
            Z = self.Z.float()
            self._Z2 = Z * Z
        return self._Z2

    def _numpy_reduction(self) -> bool:
        """Whether :meth:`evaluate` takes the gradient's G^T Z through NumPy (``NUMPY_REDUCTION``)."""
        n, r = self.Z.shape
        if self.Z.device.type != "cpu" or n * r < NUMPY_REDUCTION_ENTRIES:
            return False
        if self.Z.dtype not in (torch.float32, torch.float64):  # (NumPy has no bfloat16)
            return False
        if self.n_outputs > NUMPY_REDUCTION_OUTPUTS or NUMPY_REDUCTION is False:
            return False
        return NUMPY_REDUCTION is True or numpy_reduction_faster()

    def transposed(self) -> torch.Tensor | None:
        """A contiguous copy of Z^T where the gradient's product is faster on it (see
        ``TRANSPOSED_BYTES``), made at the ``TRANSPOSED_AFTER``-th call; else None."""
        if self._Zt is None:
            self._evaluations += 1
            n, r = self.Z.shape
            low, high = TRANSPOSED_OUTPUTS
            smallest, largest = TRANSPOSED_BYTES
            if (
                self._evaluations >= TRANSPOSED_AFTER
                and self.Z.device.type == "cpu"
                and smallest <= n * r * self.Z.element_size() <= largest
                and r >= TRANSPOSED_DIM
                and low <= self.n_outputs <= high
            ):
                self._Zt = self.Z.t().contiguous()
        return self._Zt

    def augmented(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """[Z 1] (n, r + 1) in ``dtype`` (default Z's), formed once per problem: the Newton methods'
        Hessians and Hessian products take the intercept's column with the rest (every C of a path)."""
        dtype = self.Z.dtype if dtype is None else dtype
        if dtype not in self._augmented:
            Z = self.Z.to(dtype)
            self._augmented[dtype] = torch.cat([Z, Z.new_ones(len(Z), 1)], 1)
        return self._augmented[dtype]

    def gram(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Z Z^T (n, n) in ``dtype``, computed once per problem (for every C of a path): see
        :func:`gram_in`."""
        if dtype not in self._grams:
            if self.gram_from is not None:
                self._grams[dtype] = self.gram_from(dtype)
            else:
                self._grams[dtype] = gram_in(self.Z, dtype, self._grams)
        return self._grams[dtype]

    def to(self, dtype: torch.dtype) -> Problem:
        """The problem in ``dtype``, converted once (every C of a path polishes in float64)."""
        if dtype == self.Z.dtype:
            return self
        if dtype not in self._copies:
            T = self.T if self.multinomial else self.T.to(dtype)
            w = None if self.weight is None else self.weight.to(dtype)
            self._copies[dtype] = Problem(
                self.Z.to(dtype),
                self.loss,
                T,
                w,
                self.N,
                self.n_outputs,
                self.fixed,
                self.groups,
                _Z2=self.Z2,
            )
        return self._copies[dtype]

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(
        self,
        W: torch.Tensor,
        b: torch.Tensor,
        C: float,
        cols: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
    ):
        """Objective values (float64; one per multinomial group, else one per output in ``cols``),
        gradients (gW like W, gb like b) and curvature weights h (n, k) at coefficients W (k, r), b (k,)
        of the outputs ``cols`` (None: all; for a multinomial problem, ``cols`` are group indices).
        ``logits``: Z W^T + b where the caller has them (one pass over Z less)."""
        if logits is None:
            logits = torch.addmm(b, self.Z, W.t())
        G, h, data = self._loss(logits, cols)
        reg = 1.0 / (C * self.N)
        if self._numpy_reduction():
            GZ = torch.from_numpy(np.matmul(G.t().numpy(), self.Z.numpy()))
            gW = GZ.mul_(1.0 / self.N).add_(W, alpha=reg)
        elif (Zt := self.transposed()) is None:
            gW = torch.addmm(W, G.t(), self.Z, beta=reg, alpha=1.0 / self.N)
        else:
            gW = torch.addmm(W.t(), Zt, G, beta=reg, alpha=1.0 / self.N).t()
        gb = G.sum(0) / self.N
        return self._value(data, W, C), gW, gb, h

    def value_at(self, logits: torch.Tensor, W: torch.Tensor, C: float) -> torch.Tensor:
        """The objective values of :meth:`evaluate` (all outputs) from the logits Z W^T + b."""
        return self._value(self._loss(logits, None)[2], W, C)

    def _loss(self, logits: torch.Tensor, cols: torch.Tensor | None):
        if self.multinomial:
            return self._multinomial(logits, self._weight(cols))
        T = self.T if cols is None else self.T[:, cols]
        return self._binary(logits, T, self._weight(cols))

    def _value(self, data: torch.Tensor, W: torch.Tensor, C: float) -> torch.Tensor:
        penalty = 0.5 / (C * self.N) * W.double().pow(2).sum(1)
        if self.multinomial:
            return data / self.N + penalty.reshape(len(data), -1).sum(1)
        return data / self.N + penalty

    def _weight(self, cols: torch.Tensor | None) -> torch.Tensor | None:
        """The weight columns of the outputs (or multinomial groups) ``cols``; a single column is
        shared by all."""
        w = self.weight
        if w is not None and cols is not None and w.shape[1] > 1:
            w = w[:, cols]
        return w

    def _multinomial(self, logits, weight):
        """Softmax cross-entropy of each group's K classes (logits (n, groups x K), group-major)."""
        n = logits.shape[0]
        L = logits.reshape(n, -1, self.n_classes)
        lse = torch.logsumexp(L, 2, keepdim=True)
        P = flush_tiny(torch.exp(L - lse))
        index = self.T[:, None, None].expand(n, L.shape[1], 1)
        picked = L.gather(2, index)
        nll = (lse - picked).squeeze(2)
        h = P * (1 - P)
        G = P.scatter_add(2, index, -torch.ones_like(picked))
        if weight is not None:
            G = G * weight[:, :, None]
            h = h * weight[:, :, None]
            nll = nll * weight
        return G.reshape(n, -1), h.reshape(n, -1), nll.sum(0, dtype=torch.float64)

    def _binary(self, logits, T, weight):
        if self.loss == "logistic":
            sig = flush_tiny(torch.sigmoid(logits))
            per = F.softplus(logits) - T * logits
            G = sig - T
            h = flush_tiny(sig * (1 - sig))
        else:
            margin = (1 - T * logits).clamp_min(0)
            per = margin * margin
            G = -2 * T * margin
            h = 2.0 * (margin > 0).to(logits.dtype)
        if weight is not None:
            per, G, h = per * weight, G * weight, h * weight
        return G, h, per.sum(0, dtype=torch.float64)

    def diagonal(self, h: torch.Tensor, C: float, cols: torch.Tensor | None = None) -> torch.Tensor:
        """Diagonal curvature estimate (k, r + 1) (intercept last) from the curvature weights h (n, k)
        of the outputs ``cols``: each counted entry's weight floored at ``FLOOR`` times the loss's
        largest, the weights' part floored by the penalty."""
        floor = FLOOR * CURVATURE[self.loss]
        w = self._weight(cols)
        if w is not None and self.multinomial and w.shape[1] > 1:
            w = w.repeat_interleave(self.n_classes, dim=1)  # one weight per group -> its classes
        h = h.clamp_min(floor) if w is None else torch.maximum(h, floor * w)
        data = torch.mm(h.t().to(self.Z2.dtype), self.Z2).to(h.dtype) / self.N + 1.0 / (C * self.N)
        return torch.cat([data, (h.sum(0) / self.N)[:, None]], 1)

    def scores(self, Z: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Decision values of projected rows Z."""
        return torch.addmm(b, Z, W.t())


def make_problem(
    Z: torch.Tensor,
    codes: np.ndarray,
    mask: np.ndarray | None,
    n_outputs: int,
    loss: str,
    multinomial: bool,
    row_weight: float = 1.0,
) -> Problem:
    """Targets in the form each loss needs: indices (softmax), {0, 1} (logistic), {-1, +1} (hinge).

    ``codes``: class codes (n,) or an indicator matrix (n, K); ``mask``: counted entries (n, K) or
    None; ``n_outputs``: K (1 for a two-class problem, whose single output scores the second class);
    ``row_weight``: weight of every row (1/copies with dropout)."""
    device, dtype = Z.device, Z.dtype
    n = Z.shape[0]
    weight = None
    if mask is not None:
        weight = torch.as_tensor(np.asarray(mask, dtype=np.float32), device=device).to(dtype) * row_weight
    elif row_weight != 1.0:
        weight = torch.full((n, 1), float(row_weight), dtype=dtype, device=device)
    if multinomial:
        T = torch.as_tensor(np.asarray(codes, dtype=np.int64), device=device)
        return Problem(Z, "multinomial", T, weight, n * row_weight, n_outputs)
    onehot = one_vs_rest_targets(codes, n_outputs)
    counted = np.ones_like(onehot, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    positives, negatives = (counted & (onehot == 1)).any(0), (counted & (onehot == 0)).any(0)
    fixed = None
    if not (positives & negatives).all():  # e.g. a label without positives in a fold: a constant
        fixed = torch.as_tensor(~(positives & negatives), device=device)
    T = torch.as_tensor(np.asarray(onehot, dtype=np.float32), device=device).to(dtype)
    if loss == "squared_hinge":
        T = 2 * T - 1
    return Problem(Z, loss, T, weight, n * row_weight, n_outputs, fixed)


def stack_folds(base: Problem, trains: list[np.ndarray]) -> Problem:
    """One problem holding a training problem's folds: each fold's outputs (a multinomial group, or
    a copy of every per-output problem) weighted by membership of its training rows, fold-major.

    Fold f's objective is its own problem's times N_f / N (the data term sums over its rows, the
    penalty keeps the common N), which moves no optimum: C means what it means per fold."""
    n, F = base.Z.shape[0], len(trains)
    member = torch.zeros(n, F, dtype=base.Z.dtype, device=base.Z.device)
    for f, train in enumerate(trains):
        member[torch.as_tensor(train, device=base.Z.device), f] = 1.0
    if base.multinomial:
        weight = member if base.weight is None else member * base.weight
        return Problem(
            base.Z, base.loss, base.T, weight, base.N, F * base.n_outputs, None, F, gram_from=base.gram
        )
    K = base.n_outputs
    w = base.Z.new_ones(n, K) if base.weight is None else base.weight.expand(n, K)
    weight = w.repeat(1, F) * member.repeat_interleave(K, dim=1)
    T = base.T.repeat(1, F)
    counted = weight > 0
    positive = T > 0
    both = (counted & positive).any(0) & (counted & ~positive).any(0)
    fixed = None if bool(both.all()) else ~both
    return Problem(base.Z, base.loss, T, weight, base.N, F * K, fixed, gram_from=base.gram)


def initial_point(problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero weights and the intercepts of the intercept-only optimum (class log-priors, target means)."""
    K, r = problem.n_outputs, problem.Z.shape[1]
    like = problem.Z
    W = like.new_zeros(K, r)
    if problem.multinomial:
        n, k = len(problem.T), problem.n_classes
        w = like.new_ones(n, 1) if problem.weight is None else problem.weight
        w = w.expand(n, problem.groups)
        counts = like.new_zeros(k, problem.groups).index_add_(0, problem.T, w)
        b = torch.log(counts.clamp_min(0.5))
        return W, (b - b.mean(0)).t().reshape(-1)
    w = torch.ones_like(problem.T) if problem.weight is None else problem.weight.expand_as(problem.T)
    if problem.loss == "logistic":
        pos = (problem.T * w).sum(0) / w.sum(0).clamp_min(1e-12)
        pos = pos.clamp(1e-4, 1 - 1e-4)
        return W, torch.log(pos / (1 - pos))
    return W, ((problem.T * w).sum(0) / w.sum(0).clamp_min(1e-12)).clamp(-1, 1)
