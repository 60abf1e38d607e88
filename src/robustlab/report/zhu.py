"""Report section `zhu`: Zhu, Zhang & Evans, worst-case MI and robust representations ([Zhu20], ICML 2020,
arXiv 2002.11798).

It reads the study's runs by role (ROLES) among the groups `groups`: the two encoders (`encoder_mi`, the
baseline representation; `encoder_wcmi`, the robust one), the downstream classifiers on the frozen encoders
(`{mi,wcmi}_{linear,mlp}_{std,at}`: representation, classifier head, standard or adversarial training) and
the end-to-end supervised baselines (`e2e_std`, `e2e_at`). It tabulates downstream accuracy, checks the
paper's claims against it, estimates RV and the robust-accuracy bound for the runs of `rv_roles` (cached in
each run's analysis/ directory) and draws the saliency maps.
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
from ..errors import RobustlabError
from .context import RunRecord, StudyContext, direction, paired_difference
from .markdown import bullets, header, pct, row
from .papers import paper_numbers
from .registry import SECTIONS
from .roles import Cast, reads_roles
from .sections import longest

REPS = {"mi": "baseline (MI)", "wcmi": "robust (worst-case MI)"}
ENCODERS = {"encoder_mi": "mi", "encoder_wcmi": "wcmi"}  # role -> representation
DOWNSTREAM = tuple(
    f"{rep}_{head}_{training}" for rep in REPS for head in ("linear", "mlp") for training in ("std", "at")
)
END_TO_END = ("e2e_std", "e2e_at")
ROLES = {
    "encoder_mi": "the baseline representation: an encoder trained by MI maximisation (method mi)",
    "encoder_wcmi": "the robust representation: an encoder trained by worst-case MI maximisation (method wcmi)",
    **{
        role: f"a {'standard' if role.endswith('std') else 'robust (adversarially trained)'} "
        f"{role.split('_')[1]} downstream classifier on the frozen {role.split('_')[0]} encoder"
        for role in DOWNSTREAM
    },
    "e2e_std": "the end-to-end supervised baseline of the same architecture, standard training",
    "e2e_at": "the end-to-end supervised baseline of the same architecture, adversarial training",
    "standard": "a supervised model whose RV and bound `rv_roles` may ask for",
    "pgd_at": "an adversarially trained supervised model whose RV and bound `rv_roles` may ask for",
}
METRIC_IMAGES = 200  # test images behind the saliency numbers (the figure shows `saliency_images` of them)


def _kind(role: str) -> str:
    """The downstream kind of a DOWNSTREAM role, e.g. 'robust, linear'."""
    _, head, training = role.split("_")
    return f"{'standard' if training == 'std' else 'robust'}, {head}"


def _vulnerability(ctx: StudyContext, record: RunRecord, options: dict[str, Any]) -> dict[str, Any]:
    meta = record.meta
    stamp = json.dumps([options, meta.get("config_fingerprint"), meta.get("epoch")], sort_keys=True, default=str)
    key = f"vulnerability_{options.get('layer', 'features')}_{hashlib.sha256(stamp.encode()).hexdigest()[:10]}"

    def compute() -> dict[str, Any]:
        actx = AnalysisContext(
            ctx.model(record),
            ctx.dataset(record),
            record.config.threat_model,
            record.run_dir,
            meta,
            ctx.device,
            quiet=ctx.quiet,
        )
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
    return (
        f"{kind} downstream: the robust representation's adversarial (worst-case) accuracy "
        f"{pct(rob.eval.worst_case)}% is **{adv}** the baseline representation's {pct(base.eval.worst_case)}% "
        f"(paper: higher); its natural accuracy {pct(rob.eval.clean)}% is {nat} {pct(base.eval.clean)}% "
        "(paper: higher)." + ("" if way > 0 else " **The paper's claim does not reproduce here.**")
    )


@SECTIONS.register("zhu")
@reads_roles(ROLES)
def zhu(
    ctx: StudyContext,
    groups: tuple[str, ...] = ("zhu", "main"),
    rv_roles: tuple[str, ...] = ("e2e_std", "e2e_at", "encoder_mi", "encoder_wcmi"),
    rv: dict[str, Any] | None = None,
    saliency_images: int = 10,
) -> str:
    """Downstream accuracy, the paper's claims against it, RV / bound of the `rv_roles` runs, saliency maps."""
    unknown = [role for role in rv_roles if role not in ROLES]
    if unknown:
        raise RobustlabError(f"zhu section: rv_roles {unknown} are not roles it reads; allowed: {', '.join(ROLES)}.")
    cast = ctx.cast(groups, dict.fromkeys([*ENCODERS, *DOWNSTREAM, *END_TO_END, *rv_roles]))
    lines = ["## Zhu et al.: worst-case mutual information and robust representations", "", *cast.note()]
    if not any(role in cast.runs for role in (*ENCODERS, *DOWNSTREAM, *END_TO_END)):
        return "\n".join(lines)  # none of the paper's runs: no RV of the supervised models alone either
    lines += _downstream_table(cast)
    lines += _rv_table(ctx, cast, rv_roles, dict(rv or {}))
    lines += _saliency(ctx, cast, saliency_images)
    return "\n".join(lines) + "\n"


