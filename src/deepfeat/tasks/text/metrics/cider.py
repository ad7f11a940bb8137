"""CIDEr-D as the COCO caption evaluation computes it (Vedantam et al. 2015; coco-caption's "CIDEr",
which is CIDEr-D).

- Document frequency df(g) of an n-gram: the number of images whose reference set (the references
  being scored) contains g; idf(g) = log(N_images) - log(max(1, df(g))).
- A caption is, for each n = 1..4, the vector of tf(g) * idf(g) over its n-grams.
- The similarity of a candidate c and a reference r for order n is the *clipped* cosine
  sum_g min(v_c(g), v_r(g)) v_r(g) / (|v_c| |v_r|) (0 when either norm is 0), times the length
  penalty exp(-(l_c - l_r)^2 / (2 sigma^2)) with sigma = 6. As in the reference implementation the
  lengths l are the captions' numbers of bigrams (words - 1 for a non-empty caption).
- The score of an image: 10 x the mean over n of the mean over its references; the corpus score is the
  mean over images.

:meth:`CiderD.score` mirrors that definition image by image; :meth:`CiderD.score_matrix` computes the
same numbers for every (candidate, image) pair at once with sparse products (the clipped dot product
is sum_k [tf_c >= k][tf_r >= k] tf_r idf^2, since min(a, b) = sum_k [a >= k][b >= k] for counts), for the
constant-caption and nearest-neighbour baselines.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from deepfeat.tasks.text.metrics.bleu import _check, ngram_counts

SIGMA = 6.0
N = 4


class CiderD:
    """CIDEr-D against a fixed set of reference sets (which also gives the document frequencies)."""

    def __init__(self, references: Sequence[Sequence[Sequence[str]]], n: int = N, sigma: float = SIGMA):
        if not references:
            from deepfeat.errors import ConfigError

            raise ConfigError("CIDEr-D needs at least one image with reference captions")
        self.n = n
        self.sigma = sigma
        self.references = [[list(r) for r in refs] for refs in references]
        self.df: dict[tuple, float] = defaultdict(float)
        for refs in self.references:
            for gram in {g for r in refs for g in ngram_counts(r, n)}:
                self.df[gram] += 1
        self.log_n = math.log(float(len(self.references)))
        self._ref_vecs = [[self._vector(r) for r in refs] for refs in self.references]

    # -- the definition, image by image ---------------------------------------------------------
    def _idf(self, gram: tuple) -> float:
        return self.log_n - math.log(max(1.0, self.df.get(gram, 0.0)))

    def _vector(self, tokens: Sequence[str]) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(self.n)]
        norms = [0.0] * self.n
        bigrams = 0
        for gram, tf in ngram_counts(tokens, self.n).items():
            k = len(gram) - 1
            value = float(tf) * self._idf(gram)
            vec[k][gram] = value
            norms[k] += value * value
            if k == 1:
                bigrams += tf
        return vec, [math.sqrt(x) for x in norms], bigrams

    def _similarity(self, cand, ref) -> np.ndarray:
        (vc, nc, lc), (vr, nr, lr) = cand, ref
        penalty = math.exp(-((lc - lr) ** 2) / (2 * self.sigma**2))
        out = np.zeros(self.n)
        for k in range(self.n):
            dot = sum(min(v, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, v in vc[k].items())
            if nc[k] != 0 and nr[k] != 0:
                dot /= nc[k] * nr[k]
            out[k] = dot * penalty
        return out

    def score_one(self, candidate: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        """CIDEr-D of one caption against any references, with this scorer's document frequencies."""
        vc = self._vector(candidate)
        total = np.zeros(self.n)
        for ref in references:
            total += self._similarity(vc, self._vector(ref))
        return 10.0 * float(np.mean(total)) / len(references)

    def score(self, candidates: Sequence[Sequence[str]]) -> tuple[float, np.ndarray]:
        """Corpus CIDEr-D and per-image scores of candidate i against the references of image i."""
        _check(self.references, candidates)
        scores = np.zeros(len(candidates))
        for i, cand in enumerate(candidates):
            vc = self._vector(cand)
            total = np.zeros(self.n)
            for ref in self._ref_vecs[i]:
                total += self._similarity(vc, ref)
            scores[i] = 10.0 * float(np.mean(total)) / len(self._ref_vecs[i])
        return float(scores.mean()), scores

    # -- every candidate against every image ----------------------------------------------------
    def score_matrix(
        self, candidates: Sequence[Sequence[str]], *, chunk: int = 512, progress: bool = False
    ) -> np.ndarray:
        """float64 (n_candidates, n_images): CIDEr-D of each candidate against each image's references
        (the document frequencies stay those of the reference sets given at construction)."""
        from tqdm.auto import tqdm

        refs = [r for refs in self.references for r in refs]
        owner = np.repeat(np.arange(len(self.references)), [len(r) for r in self.references])
        weights = 10.0 / (self.n * np.array([len(r) for r in self.references], dtype=float))
        assign = sparse.csr_matrix(
            (weights[owner], (np.arange(len(refs)), owner)), shape=(len(refs), len(self.references))
        )
        ref_len = np.array([max(0, len(r) - 1) for r in refs], dtype=float)
        grams: list[dict[tuple, int]] = [{} for _ in range(self.n)]
        ref_tf = self._tf_matrices(refs, grams, grow=True)
        idf = [np.array([self._idf(g) for g in grams[k]]) for k in range(self.n)]
        ref_norm = [self._norms(ref_tf[k], idf[k]) for k in range(self.n)]
        max_tf = max(int(m.max()) if m.nnz else 1 for m in ref_tf)
        # per order and k: [tf_r >= k] tf_r idf^2, transposed (grams x refs)
        ref_side = [
            [
                self._at_least(ref_tf[k], t).multiply(ref_tf[k]).multiply(idf[k] ** 2).T.tocsr()
                for t in range(1, max_tf + 1)
            ]
            for k in range(self.n)
        ]
        out = np.zeros((len(candidates), len(self.references)))
        starts = range(0, len(candidates), chunk)
        for start in tqdm(starts, desc="CIDEr-D", unit="chunk", disable=not progress):
            block = [list(c) for c in candidates[start : start + chunk]]
            cand_tf = self._tf_matrices(block, grams, grow=False)
            cand_len = np.array([max(0, len(c) - 1) for c in block], dtype=float)
            penalty = np.exp(-((cand_len[:, None] - ref_len[None, :]) ** 2) / (2 * self.sigma**2))
            sims = np.zeros((len(block), len(refs)))
            for k in range(self.n):
                cand_norm = self._norms(cand_tf[k], idf[k], unseen=self._unseen_norm(block, k, grams))
                dot = np.zeros((len(block), len(refs)))
                for t in range(1, max_tf + 1):
                    dot += (self._at_least(cand_tf[k], t) @ ref_side[k][t - 1]).toarray()
                denom = cand_norm[:, None] * ref_norm[k][None, :]
                sims += np.divide(dot, denom, out=dot.copy(), where=denom != 0)
            out[start : start + len(block)] = np.asarray((sims * penalty) @ assign)
        return out

    def _tf_matrices(self, captions, grams: list[dict], *, grow: bool) -> list[sparse.csr_matrix]:
        rows: list[list[int]] = [[] for _ in range(self.n)]
        cols: list[list[int]] = [[] for _ in range(self.n)]
        vals: list[list[int]] = [[] for _ in range(self.n)]
        for i, tokens in enumerate(captions):
            for gram, tf in ngram_counts(tokens, self.n).items():
                k = len(gram) - 1
                j = grams[k].get(gram)
                if j is None:
                    if not grow:
                        continue  # an n-gram no reference has: it adds to the norm only
                    j = grams[k][gram] = len(grams[k])
                rows[k].append(i)
                cols[k].append(j)
                vals[k].append(tf)
        return [
            sparse.csr_matrix(
                (vals[k], (rows[k], cols[k])), shape=(len(captions), len(grams[k])), dtype=float
            )
            for k in range(self.n)
        ]

    def _unseen_norm(self, block, k: int, grams: list[dict]) -> np.ndarray:
        """Squared norm contributed by each candidate's n-grams that no reference holds (idf = log N)."""
        out = np.zeros(len(block))
        for i, tokens in enumerate(block):
            for gram, tf in ngram_counts(tokens, self.n).items():
                if len(gram) == k + 1 and gram not in grams[k]:
                    out[i] += (tf * self.log_n) ** 2
        return out

    @staticmethod
    def _norms(tf: sparse.csr_matrix, idf: np.ndarray, unseen: np.ndarray | None = None) -> np.ndarray:
        squared = np.asarray(tf.multiply(idf).power(2).sum(axis=1)).ravel()
        if unseen is not None:
            squared = squared + unseen
        return np.sqrt(squared)

    @staticmethod
    def _at_least(tf: sparse.csr_matrix, t: int) -> sparse.csr_matrix:
        out = tf.copy()
        out.data = (out.data >= t).astype(float)
        out.eliminate_zeros()
        return out


def cider_d(
    references: Sequence[Sequence[Sequence[str]]],
    candidates: Sequence[Sequence[str]],
    n: int = N,
    sigma: float = SIGMA,
) -> tuple[float, np.ndarray]:
    """Corpus CIDEr-D (document frequencies from ``references``) and the per-image scores."""
    return CiderD(references, n=n, sigma=sigma).score(candidates)
