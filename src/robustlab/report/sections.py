"""The two sections every study has: `robustness` (the Table-2-style comparison) and `training_curves`.

A section is `SECTIONS.register(name)(fn)` with fn(ctx: StudyContext, **options) -> markdown (report/registry.py);
the study's `sections:` list picks them in order.
"""

from __future__ import annotations

from typing import Any

from ..evaluate import EvalResult
from . import plots
from .context import StudyContext
from .markdown import header, pct, row
from .registry import SECTIONS

AUTOATTACK = " *AutoAttack* is the `standard` cascade APGD-CE → APGD-T → FAB-T → Square (Croce & Hein 2020)."


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
    records = list(ctx.runs(group))
    if not records:
        return ""
    first = records[0].eval
    aa = {r.label: autoattack_of(r) for r in records}
    has_aa = any(aa.values())
    columns: list[str] = []
    for r in records:
        columns += [c for c in r.eval.row() if c not in columns]
    head = columns + (["AutoAttack"] if has_aa else []) + ["flags"]
    table = header(["run", *head], "l" + "r" * (len(head) - 1) + "l")
    subset = False
    for r in records:
        accuracy = r.eval.row()
        cells = [pct(accuracy.get(c), 2) for c in columns]
        if has_aa:
            found = aa[r.label]
            if found:
                res, label = found
                subset |= res.n < r.eval.n
                cells.append(pct(res.attacks[label], 2) + ("†" if res.n < r.eval.n else ""))
            else:
                cells.append("–")
        cells.append(", ".join(f["name"] for f in r.eval.flags if f["raised"]) or ("none" if r.eval.flags else "–"))
        table.append(row(r.label, *cells))
    lines = [
        f"## {title}",
        "",
        f"Accuracy (%) on the {records[0].config.eval.split} split (n = {first.n}) under {first.threat}; "
        f"iterative attacks use step {first.step:.4g}. Each attack runs on every clean-correct point; "
        f"*worst case* counts a point as robust only if no attack in the suite fools it."
        + (AUTOATTACK if has_aa else "")
        + " *flags* lists the sanity flags raised (see below).",
        "",
        "\n".join(table),
        "",
    ]
    if subset:
        lines += [
            "† AutoAttack ran on the first points of the split only (its n is in the next table, which "
            "compares it with the paper protocol on exactly those points).",
            "",
        ]
    key_attacks = [a for p in ("pgd", "cw") if (a := longest(first.suite, p)) is not None]  # they stand for the suite
    bars = {
        r.label: {
            "clean": 100 * r.eval.clean,
            **{a: 100 * r.eval.attacks[a] for a in key_attacks if a in r.eval.attacks},
            "worst case": 100 * r.eval.worst_case,
            **autoattack_bars(r.eval, aa[r.label]),
        }
        for r in records
    }
    path, rel = ctx.figure(f"robustness_{group}.png")
    plots.grouped_bars(bars, path, title=f"{ctx.study.name}: accuracy under {first.threat}")
    lines += [f"![accuracy per method]({rel})", ""]
    if has_aa:
        lines += [autoattack_table(records, aa), ""]
    lines += [flags_text(records), ""]
    lines += header(["run", "method", "model", "selected epoch (of)", "val clean", "val PGD", "train time"], "lllrrrr")
    for r in records:
        m = r.meta.get("metrics", {})
        epoch = "outside model" if r.outside else f"{r.meta.get('epoch')} ({r.config.train.epochs})"
        lines.append(
            row(
                r.label,
                r.config.method.name,
                r.config.model.name,
                epoch,
                pct(m.get("val_clean")),
                pct(m.get("val_robust")),
                "–" if r.outside else "reused" if r.reused else f"{r.train_seconds:.0f} s",
            )
        )
    return "\n".join(lines) + "\n"


def by_steps(suite: list[str], prefix: str) -> list[str]:
    """The suite's `prefix-k` attacks, fewest steps first (pgd-10 … pgd-100 in the paper suite)."""
    steps = [a for a in suite if a.startswith(prefix + "-") and a.split("-")[1].isdigit()]
    return sorted(steps, key=lambda a: int(a.split("-")[1]))


