"""Report sections: `SECTIONS.register(name)(fn)` with fn(ctx: StudyContext, **options) -> markdown.

The study's `sections:` list picks them in order. This module holds the two every study has:
`robustness` (the Table-2-style comparison) and `training_curves`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..evaluate import EvalResult
from ..registry import Registry
from . import plots
from .context import StudyContext

SECTIONS: Registry[Callable[..., str]] = Registry("report section")


def autoattack_of(record) -> tuple[EvalResult, str] | None:
    """(evaluation, attack label) of the run's AutoAttack among its extra suites, if it has one."""
    for result in record.extra.values():
        for label in result.suite:
            if label.startswith("autoattack"):
                return result, label
    return None


@SECTIONS.register("robustness")
def robustness(ctx: StudyContext, group: str = "main", title: str = "Robustness (paper protocol)") -> str:
    """Rows = runs of `group`, columns = clean, FGSM, PGD-k, CW-k, per-sample worst case, AutoAttack
    (when the eval config has it as an extra suite) and the raised sanity flags."""
    records = [r for r in ctx.runs(group) if r.eval is not None]
    if not records:
        return ""
    first = records[0].eval
    aa = {r.label: autoattack_of(r) for r in records}
    has_aa = any(aa.values())
    columns: list[str] = []
    for r in records:
        columns += [c for c in r.eval.row() if c not in columns]
    head = columns + (["AutoAttack"] if has_aa else []) + ["flags"]
    table = ["| run | " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1) + "---|"]
    subset = False
    for r in records:
        row = r.eval.row()
        cells = [f"{100 * row[c]:.2f}" if c in row else "–" for c in columns]
        if has_aa:
            if aa[r.label]:
                res, label = aa[r.label]
                subset |= res.n < r.eval.n
                cells.append(f"{100 * res.attacks[label]:.2f}" + ("†" if res.n < r.eval.n else ""))
            else:
                cells.append("–")
        cells.append(", ".join(f["name"] for f in r.eval.flags if f["raised"]) or ("none" if r.eval.flags else "–"))
        table.append(f"| {r.label} | " + " | ".join(cells) + " |")
    lines = [f"## {title}", "",
             f"Accuracy (%) on the {records[0].config.eval.split} split (n = {first.n}) under {first.threat}; "
             f"iterative attacks use step {first.step:.4g}. Each attack runs on every clean-correct point; "
             f"*worst case* counts a point as robust only if no attack in the suite fools it."
             + (" *AutoAttack* is the `standard` cascade APGD-CE → APGD-T → FAB-T → Square (Croce & Hein 2020)." if has_aa else "")
             + " *flags* lists the sanity flags raised (see below).", "", "\n".join(table), ""]
    if subset:
        lines += ["† AutoAttack ran on the first points of the split only (its n is in the next table, which compares it "
                  "with the paper protocol on exactly those points).", ""]
    # the longest PGD and CW of the suite stand for it in the chart
    key_attacks = [max((a for a in first.suite if a.startswith(p + "-")), key=lambda a: int(a.split("-")[1]), default=None)
                   for p in ("pgd", "cw")]
    key_attacks = [a for a in key_attacks if a is not None]
    bars = {r.label: {"clean": 100 * r.eval.clean, **{a: 100 * r.eval.attacks[a] for a in key_attacks if a in r.eval.attacks},
                      "worst case": 100 * r.eval.worst_case, **autoattack_bars(r.eval, aa[r.label])} for r in records}
    path, rel = ctx.figure(f"robustness_{group}.png")
    plots.grouped_bars(bars, path, title=f"{ctx.study.name}: accuracy under {first.threat}")
    lines += [f"![accuracy per method]({rel})", ""]
    if has_aa:
        lines += [autoattack_table(records, aa), ""]
    lines += [flags_text(records), ""]
    lines += ["| run | method | model | selected epoch (of) | val clean | val PGD | train time |", "|---|---|---|---:|---:|---:|---:|"]
    for r in records:
        m = r.meta.get("metrics", {})
        vr = f"{100 * m['val_robust']:.1f}" if "val_robust" in m else "–"
        t = "reused" if r.reused else f"{r.train_seconds:.0f} s"
        lines.append(f"| {r.label} | {r.config.method.name} | {r.config.model.name} | {r.meta.get('epoch')} ({r.config.train.epochs}) "
                     f"| {100 * m.get('val_clean', float('nan')):.1f} | {vr} | {t} |")
    return "\n".join(lines) + "\n"


