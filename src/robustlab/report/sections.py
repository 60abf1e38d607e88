"""Report sections: `SECTIONS.register(name)(fn)` with fn(ctx: StudyContext, **options) -> markdown.

The study's `sections:` list picks them in order. This module holds the two every study has:
`robustness` (the Table-2-style comparison) and `training_curves`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..evaluate import markdown_table
from ..registry import Registry
from . import plots
from .context import StudyContext

SECTIONS: Registry[Callable[..., str]] = Registry("report section")


@SECTIONS.register("robustness")
def robustness(ctx: StudyContext, group: str = "main", title: str = "Robustness (paper protocol)") -> str:
    """Rows = runs of `group`, columns = clean, FGSM, PGD-k, CW-k, per-sample worst case."""
    records = [r for r in ctx.runs(group) if r.eval is not None]
    if not records:
        return ""
    first = records[0].eval
    table = markdown_table({r.label: r.eval for r in records})
    lines = [f"## {title}", "",
             f"Accuracy (%) on the {records[0].config.eval.split} split (n = {first.n}) under {first.threat}; "
             f"iterative attacks use step {first.step:.4g}. Each attack runs on every clean-correct point; "
             f"*worst case* counts a point as robust only if no attack in the suite fools it.", "", table]
    # the longest PGD and CW of the suite stand for it in the chart
    key_attacks = [max((a for a in first.suite if a.startswith(p + "-")), key=lambda a: int(a.split("-")[1]), default=None)
                   for p in ("pgd", "cw")]
    key_attacks = [a for a in key_attacks if a is not None]
    bars = {r.label: {"clean": 100 * r.eval.clean, **{a: 100 * r.eval.attacks[a] for a in key_attacks if a in r.eval.attacks},
                      "worst case": 100 * r.eval.worst_case} for r in records}
    path, rel = ctx.figure(f"robustness_{group}.png")
    plots.grouped_bars(bars, path, title=f"{ctx.study.name}: accuracy under {first.threat}")
    lines += ["", f"![accuracy per method]({rel})", ""]
    lines += ["| run | method | model | selected epoch (of) | val clean | val PGD | train time |", "|---|---|---|---:|---:|---:|---:|"]
    for r in records:
        m = r.meta.get("metrics", {})
        vr = f"{100 * m['val_robust']:.1f}" if "val_robust" in m else "–"
        t = "reused" if r.reused else f"{r.train_seconds:.0f} s"
        lines.append(f"| {r.label} | {r.config.method.name} | {r.config.model.name} | {r.meta.get('epoch')} ({r.config.train.epochs}) "
                     f"| {100 * m.get('val_clean', float('nan')):.1f} | {vr} | {t} |")
    return "\n".join(lines) + "\n"


@SECTIONS.register("training_curves")
def training_curves(ctx: StudyContext, group: str = "main") -> str:
    """Training loss, validation clean and validation PGD accuracy per epoch, one line per run."""
    series = {}
    for r in ctx.runs(group):
        h = r.history
        ep = [rec["epoch"] for rec in h]
        series[r.label] = {
            "loss": (ep, [rec.get("train_loss") for rec in h]),
            "val_clean": ([rec["epoch"] for rec in h if "val_clean" in rec], [100 * rec["val_clean"] for rec in h if "val_clean" in rec]),
            "val_robust": ([rec["epoch"] for rec in h if "val_robust" in rec], [100 * rec["val_robust"] for rec in h if "val_robust" in rec]),
        }
    if not series:
        return ""
    path, rel = ctx.figure(f"training_curves_{group}.png")
    select = ctx.runs(group)[0].config.train.select.attack
    plots.curves(series, [("loss", "training loss"), ("val_clean", "val clean acc (%)"), ("val_robust", f"val {select} acc (%)")], path)
    return ("## Training curves\n\n"
            f"Per epoch: the objective's training loss, and clean and {select} accuracy on the validation split "
            "(the split used for model selection).\n\n" f"![training curves]({rel})\n")
