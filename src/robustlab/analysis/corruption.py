"""`corruption`: accuracy under the common corruptions (Hendrycks & Dietterich 2019) per corruption and
severity, and — against a baseline — CE, mCE and relative mCE (robustlab.corruptions.metrics).

    robustlab analyze runs/digits/dat --what corruption
    robustlab analyze runs/digits/dat --what corruption --set baseline=runs/digits/standard
    robustlab analyze runs/imagenet/dat --what corruption --set source=imagenet_c --set path=/data/ImageNet-C \
        --set baseline=alexnet

`baseline` is "alexnet" (the published ImageNet-C errors) or a run directory whose
analysis/corruption.json was computed with the same settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from ..errors import RobustlabError
from .registry import ANALYSES, AnalysisContext


@ANALYSES.register("corruption")
def corruption(
    ctx: AnalysisContext,
    corruptions: list[str] | None = None,
    severities: tuple[int, ...] = (1, 2, 3, 4, 5),
    n: int | None = None,
    split: Literal["test", "val"] = "test",
    source: Literal["generate", "cifar_c", "imagenet_c"] = "generate",
    path: str | None = None,
    root: str | None = None,
    baseline: str | None = None,
    batch_size: int = 500,
) -> dict[str, Any]:
    """Corruption accuracy of the run's model (see module doc); a figure of accuracy against severity."""
    from .. import corruptions as C
    from ..corruptions.metrics import alexnet_baseline, mce

    data = ctx.dataset.split(split).head(n)
    result = C.corruption_accuracy(
        ctx.model,
        data,
        corruptions=corruptions,
        severities=tuple(severities),
        seed=ctx.seed,
        batch_size=batch_size,
        source=source,
        path=path,
        class_names=ctx.dataset.class_names,
        root=root,
        quiet=ctx.quiet,
    )
    result.update(split=split, seed=ctx.seed)
    if baseline is not None:
        base = alexnet_baseline() if baseline == "alexnet" else load_baseline(baseline, result)
        result["vs_baseline"] = {"baseline": baseline, **mce(result, base)}
    if result["acc"]:
        accuracy_heatmap(result, ctx.figure_path("corruption.png"))
    return result


def accuracy_heatmap(result: dict[str, Any], path: Path) -> None:
    """Accuracy (%) per corruption (rows) and severity (columns), annotated."""
    import numpy as np

    from .figures import pyplot, save_figure

    names = list(result["acc"])
    values = 100 * np.array([result["acc"][c] for c in names])
    fig, ax = pyplot().subplots(figsize=(1.0 * values.shape[1] + 2.4, 0.32 * len(names) + 1.0))
    ax.imshow(values, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(values.shape[1]), [str(s) for s in result["severities"]])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("severity")
    ax.set_title(f"accuracy (%) under corruption; clean {100 * result['clean_acc']:.1f}", fontsize=9)
    save_figure(fig, path)


def load_baseline(run_dir: str, like: dict[str, Any]) -> dict[str, Any]:
    """A baseline run's analysis/corruption.json, checked to use the same images (split, n, seed, source)."""
    path = Path(run_dir) / "analysis" / "corruption.json"
    if not path.exists():
        raise RobustlabError(
            f"baseline {run_dir}: {path} not found; run `robustlab analyze {run_dir} --what corruption` "
            f"with the same settings first, or use baseline=alexnet for ImageNet-C."
        )
    base = json.loads(path.read_text())
    keys = ("n", "severities", "source", "split", "seed")
    differ = [k for k in keys if base.get(k) != like.get(k)]
    if differ:
        raise RobustlabError(
            f"baseline {path} was computed with other settings "
            f"({', '.join(f'{k}={base.get(k)!r} vs {like.get(k)!r}' for k in differ)})."
        )
    return base
