"""Report section `zhu`: Zhu, Zhang & Evans (ICML 2020), worst-case MI and robust representations.

It reads the study's runs of `group` by their configs: encoder runs (method `mi` = the baseline
representation, `wcmi` = the robust one), downstream runs (an `init_from` callback naming an encoder
run; method `standard` = standard downstream, any other = robust downstream) and end-to-end runs
(supervised, encoder not frozen). It then tabulates downstream accuracy, checks the paper's claims
against it, estimates RV and the robust-accuracy bound for `rv_runs` (cached in each run's
analysis/ directory) and draws the saliency maps.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

from .. import methods
from ..analysis import ANALYSES, AnalysisContext
from ..analysis.saliency import alignment, background_share, first_per_class, input_gradients, saliency_grid
from .context import RunRecord, StudyContext, direction, paired_difference
from .sections import SECTIONS

REPS = {"mi": "baseline (MI)", "wcmi": "robust (worst-case MI)"}
METRIC_IMAGES = 200  # test images behind the saliency numbers (the figure shows `saliency_images` of them)


def _encoder_label(record: RunRecord) -> str | None:
    for cb in record.config.callbacks:
        if cb.name == "init_from":
            return str(cb.options.get("run"))
    return None


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _strongest(record: RunRecord, prefix: str) -> str | None:
    """The suite's attack `prefix-k` with the most steps (e.g. pgd-20)."""
    names = [a for a in record.eval.attacks if a.startswith(prefix + "-")]
    return max(names, key=lambda a: int(a.split("-")[1]), default=None)


def _vulnerability(ctx: StudyContext, record: RunRecord, options: dict[str, Any]) -> dict[str, Any]:
    meta = record.meta
    stamp = json.dumps([options, meta.get("config_fingerprint"), meta.get("epoch")], sort_keys=True, default=str)
    key = f"vulnerability_{options.get('layer', 'features')}_{hashlib.sha256(stamp.encode()).hexdigest()[:10]}"

    def compute() -> dict[str, Any]:
        actx = AnalysisContext(ctx.model(record), ctx.dataset(record), record.config.threat_model, record.run_dir, meta,
                               ctx.device, quiet=ctx.quiet)
        return ANALYSES.create("vulnerability", actx, **options)

    return ctx.cached(record, key, compute)


def _correct(record: RunRecord, worst: bool) -> np.ndarray:
    """Per test sample: correct on the clean input, or (worst) robust to every attack of the suite."""
    per = record.eval.per_sample
    return np.logical_and.reduce(list(per.values())) if worst else per["clean"]


def _verdict(a: RunRecord, b: RunRecord, worst: bool) -> tuple[int, str]:
    """How run a compares with run b on the same test points: the direction of the paired difference
    (`direction`) and the words 'higher than' / 'lower than' / 'within noise (2 s.e.) of', with the difference."""
    mean, se = paired_difference(_correct(a, worst), _correct(b, worst))
    way = direction(mean, se)
    word = {1: "higher than", -1: "lower than", 0: "within noise (2 s.e.) of"}[way]
    return way, f"{word} ({mean:+.1f} ± {se:.1f} points)"


def _representation_claim(kind: str, rob: RunRecord, base: RunRecord) -> str:
    """The paper's claim for one downstream kind: the robust representation beats the baseline one in
    adversarial (worst-case) and natural accuracy; it reproduces only when the adversarial gain is beyond noise."""
    (way, adv), (_, nat) = _verdict(rob, base, worst=True), _verdict(rob, base, worst=False)
    return (f"- {kind} downstream: the robust representation's adversarial (worst-case) accuracy "
            f"{_pct(rob.eval.worst_case)}% is **{adv}** the baseline representation's {_pct(base.eval.worst_case)}% "
            f"(paper: higher); its natural accuracy {_pct(rob.eval.clean)}% is {nat} {_pct(base.eval.clean)}% (paper: higher)."
            + ("" if way > 0 else " **The paper's claim does not reproduce here.**"))


