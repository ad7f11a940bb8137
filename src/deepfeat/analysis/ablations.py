"""Agrawal's feature ablations side by side (Table 5.1): probe accuracy of every layer with its maps
unrolled, spatially shuffled, max-pooled, binarised and both, on the same splits. Ablations of unrolled
maps already in the store are derived without the network."""

from __future__ import annotations

from deepfeat.evaluation import ActivationsRecipe, EvaluationJob, EvaluationResult, run

#: The columns of Table 5.1 (``sp-max`` is the ``max`` pooling, under the table's name).
ABLATIONS = ("unroll", "sp-shuffle", "sp-max", "sp-max-bin", "bin")


def ablation_table(job: EvaluationJob, *, progress: bool = True) -> tuple[EvaluationResult, dict]:
    """Run ``job`` (an activations recipe with the ablations as poolings) and arrange its primary
    metric as {layer: {"<ablation> (<probe>)": {"mean", "std"}}}, the ``max`` pooling named ``sp-max``."""
    if not isinstance(job.recipe, ActivationsRecipe):
        raise TypeError("ablation_table needs a job with an ActivationsRecipe")
    result = run(job, progress=progress)
    metric = result.primary_metric
    table: dict[str, dict[str, dict]] = {}
    for row in result.summary():
        layer, _, pool = row["features"].partition("/")
        name = "sp-max" if pool == "max" else pool or "unroll"
        table.setdefault(layer, {})[f"{name} ({row['probe']})"] = row[metric]
    return result, {"metric": metric, "table": table}
