"""Probes on fixed features: linear SVM and logistic regression, C chosen by cross-validation, and SVMs
on precomputed kernels (factored gradient features)."""

from deepfeat.probes.kernel import KernelProbe
from deepfeat.probes.linear import DEFAULT_CS, PROBES, LinearProbe, probe_for

__all__ = ["DEFAULT_CS", "PROBES", "KernelProbe", "LinearProbe", "probe_for"]
