"""scikit-learn's generic estimator checks on the probes and the mixture: the ones about how input is
taken and refused must pass (a failure is a regression in what users see for bad input)."""

from __future__ import annotations

import warnings

import pytest
from sklearn.utils.estimator_checks import check_estimator

from deepfeat.features.fisher.gmm import DiagonalGMM
from deepfeat.probes import LinearProbe
from deepfeat.probes.registry import probe_for

#: input checks every estimator here passes (scikit-learn 1.7-1.9 names). Two others fail by design:
#: ``check_dtype_object`` (an object array holding a dict is refused as a ValueError naming it, not the
#: TypeError the check asks for) and, for the probes, ``check_supervised_y_2d`` (an (n, 1) 0/1 target is
#: a one-label indicator matrix, which one-vs-rest analyses fit, not a column of labels to ravel); the
#: mixture's empty-input message is its own
INPUT_CHECKS = {
    "check_estimator_sparse_array",
    "check_estimator_sparse_matrix",
    "check_complex_data",
    "check_fit2d_predict1d",
    "check_n_features_in_after_fitting",
    "check_estimators_nan_inf",
    "check_fit2d_1feature",
}
#: ... and the probes also these, on their targets, on empty data and on sample and class weights
#: (``check_sample_weight_equivalence_on_dense_data`` compares weights with repeated samples to a
#: relative 1e-7, beyond the probes' float32; tests/probes/test_weights.py compares them to 1e-4)
PROBE_CHECKS = {
    "check_requires_y_none",
    "check_classifiers_regression_target",
    "check_fit2d_1sample",
    "check_estimators_empty_data_messages",
    "check_sample_weights_pandas_series",
    "check_sample_weights_not_an_array",
    "check_sample_weights_list",
    "check_all_zero_sample_weights_error",
    "check_sample_weights_shape",
    "check_sample_weights_not_overwritten",
    "check_classifiers_one_label_sample_weights",
    "check_class_weight_classifiers",
}


@pytest.mark.parametrize(
    "make, required",
    [
        (lambda: LinearProbe(max_iter=50), INPUT_CHECKS | PROBE_CHECKS),
        (lambda: probe_for("ksvm"), INPUT_CHECKS | PROBE_CHECKS),
        (lambda: DiagonalGMM(2, max_iter=20), INPUT_CHECKS),
    ],
    ids=["LinearProbe", "KernelProbe", "DiagonalGMM"],
)
def test_input_checks_pass(make, required):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(make(), on_fail=None)
    status = {r["check_name"]: r["status"] for r in results}
    ran = required & status.keys()
    assert len(ran) >= len(required) - 2, f"scikit-learn renamed checks: {sorted(required - ran)}"
    failed = {name: status[name] for name in ran if status[name] != "passed"}
    assert not failed, failed
