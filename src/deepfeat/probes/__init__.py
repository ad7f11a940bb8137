"""Probes on fixed features: linear SVM and logistic regression, C chosen by cross-validation, and SVMs
on precomputed kernels (factored gradient features)."""

from deepfeat.probes.base import DEFAULT_CS
from deepfeat.probes.kernel import KernelProbe
from deepfeat.probes.linear import LinearProbe
from deepfeat.probes.registry import PROBES, probe_for
from deepfeat.probes.selection import PathProbe

__all__ = ["DEFAULT_CS", "PROBES", "KernelProbe", "LinearProbe", "PathProbe", "probe_for"]
