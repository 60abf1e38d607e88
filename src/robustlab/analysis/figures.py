"""Matplotlib (Agg) for the analyses' figures, imported only when a figure is drawn."""

from __future__ import annotations

from pathlib import Path

from ..rundir import atomic_path


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Lay out, write `path` (creating its folder) and close the figure."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, bbox_inches="tight")
    pyplot().close(fig)
