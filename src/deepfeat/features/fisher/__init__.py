"""Fisher vectors of local descriptors (Wieschollek et al., eqs. 2-4), batched over images in torch.

Modules, from the inputs up:

- :mod:`.descriptors`: conv-map descriptors, descriptor-set checks, the per-image random subset,
  padded groups, and :class:`DescriptorPCA`;
- :mod:`.gmm`: :class:`GMMParams`, :func:`as_gmm_params`, :class:`DiagonalGMM` (EM in torch);
- :mod:`.encoding`: the statistics, the Fisher vectors built from them (``"paper"`` and ``"skimage"``
  conventions), the power and L2 normalisation, and :func:`fisher_vectors`;
- :mod:`.encoder`: :class:`FisherEncoder`, the scikit-learn transformer (sampling, PCA, GMM, encoding);
- :mod:`.layer`: the differentiable layer for end-to-end training (:class:`FisherVectorLayer`,
  :class:`FVNormalization`, :class:`FeatureTransform`, :class:`FisherHead`).
"""

from deepfeat.features.fisher._common import (
    CHUNK_ROWS,
    CONVENTIONS,
    DTYPES,
)
from deepfeat.features.fisher.descriptors import (
    DescriptorPCA,
    as_descriptor_sets,
    check_finite_sets,
    conv_descriptors,
    padded_batches,
    subsample_descriptors,
)
from deepfeat.features.fisher.encoder import FisherEncoder
from deepfeat.features.fisher.encoding import (
    centred_params,
    fisher_dim,
    fisher_vectors,
    fv_from_statistics,
    fv_statistics,
    normalize_fv,
    posterior_map,
    power_normalize,
)
from deepfeat.features.fisher.gmm import DiagonalGMM, GMMParams, as_gmm_params, log_joint
from deepfeat.features.fisher.layer import (
    TRANSFORM_INITS,
    FeatureTransform,
    FisherHead,
    FisherVectorLayer,
    FVNormalization,
)
from deepfeat.validation import check_device  # re-exported: the device check of these modules

__all__ = [
    "CHUNK_ROWS",
    "CONVENTIONS",
    "DTYPES",
    "TRANSFORM_INITS",
    "DescriptorPCA",
    "DiagonalGMM",
    "FVNormalization",
    "FeatureTransform",
    "FisherEncoder",
    "FisherHead",
    "FisherVectorLayer",
    "GMMParams",
    "as_descriptor_sets",
    "as_gmm_params",
    "centred_params",
    "check_device",
    "check_finite_sets",
    "conv_descriptors",
    "fisher_dim",
    "fisher_vectors",
    "fv_from_statistics",
    "fv_statistics",
    "log_joint",
    "normalize_fv",
    "padded_batches",
    "posterior_map",
    "power_normalize",
    "subsample_descriptors",
]