@SECTIONS.register("zhu")
def zhu(ctx: StudyContext, group: str = "zhu", rv_runs: list[str] = ("standard", "pgd_at"),
        rv: dict[str, Any] | None = None, saliency_images: int = 10) -> str:
    """Downstream accuracy table, the paper's claims against it, RV / bound table, saliency maps."""
    records = ctx.runs(group)
    if not records:
        return ""
    encoders = {r.label: r for r in ctx.records if r.config.method.name in REPS}  # of any group
    downstream = [r for r in records if _encoder_label(r) in encoders and r.eval is not None]
    end_to_end = [r for r in records if r.label not in encoders and _encoder_label(r) is None and r.eval is not None]
    lines = ["## Zhu et al.: worst-case mutual information and robust representations", ""]
    lines += _downstream_table(ctx, encoders, downstream, end_to_end)
    lines += _rv_table(ctx, encoders, downstream, rv_runs, dict(rv or {}))
    lines += _saliency(ctx, encoders, downstream, end_to_end, saliency_images)
    return "\n".join(lines) + "\n"


def _downstream_table(ctx: StudyContext, encoders: dict[str, RunRecord], downstream: list[RunRecord],
                      end_to_end: list[RunRecord]) -> list[str]:
    if not downstream:
        return []
    first = downstream[0]
    pgd, cw = _strongest(first, "pgd"), _strongest(first, "cw")
    n = first.eval.n
    lines = []
    for label, enc in encoders.items():
        cfg = enc.config
        method = methods.create(cfg.method.name, threat=cfg.threat_model, **cfg.method.options)
        mi = enc.meta.get("metrics", {}).get("train_mi")
        lines.append(f"- encoder `{label}` ({cfg.model.name}, {cfg.train.epochs} epochs; {method.describe()}): final training "
                     f"MI estimate " + (f"{mi:.2f} nats" if mi is not None else "–"))
    lines += ["", f"Accuracy (%) on the test split (n = {n}) under {first.eval.threat}; *worst case* = no attack of the suite "
              f"({', '.join(first.eval.suite)}) succeeds. Downstream classifiers are trained on the frozen encoder (labels are "
              f"used only there); the robust downstream is PGD adversarial training through encoder and head in pixel space.", "",
              f"| representation | downstream | run | clean | {pgd or 'pgd'} | {cw or 'cw'} | worst case |", "|---|---|---|---:|---:|---:|---:|"]
    cells: dict[tuple[str, str], RunRecord] = {}
    for r in downstream:
        rep = encoders[_encoder_label(r)].config.method.name
        kind = f"{'standard' if r.config.method.name == 'standard' else 'robust'}, {r.config.model.options.get('classifier', 'linear')}"
        cells[(rep, kind)] = r
        lines.append(f"| {REPS[rep]} | {kind} ({r.config.method.name}) | `{r.label}` | {_pct(r.eval.clean)} | "
                     f"{_pct(r.eval.attacks.get(pgd))} | {_pct(r.eval.attacks.get(cw))} | {_pct(r.eval.worst_case)} |")
    for r in end_to_end:
        lines.append(f"| end-to-end supervised | {r.config.method.name} | `{r.label}` | {_pct(r.eval.clean)} | "
                     f"{_pct(r.eval.attacks.get(pgd))} | {_pct(r.eval.attacks.get(cw))} | {_pct(r.eval.worst_case)} |")
    lines += ["", "**Against the paper's claims** (a difference counts only beyond two standard errors of the paired "
              "per-sample difference on this test set; one training seed per run, so the spread across seeds is not in it):", ""]
    for kind in sorted({k for _, k in cells}):
        base, rob = cells.get(("mi", kind)), cells.get(("wcmi", kind))
        if base is None or rob is None:
            continue
        lines.append(_representation_claim(kind, rob, base))
    robust = [r for (rep, kind), r in cells.items() if rep == "wcmi" and kind.startswith("robust")]
    rob = max(robust, key=lambda r: r.eval.worst_case, default=None)
    for r in end_to_end:
        if rob is not None and r.config.method.name != "standard":
            lines.append(f"- robust representation + robust downstream (`{rob.label}`) {_pct(rob.eval.worst_case)}% vs the end-to-end "
                         f"adversarially trained `{r.label}` of the same architecture {_pct(r.eval.worst_case)}% "
                         f"(paper, CIFAR-10: ≈31%, \"comparable\"): {_verdict(rob, r, worst=True)[1]} it.")
    return lines + [""]


