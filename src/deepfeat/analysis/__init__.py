"""Analysis of a network's features (Agrawal's report, DeCAF's visualisations), on feature arrays:
filter entropy (AuE, MCAuE), grandmother-cell precision and per-filter AP, filters needed per class,
2-D embeddings, layer accuracy over training checkpoints, feature ablations and heatmaps. Results are
written with :func:`deepfeat.report.writer.write_result`."""

from deepfeat.analysis.checkpoints import CheckpointTable, layer_accuracy_over_training, plot_layer_accuracy
from deepfeat.analysis.embedding import Embedding, embed, plot_embedding, random_projection
from deepfeat.analysis.entropy import (
    ENTROPY_METHODS,
    MCAUE_POINTS,
    TABLE_FRACTIONS,
    EntropyCurves,
    filter_entropy,
    layer_entropy,
    mcaue,
    mcaue_fractions,
    percent_decrease,
    percent_decrease_table,
    plot_aue_histograms,
    plot_mcaue_curves,
)
from deepfeat.analysis.filters import (
    REPORT_KS,
    FiltersNeeded,
    filter_overlap,
    filters_needed,
    plot_filter_overlap,
    plot_filters_needed,
    rank_filters,
    spatial_max,
)
from deepfeat.analysis.selectivity import (
    PrecisionCurves,
    filter_average_precision,
    plot_precision_curves,
    precision_curves,
    top_filters,
)

__all__ = [
    "ENTROPY_METHODS",
    "MCAUE_POINTS",
    "REPORT_KS",
    "TABLE_FRACTIONS",
    "CheckpointTable",
    "Embedding",
    "EntropyCurves",
    "FiltersNeeded",
    "PrecisionCurves",
    "embed",
    "filter_average_precision",
    "filter_entropy",
    "filter_overlap",
    "filters_needed",
    "layer_accuracy_over_training",
    "layer_entropy",
    "mcaue",
    "mcaue_fractions",
    "percent_decrease",
    "percent_decrease_table",
    "plot_aue_histograms",
    "plot_embedding",
    "plot_filter_overlap",
    "plot_filters_needed",
    "plot_layer_accuracy",
    "plot_mcaue_curves",
    "plot_precision_curves",
    "precision_curves",
    "random_projection",
    "rank_filters",
    "spatial_max",
    "top_filters",
]
