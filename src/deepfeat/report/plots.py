"""Plots of every job (PNG files, matplotlib's non-interactive backend): shared figure helpers and
the evaluation and heatmap plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

METRIC_LABELS = {
    "mean_class_accuracy": "mean per-class accuracy (%)",
    "accuracy": "accuracy (%)",
    "top5_accuracy": "top-5 accuracy (%)",
    "map": "mAP (%)",
    "map_voc07": "mAP, VOC07 11-point (%)",
}


def metric_by_features(summary: list[dict], metric: str, path: Path, title: str = "") -> Path:
    """Grouped bars: one group per feature set, one bar per probe (and mode), mean with std bars."""
    features = list(dict.fromkeys(r["features"] for r in summary))
    series = list(dict.fromkeys((r["probe"], r.get("mode")) for r in summary))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(features) * max(1, len(series)) * 0.6 + 2), 4.2))
    x = np.arange(len(features))
    for i, (probe, mode) in enumerate(series):
        means, stds = [], []
        for f in features:
            row = next(
                (r for r in summary if r["features"] == f and r["probe"] == probe and r.get("mode") == mode),
                None,
            )
            value = row.get(metric) if row else None
            means.append(100 * value["mean"] if value else np.nan)
            stds.append(100 * value["std"] if value else 0.0)
        label = probe if mode is None else f"{probe} ({mode})"
        ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=label)
    ax.set_xticks(x, features, rotation=20, ha="right")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return save(fig, path)


def per_class(
    values: list[float | None], classes: list[str], path: Path, ylabel: str, title: str = ""
) -> Path:
    """One bar per class (values in [0, 1], None for classes without test samples)."""
    shown = np.array([np.nan if v is None else 100 * v for v in values], dtype=float)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(classes) + 2), 4.0))
    ax.bar(np.arange(len(classes)), shown, color="tab:blue")
    ax.set_xticks(
        np.arange(len(classes)), classes, rotation=60 if len(classes) > 8 else 0, ha="right", fontsize=8
    )
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return save(fig, path)


def overlay_heatmap(
    image: np.ndarray, heat: np.ndarray, path: Path, title: str = "", alpha: float = 0.5
) -> Path:
    """The image with a heatmap (any 2D size, stretched bilinearly over it) drawn on top, as a PNG."""
    from PIL import Image

    h, w = image.shape[:2]
    heat = np.asarray(heat, dtype=np.float32)
    span = float(heat.max() - heat.min())
    norm = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    big = np.asarray(Image.fromarray(norm).resize((w, h), Image.Resampling.BILINEAR))
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2 * h / max(w, 1) + 0.6))
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(image)
    shown = axes[1].imshow(big, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    axes[1].set_title(title or "activeness")
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04, label="sum over channels of gamma (scaled)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


LINESTYLES = ("-", "-.", "--", ":")


def grid(n_panels: int, ncols: int = 4, size: tuple[float, float] = (3.2, 2.6)):
    """Figure with n_panels axes on a grid (unused axes hidden); returns (fig, flat list of axes)."""
    ncols = max(1, min(ncols, n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


def save(fig, path: str | Path, title: str = "") -> Path:
    """Write the figure as PNG (parent folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def colours(n: int) -> list:
    """n distinguishable colours (tab10 / tab20, then a continuous map)."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("turbo")(x) for x in np.linspace(0.05, 0.95, n)]


def figure(size: tuple[float, float] = (6.0, 4.2)):
    """A figure with one axes of the given size (inches)."""
    return plt.subplots(figsize=size)