def _rv_table(ctx: StudyContext, encoders: dict[str, RunRecord], downstream: list[RunRecord], rv_runs: list[str],
              options: dict[str, Any]) -> list[str]:
    known = {r.label: r for r in ctx.records}
    runs = [known[label] for label in rv_runs if label in known]
    if not runs:
        return []
    rows = []
    for r in runs:
        res = _vulnerability(ctx, r, options)
        if r.label in encoders:  # any downstream classifier counts: the best robust one trained on this encoder
            best = max((d for d in downstream if _encoder_label(d) == r.label), key=lambda d: d.eval.worst_case, default=None)
            source, what = best, "best downstream"
        else:
            source, what = r, "the model itself"
        measured = (source.eval.worst_case, source.eval.n) if source is not None and source.eval is not None else None
        rows.append((r, res, measured, what if measured else ""))
    s = rows[0][1]["settings"]
    lines = [f"### Representation vulnerability and the bound on robust accuracy ({rows[0][1]['layer']} layer)", "",
             f"MI estimates in nats, mean ± std over {s['seeds']} critics (seeds), each a {s['critic']} critic "
             f"({', '.join(f'{k} {v}' for k, v in s['critic_options'].items())}) trained with the {s['bound']} bound "
             f"({s['dv_variant']}) for {s['epochs']} epochs on {s['n_train']} training images (batch {s['batch_size']}, "
             f"Adam lr {s['lr']}) and evaluated on {s['n_test']} test images; the worst case alternates the critic with "
             f"batch-level PGD-{s['attack_steps']} (step {s['attack_step']:.3g}) minimising the estimate, the normal case "
             f"uses the same budget without it. RV = Î − Î_ε. Bound = (max(Î_ε, 0) + log 2) / log K, capped at 100%: MI is "
             f"never negative, so a negative estimate (noise) counts as 0 in the bound; the Î_ε column shows the raw "
             f"estimate (assumptions: {rows[0][1]['bound_assumptions']}).", "",
             "| run | method | Î(X; g(X)) | Î_ε | RV | robust-accuracy bound (%) | measured worst-case accuracy (%) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r, res, measured, what in rows:
        f = lambda k, scale=1.0, d=2: f"{scale * res[k]['mean']:.{d}f} ± {scale * res[k]['std']:.{d}f}"  # noqa: E731
        lines.append(f"| `{r.label}` | {r.config.method.name} | {f('normal_mi')} | {f('worst_mi')} | {f('rv')} | "
                     f"{f('robust_accuracy_bound', 100, 1)} | {_pct(measured[0] if measured else None)}{f' ({what})' if what else ''} |")
    noise = max(max(res["normal_mi"]["std"], res["worst_mi"]["std"]) for _, res, _, _ in rows)
    lines += ["", f"Estimator noise: the largest std over seeds of a single estimate here is {noise:.2f} nats; estimates "
              f"depend on the critic budget (they keep rising with more critic epochs), so only figures from the same "
              f"budget are comparable. " + _rv_and_bound_notes([(r.label, res, m) for r, res, m, _ in rows])]
    return lines + [""]


def _seed_se(summary: dict[str, Any]) -> float | None:
    """Standard error of a mean over critic seeds; None for a single seed (no noise estimate)."""
    k = len(summary["values"])
    return summary["std"] / math.sqrt(k) if k > 1 else None


def _rv_and_bound_notes(rows: list[tuple[str, dict[str, Any], tuple[float, int] | None]]) -> str:
    """What the RV / bound table says, per (label, vulnerability result, (measured accuracy, its n) or None):
    whether RV is below 0 beyond two standard errors over the critic seeds (the true RV cannot be: I_ε ≤ I),
    and whether a measured accuracy is above its bound beyond the noise of both."""
    out = []
    groups: dict[str, list[str]] = {"beyond": [], "within": [], "one seed": []}
    for label, res, _ in rows:
        se = _seed_se(res["rv"])
        if res["rv"]["mean"] < 0:
            groups["one seed" if se is None else "beyond" if direction(res["rv"]["mean"], se) < 0 else "within"].append(label)
    if not any(groups.values()):
        out.append("RV is ≥ 0 for every run.")
    if groups["beyond"]:
        out.append(f"RV is below 0 beyond two standard errors over the critic seeds for {', '.join(groups['beyond'])}: the "
                   "worst-case estimate is above the normal-case one, which the true values cannot be (I_ε ≤ I), so these "
                   "estimates are unreliable.")
    if groups["within"]:
        out.append(f"RV is below 0 for {', '.join(groups['within'])}, but within two standard errors over the critic seeds (noise).")
    if groups["one seed"]:
        out.append(f"RV is below 0 for {', '.join(groups['one seed'])} (one critic seed, so no noise estimate).")
    above: dict[int, list[str]] = {1: [], 0: []}
    for label, res, measured in rows:
        bound = res["robust_accuracy_bound"]
        if measured is None or measured[0] <= bound["mean"]:
            continue
        acc, n = measured
        se = math.hypot(_seed_se(bound) or 0.0, math.sqrt(acc * (1 - acc) / max(n, 1)))
        above[direction(acc - bound["mean"], se)].append(label)  # 0 or 1: acc is above the bound here
    if above[1]:
        out.append(f"The measured accuracy exceeds the estimated bound beyond two standard errors (critic seeds and test "
                   f"points) for {', '.join(above[1])}: the plug-in estimate is not a guarantee (see assumptions).")
    if above[0]:
        out.append(f"The measured accuracy is above the estimated bound for {', '.join(above[0])}, but within two standard "
                   "errors (critic seeds and test points).")
    if not above[0] and not above[1]:
        out.append("Every measured accuracy is at most its bound.")
    return " ".join(out)


def _saliency(ctx: StudyContext, encoders: dict[str, RunRecord], downstream: list[RunRecord], end_to_end: list[RunRecord],
              n: int) -> list[str]:
    chosen = {f"{REPS[encoders[_encoder_label(r)].config.method.name].split(' ')[0]} rep": r
              for r in downstream if r.config.method.name == "standard" and r.config.model.options.get("classifier", "linear") == "linear"}
    chosen |= {f"end-to-end {r.config.method.name}": r for r in end_to_end}
    if not chosen or n < 1:
        return []
    test = ctx.dataset(next(iter(chosen.values()))).test.head(METRIC_IMAGES).to(ctx.device)
    grads = {label: input_gradients(ctx.model(r), test.x, test.y) for label, r in chosen.items()}
    idx = first_per_class(test.y, n)
    path, rel = ctx.figure("zhu_saliency.png")
    saliency_grid(test.x[idx], {label: g[idx] for label, g in grads.items()}, path,
                  title="∇x of the true-class logit (red +, blue −; each map scaled to its largest magnitude)")
    rows = [f"| {label} | {float(alignment(test.x, g).mean()):.2f} | {100 * float(background_share(test.x, g).mean()):.0f} |"
            for label, g in grads.items()]
    return ["### Saliency maps", "",
            "Input gradient of the true-class logit for one test image per class. For the standard linear downstream "
            "classifier on a frozen encoder this is J_g(x)ᵀ w_y, a saliency of the representation itself (paper: the "
            "robust representation's maps are less noisy and more interpretable). Two numbers instead of an eye: "
            "alignment |<x, ∇>| / (‖x‖‖∇‖) (Etmann et al.; higher = more image-like) and the share of ‖∇‖² on "
            f"background pixels (x ≤ 0.05; lower = less noise off the object), means over the first {len(test)} test "
            "images (one encoder per objective: small differences are noise).", "",
            "| model | alignment | background share (%) |", "|---|---:|---:|", *rows, "",
            f"![saliency maps]({rel})", ""]
