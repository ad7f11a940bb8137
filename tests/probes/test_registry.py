"""Probes by name."""

from __future__ import annotations

import pytest

from deepfeat.errors import ConfigError, UnknownNameError
from deepfeat.probes import PROBES, KernelProbe, LinearProbe, probe_for


@pytest.mark.parametrize(
    ("name", "loss", "multi_class"),
    [
        ("svm", "squared_hinge", "multinomial"),
        ("svm-hinge", "hinge", "multinomial"),
        ("logreg", "logistic", "multinomial"),
        ("logreg-ovr", "logistic", "ovr"),
    ],
)
def test_linear_presets(name, loss, multi_class):
    probe = probe_for(name, C=0.5, dropout=0.1, kernel_normalize="none", device="cpu")
    assert isinstance(probe, LinearProbe)
    assert (probe.loss, probe.multi_class, probe.C, probe.dropout) == (loss, multi_class, 0.5, 0.1)


def test_kernel_preset_and_errors():
    ksvm = probe_for("ksvm", C=2.0, normalize=True, kernel_normalize="gradient", device="cpu")
    assert isinstance(ksvm, KernelProbe) and ksvm.normalize == "gradient" and ksvm.C == 2.0
    with pytest.raises(ConfigError, match="dropout"):
        probe_for("ksvm", dropout=0.3)
    with pytest.raises(UnknownNameError, match=r"unknown probe 'logref'; valid: logreg"):
        probe_for("logref")
    assert set(PROBES) == {"svm", "svm-hinge", "logreg", "logreg-ovr", "ksvm"}
