"""Consistent and Inconsistent sets (Wu et al., Adaptive Adversarial Logits Pairing, arXiv 2005.11904, §2.2 and
§4.5: Tables 1 and 4, Figs. 4 and 11).

Every point is attacked once and falls in exactly one group:

- Inconsistent: clean-correct and adversarial-wrong (as the paper defines it);
- Consistent: clean-correct and adversarial-correct [inferred] the paper says "all correctly classified
  samples"; we read it as correct both clean and under attack;
- clean_wrong: the rest, so that the three groups partition the points.

Table 1 statistics per set: the average ground-truth confidence softmax(f(·))_y on the clean and on the
adversarial input, the classification loss (0.5 · CE(clean) + 0.5 · CE(adv), the ALP mix) and the ALP
loss ‖f(x) − f(x_adv)‖²₂. Table 4: the share of all points in the Consistent set. Fig. 11: clean vs
adversarial confidence per point, coloured by set. Fig. 4: the `alp_loss_by_set` training callback
records every point's ALP loss after each epoch and, when training ends, averages it per epoch over the
sets defined by the final model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import build as build_attack
from ..data import Split, batches
from ..data.npz import read_arrays, write_arrays
from ..methods.aalp import ground_truth_probability
from ..methods.alp import logit_pairing
from ..models import eval_mode
from ..rundir import write_text_atomic
from ..train import CALLBACKS, Callback
from .figures import pyplot, save_figure
from .registry import ANALYSES, AnalysisContext

SETS = ("consistent", "inconsistent", "clean_wrong")


def paired_outputs(
    model: nn.Module, split: Split, attack: Callable[..., torch.Tensor], *, batch_size: int = 500, seed: int = 0
) -> dict[str, np.ndarray]:
    """Per point (arrays of length N): clean_conf, adv_conf, ce_clean, ce_adv, alp, clean_correct, adv_correct.

    `attack(model, x, y, generator=...)` makes the adversarial examples; the model is evaluated in eval mode.
    """
    gen = torch.Generator(device=split.x.device).manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {}
    with eval_mode(model):
        for x, y in batches(split, batch_size):
            x_adv = attack(model, x, y, generator=gen)
            with torch.no_grad():
                lc, la = model(torch.cat([x, x_adv])).chunk(2)
            out = {
                "clean_conf": ground_truth_probability(lc, y),
                "adv_conf": ground_truth_probability(la, y),
                "ce_clean": F.cross_entropy(lc, y, reduction="none"),
                "ce_adv": F.cross_entropy(la, y, reduction="none"),
                "alp": logit_pairing(lc, la),
                "clean_correct": lc.argmax(1) == y,
                "adv_correct": la.argmax(1) == y,
            }
            for k, v in out.items():
                parts.setdefault(k, []).append(v.cpu())
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def set_labels(clean_correct: np.ndarray, adv_correct: np.ndarray) -> np.ndarray:
    """Index into SETS per point: 0 consistent, 1 inconsistent, 2 clean_wrong."""
    return np.where(clean_correct, np.where(adv_correct, 0, 1), 2)


def set_statistics(out: dict[str, np.ndarray]) -> dict[str, dict[str, float | int | None]]:
    """Table 1 and Table 4 per set: count, proportion (of all points), clean_conf, adv_conf, ce, alp (means)."""
    labels = set_labels(out["clean_correct"], out["adv_correct"])
    stats: dict[str, dict[str, float | int | None]] = {}
    for i, name in enumerate(SETS):
        sel = labels == i

        def mean(a: np.ndarray, sel: np.ndarray = sel) -> float | None:
            return float(a[sel].mean()) if sel.any() else None

        stats[name] = {
            "count": int(sel.sum()),
            "proportion": float(sel.mean()) if labels.size else 0.0,
            "clean_conf": mean(out["clean_conf"]),
            "adv_conf": mean(out["adv_conf"]),
            "ce": mean(0.5 * (out["ce_clean"] + out["ce_adv"])),
            "alp": mean(out["alp"]),
        }
    return stats


SET_COLORS = {"consistent": "tab:blue", "inconsistent": "tab:red", "clean_wrong": "0.6"}


def plot_confidence_scatter(panels: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    """Fig. 11: one panel per model, clean (x) vs adversarial (y) ground-truth confidence, coloured by set."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.5), squeeze=False)
    for ax, (name, out) in zip(axes[0], panels.items()):
        labels = set_labels(np.asarray(out["clean_correct"]), np.asarray(out["adv_correct"]))
        for i, s in enumerate(SETS):
            sel = labels == i
            ax.scatter(
                np.asarray(out["clean_conf"])[sel],
                np.asarray(out["adv_conf"])[sel],
                s=7,
                alpha=0.6,
                color=SET_COLORS[s],
                label=f"{s} ({int(sel.sum())})",
                linewidths=0,
            )
        ax.plot([0, 1], [0, 1], color="k", lw=0.8, ls="--")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("clean ground-truth confidence")
        ax.set_ylabel("adversarial ground-truth confidence")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7, loc="upper left", frameon=True, markerscale=2)
    save_figure(fig, path)


