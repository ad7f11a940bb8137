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
_KERNEL_SHARED = ("random_state", "C", "Cs", "cv", "scoring", "device", "kernel_normalize", "class_weight")


def probe_for(name: str, **params) -> LinearProbe | KernelProbe:
    """A probe by name: ``"svm"`` (squared hinge), ``"svm-hinge"``, ``"logreg"`` (multinomial),
    ``"logreg-ovr"`` or ``"ksvm"`` (SVMs on a precomputed kernel: the probe of factored gradients).

    Parameters meant for the other kind of probe are dropped (``normalize`` and ``dropout`` are the
    linear probes' options; ``kernel_normalize`` is the kernel probe's ``normalize``); others a probe
    does not take, and parameters its name already sets (``loss`` of ``"svm"``), are refused."""
    check_choice("probe", name, PROBES)
    if name == "ksvm":
        if params.get("dropout"):
            raise ConfigError("the kernel probe 'ksvm' does not support dropout")
        _refuse_unknown(name, params, set(KernelProbe().get_params()) | set(LinearProbe().get_params()))
        kwargs = {k: v for k, v in params.items() if k in _KERNEL_SHARED}
        if "kernel_normalize" in kwargs:
            kwargs["normalize"] = kwargs.pop("kernel_normalize")
        return KernelProbe(**kwargs)
    params.pop("kernel_normalize", None)
    preset = _PRESETS[name]
    fixed = sorted(set(params) & set(preset))
    if fixed:
        raise ConfigError(
            f"probe {name!r} sets {', '.join(f'{k}={preset[k]!r}' for k in fixed)}; choose another probe "
            f"name ({', '.join(PROBES)}) or build LinearProbe(...) yourself"
        )
    _refuse_unknown(name, params, set(LinearProbe().get_params()))
    return LinearProbe(**preset, **params)


def _refuse_unknown(name: str, params: dict, valid: set[str]) -> None:
    unknown = sorted(set(params) - valid - {"kernel_normalize"})
    if unknown:
        raise ConfigError(
            f"probe {name!r} takes no parameter {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(valid))}"
        )
