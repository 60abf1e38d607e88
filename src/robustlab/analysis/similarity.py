"""Class-similarity matrices of a model's features next to those of the class word vectors (SCARL, Fig. 2).

S_model[a, b] = < m̂_a, m̂_b >,  m̂_c = normalize(mean_{i: y_i = c} h(x_i))   (mean, then normalise)
S_words[a, b] = < t̂_a, t̂_b >,  t̂_c = normalize(t_c)

The paper's claim: a robust model's matrix reflects the relatedness of the classes as the word vectors
do; a non-robust model's does not. Agreement = Spearman's rank correlation of the off-diagonal entries
of S_model and S_words (the upper triangle; both matrices are symmetric).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..methods.scarl import class_means
from .cca import features, run_vectors
from .registry import ANALYSES, AnalysisContext


def class_similarity(z: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """K×K inner products of the normalised class means of features z (N×D); classes without samples -> NaN rows."""
    means, present = class_means(z, y, num_classes)
    m = F.normalize(means, dim=1)
    s = m @ m.T
    return s.masked_fill(~(present[:, None] & present[None, :]), float("nan"))


def vector_similarity(t: torch.Tensor) -> torch.Tensor:
    """K×K cosine similarities of the class word vectors t (K×D)."""
    t = F.normalize(t, dim=1)
    return t @ t.T


def offdiagonal_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho between the upper-triangle (off-diagonal) entries of two K×K matrices."""
    from scipy.stats import spearmanr

    iu = np.triu_indices(a.shape[0], k=1)
    ok = np.isfinite(a[iu]) & np.isfinite(b[iu])
    return float(spearmanr(a[iu][ok], b[iu][ok]).statistic)


def heatmaps(matrices: dict[str, np.ndarray], labels: list[str], path: Path, *, title: str = "") -> Path:
    """One K×K heatmap per entry (panel title = key). Each panel has its own colour scale over its off-diagonal
    entries: ReLU features make all class means point roughly the same way, so a shared scale would hide the
    structure (the ranks, which the Spearman agreement compares, are what matters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(matrices))
    rows = -(-len(matrices) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.5 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(matrices) :]:
        ax.axis("off")
    for ax, (name, m) in zip(axes.flat, matrices.items()):
        shown = np.array(m, dtype=float)
        np.fill_diagonal(shown, np.nan)  # the diagonal is 1 everywhere; leaving it out keeps the contrast
        im = ax.imshow(shown, vmin=np.nanmin(shown), vmax=np.nanmax(shown), cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        fig.colorbar(im, ax=ax, shrink=0.75, pad=0.03).ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


@ANALYSES.register("similarity")
def similarity_analysis(
    ctx: AnalysisContext,
    vectors: str | None = None,
    split: str = "test",
    max_samples: int | None = None,
    figure: bool = True,
) -> dict[str, Any]:
    """Class-similarity matrix of forward_features (natural `split` images) vs the word-vector matrix.

    vectors: word-vector source (default: the run's scarl vectors, else minilm).
    """
    from ..semantic import class_vectors

    spec = vectors or run_vectors(ctx.meta)
    names = ctx.dataset.class_names
    ctx.model.eval()
    s = ctx.dataset.split(split).head(max_samples)
    model_sim = class_similarity(features(ctx.model, s.x.to(ctx.device)), s.y, len(names)).numpy()
    word_sim = vector_similarity(class_vectors(spec, names)).numpy()
    out: dict[str, Any] = {
        "vectors": spec,
        "split": split,
        "n": len(s),
        "classes": names,
        "model": model_sim.tolist(),
        "words": word_sim.tolist(),
        "spearman": offdiagonal_spearman(model_sim, word_sim),
    }
    if figure:
        out["figure"] = str(
            heatmaps(
                {"model features": model_sim, f"word vectors ({spec})": word_sim},
                names,
                ctx.figure_path("similarity.png"),
                title=f"Spearman (off-diagonal) = {out['spearman']:.2f}",
            )
        )
    return out