def autoattack_bars(paper: EvalResult, aa: tuple[EvalResult, str] | None) -> dict[str, float]:
    """AutoAttack's bar, and the paper worst case on the same points when AutoAttack ran on fewer."""
    if aa is None:
        return {}
    result, label = aa
    if result.n >= paper.n:
        return {"AutoAttack": 100 * result.attacks[label]}
    return {f"worst case ({result.n} pts)": 100 * paper.robust(result.n).mean(),
            f"AutoAttack ({result.n} pts)": 100 * result.attacks[label]}


def autoattack_table(records, aa) -> str:
    """AutoAttack beside the paper protocol's worst case on the same points, with the per-component
    (cumulative) robust accuracy, the per-sample disagreement and the time AutoAttack took."""
    comps: list[str] = []
    for r in records:
        if aa[r.label]:
            res, label = aa[r.label]
            comps += [c for c in res.stages.get(label, {}) if c not in comps]
    head = ["n", "paper worst case", "AutoAttack"] + [f"after {c}" for c in comps] + ["AA ≤ paper", "only paper breaks", "AA time"]
    lines = ["### AutoAttack beside the paper protocol", "",
             "On the same points: the paper protocol's per-sample worst case, AutoAttack's robust accuracy, the "
             "accuracy after each AutoAttack component (cumulative), and the number of points the paper protocol "
             "breaks but AutoAttack does not.", "",
             "| run | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    above = []
    for r in records:
        if not aa[r.label]:
            continue
        res, label = aa[r.label]
        n = min(res.n, r.eval.n)
        paper = r.eval.robust(n)
        ours = res.per_sample[label][:n]
        ok = ours.mean() <= paper.mean()
        if not ok:
            above.append(r.label)
        stage = res.stages.get(label, {})
        cells = [str(n), f"{100 * paper.mean():.2f}", f"{100 * ours.mean():.2f}"]
        cells += [f"{100 * stage[c]:.2f}" if c in stage else "–" for c in comps]
        cells += ["yes" if ok else "**no**", str(int((ours & ~paper).sum())), f"{res.seconds.get(label, 0.0):.1f} s"]
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"AutoAttack's robust accuracy is above the paper protocol's worst case for: {', '.join(above)}." if above else
                 "For every model AutoAttack's robust accuracy is at most the paper protocol's worst case on the same points.")
    return "\n".join(lines)


def flags_text(records) -> str:
    """Raised sanity flags with their one-line explanations, and what was checked."""
    raised = [(r.label, f) for r in records for f in r.eval.flags if f["raised"]]
    checked = {f["name"]: f for r in records for f in r.eval.flags if f["checked"]}
    if not checked:
        return ""
    lines = ["### Sanity flags", ""]
    if raised:
        for name in dict.fromkeys(f["name"] for _, f in raised):
            lines.append(f"- **{name}**: {checked[name]['explanation']}")
            lines += [f"  - {label}: {f['detail']}." for label, f in raised if f["name"] == name]
    else:
        lines.append("No sanity flag was raised for any model.")
    sizes = {name: sorted({f["n"] for r in records for f in r.eval.flags if f["name"] == name and f["checked"]}) for name in checked}
    lines += ["", "Checked for every model: " + "; ".join(f"{name} (n = {', '.join(map(str, sizes[name]))})" for name in checked) +
              ". The cheap checks use the first points of the split; `single_step` and `square` reuse the suites' results "
              "(Square from AutoAttack when it ran)."]
    return "\n".join(lines)


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
