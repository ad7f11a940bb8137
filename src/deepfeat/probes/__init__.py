"""Probes on fixed features: linear SVM and logistic regression, C chosen by cross-validation."""

from deepfeat.probes.linear import DEFAULT_CS, LinearProbe, probe_for

__all__ = ["DEFAULT_CS", "LinearProbe", "probe_for"]
