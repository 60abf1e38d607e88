"""Matplotlib (Agg) figures shared by the report sections."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..analysis.figures import save_figure as save  # one figure writer for analyses and reports

COLORS = [plt.get_cmap("tab10")(i) for i in range(10)]


def curves(
    series: Mapping[str, Mapping[str, tuple[Sequence[Any], Sequence[Any]]]],
    panels: Sequence[tuple[str, str]],
    path: Path,
    *,
    xlabel: str = "epoch",
    title: str = "",
) -> None:
    """One panel per (key, y-label); in each, one line per series name: series[name][key] = (x, y)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (key, ylabel) in zip(axes[0], panels):
        for i, (name, data) in enumerate(series.items()):
            if key in data and len(data[key][0]):
                ax.plot(*data[key], label=name, color=COLORS[i % 10], lw=1.6)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        h, lab = ax.get_legend_handles_labels()
        for hh, ll in zip(h, lab):
            if ll not in labels:
                handles.append(hh)
                labels.append(ll)
    if handles:
        fig.legend(
            handles, labels, loc="upper center", ncol=min(len(labels), 6), bbox_to_anchor=(0.5, 1.08), frameon=False
        )
    if title:
        fig.suptitle(title, y=1.15)
    fig.tight_layout()
    save(fig, path)


def grouped_bars(
    values: dict[str, dict[str, float]], path: Path, *, ylabel: str = "accuracy (%)", title: str = ""
) -> None:
    """Bars grouped by outer key (e.g. method), one bar per inner key (e.g. attack)."""
    groups = list(values)
    keys: list[str] = []
    for v in values.values():
        keys += [k for k in v if k not in keys]
    width = 0.8 / max(1, len(keys))
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(groups) + 2), 3.6))
    for i, k in enumerate(keys):
        ys = [values[g].get(k, np.nan) for g in groups]
        bars = ax.bar(x + (i - (len(keys) - 1) / 2) * width, ys, width, label=k, color=COLORS[i % 10])
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 5 else 0, ha="right" if len(groups) > 5 else "center")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=min(len(keys), 6), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.18), frameon=False)
    if title:
        ax.set_title(title, pad=28)
    fig.tight_layout()
    save(fig, path)