def _downstream_table(cast: Cast) -> list[str]:
    downstream = {role: r for role in DOWNSTREAM if (r := cast.get(role)) is not None}
    if not downstream:
        return []
    first = next(iter(downstream.values()))
    pgd, cw = longest(list(first.eval.attacks), "pgd"), longest(list(first.eval.attacks), "cw")
    lines = []
    for role in ENCODERS:
        if (enc := cast.get(role)) is None:
            continue
        cfg = enc.config
        method = methods.create(cfg.method.name, threat=cfg.threat_model, **cfg.method.options)
        mi = enc.meta.get("metrics", {}).get("train_mi")
        lines.append(
            f"- encoder `{enc.label}` ({cfg.model.name}, {cfg.train.epochs} epochs; {method.describe()}): "
            "final training MI estimate " + (f"{mi:.2f} nats" if mi is not None else "–")
        )
    lines += [
        "",
        f"Accuracy (%) on the test split (n = {first.eval.n}) under {first.eval.threat}; *worst case* = no "
        f"attack of the suite ({', '.join(first.eval.suite)}) succeeds. Downstream classifiers are trained on "
        "the frozen encoder (labels are used only there); the robust downstream is PGD adversarial training "
        "through encoder and head in pixel space.",
        "",
        *header(["representation", "downstream", "run", "clean", pgd or "pgd", cw or "cw", "worst case"], "lllrrrr"),
    ]

    def accuracies(r: RunRecord) -> list[str]:
        attack = [pct(r.eval.attacks.get(name)) if name else "–" for name in (pgd, cw)]
        return [pct(r.eval.clean), *attack, pct(r.eval.worst_case)]

    for role, r in downstream.items():
        lines.append(
            row(REPS[role.split("_")[0]], f"{_kind(role)} ({r.config.method.name})", f"`{r.label}`", *accuracies(r))
        )
    end_to_end = [r for role in END_TO_END if (r := cast.get(role)) is not None]
    for r in end_to_end:
        lines.append(row("end-to-end supervised", r.config.method.name, f"`{r.label}`", *accuracies(r)))
    lines += [
        "",
        "**Against the paper's claims** (a difference counts only beyond two standard errors of the paired "
        "per-sample difference on this test set; one training seed per run, so the spread across seeds is "
        "not in it):",
        "",
    ]
    cells = {(role.split("_")[0], _kind(role)): r for role, r in downstream.items()}
    claims = [
        _representation_claim(kind, cells[("wcmi", kind)], cells[("mi", kind)])
        for kind in sorted({k for _, k in cells})
        if ("mi", kind) in cells and ("wcmi", kind) in cells
    ]
    robust = [r for role, r in downstream.items() if role.startswith("wcmi") and role.endswith("_at")]
    rob = max(robust, key=lambda r: r.eval.worst_case, default=None)
    e2e = cast.get("e2e_at")
    if rob is not None and e2e is not None:
        claims.append(_end_to_end_claim(rob, e2e))
    return lines + bullets(claims) + [""]