def plot_alp_by_set(curves: dict[str, dict[str, Any]], path: Path) -> None:
    """Fig. 4: one panel per run, the average ALP loss of the Consistent and Inconsistent sets per epoch."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(3.9 * len(curves), 3.3), squeeze=False)
    for ax, (name, c) in zip(axes[0], curves.items()):
        for s in ("consistent", "inconsistent"):
            ys = [np.nan if v is None else v for v in c[s]]
            ax.plot(c["epochs"], ys, color=SET_COLORS[s], lw=1.8, label=f"{s} (n = {c['counts'][s]})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean ALP loss ‖f(x) − f(x_adv)‖²")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    save_figure(fig, path)


@ANALYSES.register("consistency")
def run_consistency(
    ctx: AnalysisContext,
    split: Literal["test", "val", "train"] = "test",
    n: int | None = None,
    attack: str = "pgd-10",
    batch_size: int = 500,
) -> dict[str, Any]:
    """Table 1 / Table 4 statistics of the sets under `attack` on `n` points of `split`, per-point confidences,
    and the scatter plot figures/consistency_scatter.png."""
    data = ctx.dataset.split(split).head(n).to(ctx.device)
    atk = build_attack(attack, ctx.threat, seed=ctx.seed, num_classes=getattr(ctx.model, "num_classes", None))
    out = paired_outputs(ctx.model, data, atk, batch_size=batch_size, seed=ctx.seed)
    plot_confidence_scatter({ctx.run_dir.name: out}, ctx.figure_path("consistency_scatter.png"))
    return {
        "split": split,
        "n": len(data),
        "attack": attack,
        "sets": set_statistics(out),
        **{k: np.round(out[k], 5).tolist() for k in ("clean_conf", "adv_conf")},
        **{k: out[k].tolist() for k in ("clean_correct", "adv_correct")},
    }


@CALLBACKS.register("alp_loss_by_set")
class ALPLossBySet(Callback):
    """After every epoch, the ALP loss of each of `n` points of `split` (eval mode) under `attack` (default:
    the method's training attack, else PGD-10); at the end, its per-epoch average over the Consistent and
    Inconsistent sets of the final model, written to RUN/analysis/alp_loss_by_set.json (Fig. 4).

    The points use the validation split by default, so the test split stays untouched during training
    (the paper used its test set). Per-point values are kept in RUN/analysis/alp_loss_by_set.npz so that
    a resumed run continues the record.
    """

    def __init__(
        self,
        split: Literal["val", "test"] = "val",
        n: int | None = None,
        attack: str | None = None,
        batch_size: int = 500,
        seed: int = 0,
    ):
        self.split, self.n, self.attack_spec, self.batch_size, self.seed = split, n, attack, batch_size, seed
        self.rows: dict[str, list[np.ndarray]] = {}

    def _paths(self, trainer) -> tuple[Path, Path]:
        d = trainer.run_dir / "analysis"
        d.mkdir(parents=True, exist_ok=True)
        return d / "alp_loss_by_set.npz", d / "alp_loss_by_set.json"

    def on_train_start(self, trainer) -> None:
        self.points = trainer.dataset.split(self.split).head(self.n).to(trainer.device)
        if self.attack_spec is not None or trainer.method.train_attack is None:
            self.attack = build_attack(
                self.attack_spec or "pgd-10", trainer.threat, seed=self.seed, num_classes=trainer.dataset.num_classes
            )
        else:
            self.attack = trainer.method.train_attack
        keys = ("alp", "clean_correct", "adv_correct")
        self.rows = {k: [] for k in keys}
        store, _ = self._paths(trainer)
        if trainer.epoch > 0 and store.exists():
            saved = read_arrays(store)
            self.rows = {k: list(saved[k][: trainer.epoch]) for k in keys}

    def on_epoch_end(self, trainer, epoch, record) -> dict[str, Any]:
        out = paired_outputs(trainer.model, self.points, self.attack, batch_size=self.batch_size, seed=self.seed)
        for k in self.rows:
            self.rows[k].append(out[k])
        store, _ = self._paths(trainer)
        write_arrays(store, {k: np.stack(v) for k, v in self.rows.items()})
        return {f"{self.split}_alp": float(out["alp"].mean())}

    def on_train_end(self, trainer) -> None:
        if not self.rows.get("alp"):
            return
        alp = np.stack(self.rows["alp"])
        labels = set_labels(self.rows["clean_correct"][-1], self.rows["adv_correct"][-1])
        result: dict[str, Any] = {
            "split": self.split,
            "n": int(alp.shape[1]),
            "attack": repr(self.attack),
            "epochs": list(range(1, alp.shape[0] + 1)),
            "counts": {},
        }
        for i, name in enumerate(SETS[:2]):
            sel = labels == i
            result["counts"][name] = int(sel.sum())
            result[name] = [float(v) for v in alp[:, sel].mean(1)] if sel.any() else [None] * alp.shape[0]
        _, path = self._paths(trainer)
        write_text_atomic(path, json.dumps(result, indent=2))