def longest(suite: list[str], prefix: str) -> str | None:
    """The suite's `prefix-k` attack with the most steps, if it has one."""
    return next(reversed(by_steps(suite, prefix)), None)


def autoattack_bars(paper: EvalResult, aa: tuple[EvalResult, str] | None) -> dict[str, float]:
    """AutoAttack's bar, and the paper worst case on the same points when AutoAttack ran on fewer."""
    if aa is None:
        return {}
    result, label = aa
    if result.n >= paper.n:
        return {"AutoAttack": 100 * result.attacks[label]}
    return {
        f"worst case ({result.n} pts)": 100 * paper.robust(result.n).mean(),
        f"AutoAttack ({result.n} pts)": 100 * result.attacks[label],
    }


def autoattack_table(records, aa) -> str:
    """AutoAttack beside the paper protocol's worst case on the same points, with the per-component
    (cumulative) robust accuracy, the per-sample disagreement and the time AutoAttack took."""
    comps: list[str] = []
    for r in records:
        if aa[r.label]:
            res, label = aa[r.label]
            comps += [c for c in res.stages.get(label, {}) if c not in comps]
    head = [
        "n",
        "paper worst case",
        "AutoAttack",
        *(f"after {c}" for c in comps),
        "AA ≤ paper",
        "only paper breaks",
        "AA time",
    ]
    lines = [
        "### AutoAttack beside the paper protocol",
        "",
        "On the same points: the paper protocol's per-sample worst case, AutoAttack's robust accuracy, the "
        "accuracy after each AutoAttack component (cumulative), and the number of points the paper protocol "
        "breaks but AutoAttack does not.",
        "",
        *header(["run", *head], "l" + "r" * len(head)),
    ]
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
        lines.append(
            row(
                r.label,
                n,
                pct(paper.mean(), 2),
                pct(ours.mean(), 2),
                *(pct(stage.get(c), 2) for c in comps),
                "yes" if ok else "**no**",
                int((ours & ~paper).sum()),
                f"{res.seconds.get(label, 0.0):.1f} s",
            )
        )
    lines.append("")
    lines.append(
        f"AutoAttack's robust accuracy is above the paper protocol's worst case for: {', '.join(above)}."
        if above
        else "For every model AutoAttack's robust accuracy is at most the paper protocol's worst "
        "case on the same points."
    )
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
        lines.append("No sanity flag was raised for any model of this table.")

    def sizes(name: str) -> str:
        return ", ".join(
            map(str, sorted({f["n"] for r in records for f in r.eval.flags if f["name"] == name and f["checked"]}))
        )

    lines += [
        "",
        "Checked for every model: "
        + "; ".join(f"{name} (n = {sizes(name)})" for name in checked)
        + ". The cheap checks use the first points of the split; `single_step` and `square` reuse the suites' "
        "results (Square from AutoAttack when it ran).",
    ]
    return "\n".join(lines)


@SECTIONS.register("training_curves")
def training_curves(ctx: StudyContext, group: str = "main") -> str:
    """Training loss, validation clean and validation PGD accuracy per epoch, one line per run."""
    series: dict[str, dict[str, tuple[list[Any], list[Any]]]] = {}
    for r in ctx.runs(group):
        if r.outside is not None:  # trained elsewhere: no history
            continue
        h = r.history
        series[r.label] = {
            "loss": ([rec["epoch"] for rec in h], [rec.get("train_loss") for rec in h]),
            "val_clean": _percent_curve(h, "val_clean"),
            "val_robust": _percent_curve(h, "val_robust"),
        }
    if not series:
        return ""
    path, rel = ctx.figure(f"training_curves_{group}.png")
    select = ctx.runs(group)[0].config.train.select.attack
    plots.curves(
        series,
        [("loss", "training loss"), ("val_clean", "val clean acc (%)"), ("val_robust", f"val {select} acc (%)")],
        path,
    )
    return (
        "## Training curves\n\n"
        f"Per epoch: the objective's training loss, and clean and {select} accuracy on the validation split "
        f"(the split used for model selection).\n\n![training curves]({rel})\n"
    )


def _percent_curve(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values in %) of the epochs that recorded `key`."""
    return [rec["epoch"] for rec in history if key in rec], [100 * rec[key] for rec in history if key in rec]