def _end_to_end_claim(rob: RunRecord, e2e: RunRecord) -> str:
    """The best robust downstream classifier on the robust representation against the end-to-end
    adversarially trained model (the paper: comparable, ≈ its CIFAR-10 number)."""
    paper = paper_numbers("zhu_robust_downstream")["adversarial_accuracy"]
    return (
        f"robust representation + robust downstream (`{rob.label}`) {pct(rob.eval.worst_case)}% vs the "
        f"end-to-end adversarially trained `{e2e.label}` of the same architecture {pct(e2e.eval.worst_case)}% "
        f'(paper, CIFAR-10: ≈{paper}%, "comparable"): {_verdict(rob, e2e, worst=True)[1]} it.'
    )


def _rv_table(ctx: StudyContext, cast: Cast, rv_roles: tuple[str, ...], options: dict[str, Any]) -> list[str]:
    runs = {role: r for role in rv_roles if (r := cast.get(role)) is not None}
    if not runs:
        return []
    rows = []
    for role, r in runs.items():
        res = _vulnerability(ctx, r, options)
        if role in ENCODERS:  # any downstream classifier counts: the best robust one trained on this encoder
            trained_on = [
                d
                for d_role in DOWNSTREAM
                if d_role.startswith(ENCODERS[role] + "_") and (d := cast.get(d_role)) is not None
            ]
            source, what = max(trained_on, key=lambda d: d.eval.worst_case, default=None), "best downstream"
        else:
            source, what = r, "the model itself"
        measured = (source.eval.worst_case, source.eval.n) if source is not None else None
        rows.append((r, res, measured, what if measured else ""))
    first = rows[0][1]
    s = first["settings"]
    critic = ", ".join(f"{k} {v}" for k, v in s["critic_options"].items())
    lines = [
        f"### Representation vulnerability and the bound on robust accuracy ({first['layer']} layer)",
        "",
        f"MI estimates in nats, mean ± std over {s['seeds']} critics (seeds), each a {s['critic']} critic "
        f"({critic}) trained with the {s['bound']} bound ({s['dv_variant']}) for {s['epochs']} epochs on "
        f"{s['n_train']} training images (batch {s['batch_size']}, Adam lr {s['lr']}) and evaluated on "
        f"{s['n_test']} test images; the worst case alternates the critic with batch-level "
        f"PGD-{s['attack_steps']} (step {s['attack_step']:.3g}) minimising the estimate, the normal case uses the "
        "same budget without it. RV = Î − Î_ε. Bound = (max(Î_ε, 0) + log 2) / log K, capped at 100%: MI is never "
        "negative, so a negative estimate (noise) counts as 0 in the bound; the Î_ε column shows the raw estimate "
        f"(assumptions: {first['bound_assumptions']}).",
        "",
        *header(
            [
                "run",
                "method",
                "Î(X; g(X))",
                "Î_ε",
                "RV",
                "robust-accuracy bound (%)",
                "measured worst-case accuracy (%)",
            ],
            "llrrrrr",
        ),
    ]
    for r, res, measured, what in rows:
        accuracy = pct(measured[0] if measured else None) + (f" ({what})" if what else "")
        lines.append(
            row(
                f"`{r.label}`",
                r.config.method.name,
                _spread(res["normal_mi"]),
                _spread(res["worst_mi"]),
                _spread(res["rv"]),
                _spread(res["robust_accuracy_bound"], 100, 1),
                accuracy,
            )
        )
    noise = max(max(res["normal_mi"]["std"], res["worst_mi"]["std"]) for _, res, _, _ in rows)
    lines += [
        "",
        f"Estimator noise: the largest std over seeds of a single estimate here is {noise:.2f} nats; "
        "estimates depend on the critic budget (they keep rising with more critic epochs), so only figures "
        "from the same budget are comparable. " + _rv_and_bound_notes([(r.label, res, m) for r, res, m, _ in rows]),
    ]
    return [*lines, ""]


