"""The heads of end-to-end Fisher-vector training: building a :class:`~deepfeat.features.fisher.FisherHead`
from a GMM (with the feature transform's exact start), feeding descriptor sets to it, and scoring with
the heads and their SVMs. :class:`~deepfeat.training.fisher_e2e.FisherE2E` trains them."""

from __future__ import annotations

import numpy as np
import torch

from deepfeat.errors import DataError
from deepfeat.features.fisher import (
    CHUNK_ROWS,
    DTYPES,
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

__all__ = ["FisherHeads"]


class FisherHeads:
    """Encoding and scoring with fitted heads: ``heads_`` (FisherHead per head), ``classes_of_head_``
    (the classes each head scores) and ``svms_`` ((coef, intercept) per head), set by a subclass's
    ``fit``, which also sets ``_train`` (the trainable parts); the subclass has the parameters
    ``transform_init``, ``tanh_range``, ``eps``, ``power``, ``l2``, ``random_state``, ``device`` and
    ``dtype``."""

    def _sets(self, descriptors, name: str, device, dtype):
        sets = as_descriptor_sets(descriptors, name)
        if isinstance(sets, torch.Tensor):
            sets = sets.to(device=device, dtype=dtype)
        else:
            sets = [s.to(device=device, dtype=dtype) for s in sets]
        check_finite_sets(sets, name)
        return sets

    def _inputs(self, sets):
        """The heads' fixed inputs (all heads start alike, so they share them)."""
        head = self.heads_[0]
        with torch.no_grad():
            return head.inputs(sets) if isinstance(sets, torch.Tensor) else [head.inputs(s) for s in sets]

    def _encode_inputs(self, inputs, head: int = 0) -> np.ndarray:
        out = []
        with torch.no_grad():
            for _, x, mask in padded_batches(inputs, CHUNK_ROWS):
                out.append(self.heads_[head](x, mask).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    @property
    def head_(self) -> FisherHead:
        """The head of a shared model (per-class models have one per class in ``heads_``)."""
        if len(self.heads_) != 1:
            raise AttributeError("a per-class model has one head per class: use heads_[c]")
        return self.heads_[0]

    def encode(self, descriptors, head: int = 0) -> np.ndarray:
        """Normalised Fisher vectors (n, (2D + 1) K) of raw descriptor sets by head ``head``."""
        device, dtype = check_device(self.device), DTYPES[self.dtype]
        return self._encode_inputs(self._inputs(self._sets(descriptors, "descriptors", device, dtype)), head)

    def decision_function(self, descriptors) -> np.ndarray:
        """SVM scores (n, n_classes) of raw descriptor sets."""
        device, dtype = check_device(self.device), DTYPES[self.dtype]
        return self._scores(self._inputs(self._sets(descriptors, "descriptors", device, dtype)))

    def _scores(self, inputs) -> np.ndarray:
        n_classes = sum(len(c) for c in self.classes_of_head_)
        scores = np.zeros((len(inputs), n_classes), dtype=np.float64)
        for h, classes in enumerate(self.classes_of_head_):
            coef, intercept = self.svms_[h]
            scores[:, classes] = self._encode_inputs(inputs, h) @ coef.T + intercept
        return scores

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

    @staticmethod
    def _batch(inputs, idx) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(inputs, torch.Tensor):
            return inputs[torch.as_tensor(idx, device=inputs.device)], None
        group = [inputs[i] for i in idx]
        (_, x, mask) = next(padded_batches(group, max(len(s) for s in group) * len(group)))
        return x, mask
