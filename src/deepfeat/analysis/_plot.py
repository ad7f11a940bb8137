"""Small matplotlib helpers shared by the analysis plots (private; non-interactive Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

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
    return plt.subplots(figsize=size)
