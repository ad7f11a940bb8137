"""The training features' basis: centring and an orthonormal basis of their row space
(:class:`Basis`, see :mod:`deepfeat.probes.solver` for why the probes solve in it), and the training
features prepared once for a C search with their basis and coordinates (:class:`PreparedFeatures`),
and the Gram matrices both need (:func:`gram_matrix`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from deepfeat.probes.base import dense_threads
from deepfeat.validation import check_choice

#: rows from which :func:`gram_matrix` multiplies blocks of its lower triangle only
GRAM_BLOCK_ROWS = 512
#: ... in this many blocks of rows
GRAM_BLOCKS = 4


@dataclass
class Basis:
    """Centring vector and orthonormal basis (d, r) of the training features' row space."""

    mean: torch.Tensor  # (d,)
    #: (d, r), orthonormal columns; with fewer rows than dimensions formed only where asked for
    #: (see ``rows``)
    _B: torch.Tensor | None
    #: the centred rows' Gram matrix (n, n) in float64 where it was factored (n < d): their
    #: coordinates' Z Z^T (up to the coordinates' rounding and directions of negligible variance
    #: dropped), which the squared hinge's dual steps need
    gram: torch.Tensor | None = None
    #: the coordinates (n, r) of the rows the basis was made from, in their dtype, where they come
    #: with the factorisation (n < d); else None (:meth:`project` them)
    coordinates: torch.Tensor | None = None
    #: n < d: (X, m, L, M): the rows X (not copied), their float64 mean m, and the basis as
    #: combinations of the centred rows D = X - m, B = D^T L^-T over the first n - 1 rows
    #: (the Cholesky form, L L^T their Gram matrix; M None) or B = D^T M (M = A diag(mu)^-1/2 from
    #: the Gram matrix's eigenpairs; L None). Neither the rows' coordinates nor :meth:`to_coef`
    #: need B itself.
    rows: tuple | None = None

    @classmethod
    def of(cls, X: torch.Tensor, rel_tol: float = 1e-7, factor: str = "eigh") -> Basis:
        """Basis of the centred rows of X (directions with negligible variance dropped).

        ``factor`` (fewer rows than dimensions only): ``"eigh"``, the principal directions of the
        rows (decorrelated coordinates, on which first-order solvers' diagonal scaling relies), or
        ``"cholesky"``, from the Cholesky factor of the rows' Gram matrix (correlated coordinates,
        which exact Newton and dual steps do not mind; a fraction of the eigendecomposition's time),
        with the eigendecomposition where the rows are (nearly) dependent. With fewer rows than
        dimensions the rows' coordinates come from the factorisation itself (:attr:`coordinates`),
        without a product over the d dimensions."""
        check_choice("factor", factor, ("eigh", "cholesky"))
        n, d = X.shape
        with dense_threads(n * d * min(n, d)):
            return cls._of(X, rel_tol, factor)

    @classmethod
    def _of(cls, X: torch.Tensor, rel_tol: float, factor: str) -> Basis:
        n, d = X.shape
        if d <= n:
            mean = X.mean(0)
            Xc = X - mean
            # in the features' precision: eigenvectors are orthonormal to it whatever their
            # eigenvalue (float32: 2-3x faster than float64 at d = 1,280); a direction of round-off
            # variance kept by the threshold only adds an unknown the penalty holds at 0
            lam, B = torch.linalg.eigh(torch.mm(Xc.t(), Xc))
            B = B[:, lam > rel_tol * lam.max().clamp_min(1e-30)]
            return cls(mean, B.to(X.dtype).contiguous())
        # float64 throughout: B's columns are rows combined with weights of up to 1 / sqrt(smallest
        # eigenvalue), and a large C leans on the small-variance directions. A float32 Gram matrix
        # left B^T B up to 0.12 from I (eigenvalues down to 1e-7 of the largest; float64: 2e-10),
        # a float32 eigendecomposition the squared hinge's objective at C = 100 1.3e-5 above the
        # optimum (2 x 1,200 x 1,280). Centred in float64 too: the rows then sum to zero to its
        # precision, which the Cholesky form's last row relies on (float32 centring left sums of
        # 6e-5 of the Gram matrix's scale on rows with a large common offset)
        mean64 = X.double().mean(0)
        mean, Xc64 = mean64.to(X.dtype), _centred64(X, mean64)
        G = gram_matrix(Xc64)
        L = _cholesky_factor(G, rel_tol) if factor == "cholesky" else None
        if L is not None:
            # row i < n - 1 of D has coordinates D_i D^T L^-T = L_i; the centred rows sum to zero,
            # so the last one's are minus the others' sum
            Z = torch.cat([L, -L.sum(0, keepdim=True)])
            return cls(mean, None, gram=G, coordinates=Z.to(X.dtype), rows=(X, mean64, L, None))
        mu, A = torch.linalg.eigh(G)
        keep = mu > rel_tol * mu.max().clamp_min(1e-30)
        root = torch.sqrt(mu[keep])
        # D B = G A diag(mu)^-1/2 = A diag(mu)^1/2 on the kept eigenpairs
        Z = A[:, keep] * root
        return cls(mean, None, gram=G, coordinates=Z.to(X.dtype), rows=(X, mean64, None, A[:, keep] / root))

    @property
    def B(self) -> torch.Tensor:
        """The orthonormal basis (d, r)."""
        if self._B is None:
            X, mean64, L, M = self.rows
            if L is not None:
                B = torch.linalg.solve_triangular(L, _centred64(X[:-1], mean64), upper=False).t()
            else:
                B = torch.mm(_centred64(X, mean64).t(), M)
            self._B = B.to(self.mean.dtype).contiguous()
        return self._B

    def project(self, X: torch.Tensor) -> torch.Tensor:
        """Centred rows expressed in the basis, (n, r)."""
        B = self.B
        with dense_threads(X.shape[0] * B.shape[0] * B.shape[1]):
            return torch.mm(X - self.mean, B)

    def own_coordinates(self, X: torch.Tensor) -> torch.Tensor:
        """The coordinates (n, r) of X, the rows the basis was made from: the factorisation's where
        it gave them (handed over, the basis keeps no reference), else :meth:`project`."""
        Z = self.coordinates
        if Z is None or self.rows is None or self.rows[0] is not X:
            return self.project(X)
        self.coordinates = None
        return Z

    def to_coef(self, W: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Coefficients (K, d) and intercepts (K,) on the original, uncentred features."""
        if self._B is None:  # W B^T as combinations of the centred rows: K right-hand sides, not d
            X, mean64, L, M = self.rows
            if L is not None:  # W L^-1 D
                U = torch.linalg.solve_triangular(L.mH, W.t().to(L.dtype), upper=True).t()
                coef = torch.mm(U, _centred64(X[:-1], mean64))
            else:  # W M^T D
                coef = torch.mm(torch.mm(W.to(M.dtype), M.t()), _centred64(X, mean64))
            coef = coef.to(self.mean.dtype)
        else:
            coef = torch.mm(W.to(self._B.dtype), self._B.t())
        return coef, b.to(coef.dtype) - coef @ self.mean


def _centred64(X: torch.Tensor, mean64: torch.Tensor) -> torch.Tensor:
    """X - mean64 in float64, one copy of X (centred in place)."""
    Xc = X.to(torch.float64, copy=True)
    return Xc.sub_(mean64)


def gram_matrix(X: torch.Tensor) -> torch.Tensor:
    """X X^T (n, n), exactly symmetric: from ``GRAM_BLOCKS`` blocks of rows, each multiplied with
    the rows up to its end and mirrored, 5/8 of the full product's multiply-adds (interleaved,
    float64, 2 threads: 1.3x at 1,200-3,000 x 1,280, 1.4x at 600 x 4,096, 1.6x at 1,000 x 25,088;
    unchanged at 300 x 1,280, which takes the plain product)."""
    n = len(X)
    with dense_threads(n * n * X.shape[1]):
        return _gram_matrix(X)


def _gram_matrix(X: torch.Tensor) -> torch.Tensor:
    n = len(X)
    if n < GRAM_BLOCK_ROWS:
        return _mirrored(torch.mm(X, X.t()))
    G = X.new_empty(n, n)
    edges = [round(i * n / GRAM_BLOCKS) for i in range(GRAM_BLOCKS + 1)]
    for a0, a1 in itertools.pairwise(edges):
        part = torch.mm(X[a0:a1], X[:a1].t())
        part[:, a0:a1] = _mirrored(part[:, a0:a1])
        G[a0:a1, :a1] = part
        G[:a0, a0:a1] = part[:, :a0].t()
    return G


def gram_in(Z: torch.Tensor, dtype: torch.dtype, grams: dict) -> torch.Tensor:
    """Z Z^T in ``dtype`` given the ``grams`` (by dtype) at hand: a float64 one converted where there
    is one, else the product in ``dtype`` (float32 where the squared hinge's C search needs no more:
    its dual steps had converted the float64 product to float32; 2 x 3,060 x 1,280: 162 against 245
    ms)."""
    if torch.float64 in grams:
        return grams[torch.float64].to(dtype)
    return gram_matrix(Z.to(dtype))


def _mirrored(S: torch.Tensor) -> torch.Tensor:
    """The square S's lower triangle mirrored onto its upper one: a blocked matrix product X X^T
    need not be symmetric to the bit (it was not with OpenBLAS on an AMD EPYC host)."""
    return S.tril() + S.tril(-1).t()


def _cholesky_factor(G: torch.Tensor, rel_tol: float) -> torch.Tensor | None:
    """L with L L^T = G[:-1, :-1], the Gram matrix of the first n - 1 centred rows (they span all n:
    centred rows sum to zero); None where a pivot (a row's variance beyond the rows before it) is at
    most ``rel_tol`` times the largest row variance (dependent rows), or the factorisation fails."""
    L, info = torch.linalg.cholesky_ex(G[:-1, :-1])
    if int(info) != 0:
        return None
    if float(L.diagonal().square().min()) <= rel_tol * float(G.diagonal().max()):
        return None
    return L


@dataclass
class PreparedFeatures:
    """Training features on the probe's device, with their basis and coordinates when one basis
    serves every fold (no dropout)."""

    X: torch.Tensor  # (n, d) normalised features
    basis: Basis | None
    Z: torch.Tensor | None  # (n, r) coordinates in ``basis``
    #: the coordinates' Gram matrix in float64 where one is at hand (the basis's, n < d)
    gram: torch.Tensor | None = None
    _grams: dict = field(default_factory=dict)  # by dtype

    def __post_init__(self):
        if self.gram is not None:
            self._grams[torch.float64] = self.gram

    def gram_of(self, idx: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Z Z^T of the rows ``idx`` in ``dtype``: a block of the whole set's, computed once for every
        fold and the final fit (see :func:`gram_in`)."""
        if dtype not in self._grams:
            self._grams[dtype] = gram_in(self.Z, dtype, self._grams)
        G = self._grams[dtype]
        if len(idx) == len(G) and bool((idx == torch.arange(len(idx), device=idx.device)).all()):
            return G
        return G[idx][:, idx]


@dataclass
class FittedPath:
    """One fit of ``LinearProbe.fit_path``: basis coordinates (smooth losses) or coefficients."""

    C: float
    W: torch.Tensor  # (K, r) in basis coordinates, or (K, d) coefficients (hinge)
    b: torch.Tensor
    basis: Basis | None
    n_iter: int = 0
    grad_max: float = 0.0
    converged: bool = True  # a final fit's; the C search's fits are not checked