def _spread(summary: dict[str, Any], scale: float = 1.0, digits: int = 2) -> str:
    """mean ± std over the critic seeds."""
    return f"{scale * summary['mean']:.{digits}f} ± {scale * summary['std']:.{digits}f}"


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
            kind = "one seed" if se is None else "beyond" if direction(res["rv"]["mean"], se) < 0 else "within"
            groups[kind].append(label)
    if not any(groups.values()):
        out.append("RV is ≥ 0 for every run.")
    if groups["beyond"]:
        out.append(
            "RV is below 0 beyond two standard errors over the critic seeds for "
            f"{', '.join(groups['beyond'])}: the worst-case estimate is above the normal-case one, which the "
            "true values cannot be (I_ε ≤ I), so these estimates are unreliable."
        )
    if groups["within"]:
        out.append(
            f"RV is below 0 for {', '.join(groups['within'])}, but within two standard errors over the critic "
            "seeds (noise)."
        )
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
        out.append(
            "The measured accuracy exceeds the estimated bound beyond two standard errors (critic seeds and "
            f"test points) for {', '.join(above[1])}: the plug-in estimate is not a guarantee (see "
            "assumptions)."
        )
    if above[0]:
        out.append(
            f"The measured accuracy is above the estimated bound for {', '.join(above[0])}, but within two "
            "standard errors (critic seeds and test points)."
        )
    if not above[0] and not above[1]:
        out.append("Every measured accuracy is at most its bound.")
    return " ".join(out)


def _saliency(ctx: StudyContext, cast: Cast, n: int) -> list[str]:
    chosen = {f"{REPS[rep].split(' ')[0]} rep": r for rep in REPS if (r := cast.get(f"{rep}_linear_std")) is not None}
    chosen |= {f"end-to-end {r.config.method.name}": r for role in END_TO_END if (r := cast.get(role)) is not None}
    if not chosen or n < 1:
        return []
    test = ctx.dataset(next(iter(chosen.values()))).test.head(METRIC_IMAGES).to(ctx.device)
    grads = {label: input_gradients(ctx.model(r), test.x, test.y) for label, r in chosen.items()}
    idx = first_per_class(test.y, n)
    path, rel = ctx.figure("zhu_saliency.png")
    saliency_grid(
        test.x[idx],
        {label: g[idx] for label, g in grads.items()},
        path,
        title="∇x of the true-class logit (red +, blue −; each map scaled to its largest magnitude)",
    )
    rows = [
        row(label, f"{float(alignment(test.x, g).mean()):.2f}", pct(float(background_share(test.x, g).mean()), 0))
        for label, g in grads.items()
    ]
    return [
        "### Saliency maps",
        "",
        "Input gradient of the true-class logit for one test image per class. For the standard linear downstream "
        "classifier on a frozen encoder this is J_g(x)ᵀ w_y, a saliency of the representation itself (paper: the "
        "robust representation's maps are less noisy and more interpretable). Two numbers instead of an eye: "
        "alignment |<x, ∇>| / (‖x‖‖∇‖) (Etmann et al.; higher = more image-like) and the share of ‖∇‖² on "
        f"background pixels (x ≤ 0.05; lower = less noise off the object), means over the first {len(test)} test "
        "images (one encoder per objective: small differences are noise).",
        "",
        *header(["model", "alignment", "background share (%)"], "lrr"),
        *rows,
        "",
        f"![saliency maps]({rel})",
        "",
    ]
