"""Probes by name: the presets the command line and the evaluation layer offer."""

from __future__ import annotations

from deepfeat.errors import ConfigError
from deepfeat.probes.kernel import KernelProbe
from deepfeat.probes.linear import LinearProbe
from deepfeat.validation import check_choice

#: probe names accepted by :func:`probe_for`
PROBES = ("svm", "svm-hinge", "logreg", "logreg-ovr", "ksvm")

_PRESETS = {
    "svm": {"loss": "squared_hinge"},
    "svm-hinge": {"loss": "hinge"},
    "logreg": {"loss": "logistic", "multi_class": "multinomial"},
    "logreg-ovr": {"loss": "logistic", "multi_class": "ovr"},
}
#: parameters the kernel probe shares with the linear ones
_KERNEL_SHARED = ("random_state", "C", "Cs", "cv", "scoring", "device", "kernel_normalize")


def probe_for(name: str, **params) -> LinearProbe | KernelProbe:
    """A probe by name: ``"svm"`` (squared hinge), ``"svm-hinge"``, ``"logreg"`` (multinomial),
    ``"logreg-ovr"`` or ``"ksvm"`` (SVMs on a precomputed kernel: the probe of factored gradients).

    Parameters a probe does not take are dropped (``normalize`` and ``dropout`` are the linear probes'
    options; ``kernel_normalize`` is the kernel probe's ``normalize``)."""
    check_choice("probe", name, PROBES)
    if name == "ksvm":
        if params.get("dropout"):
            raise ConfigError("the kernel probe 'ksvm' does not support dropout")
        kwargs = {k: v for k, v in params.items() if k in _KERNEL_SHARED}
        if "kernel_normalize" in kwargs:
            kwargs["normalize"] = kwargs.pop("kernel_normalize")
        return KernelProbe(**kwargs)
    params.pop("kernel_normalize", None)
    return LinearProbe(**_PRESETS[name], **params)
