"""Report section `shi`: Shi et al., Understanding Adversarial Behavior of DNNs by Disentangling Non-Robust
and Robust Components in Performance Metric ([Shi], arXiv 1906.02494) — Fisher tracking curves, the CCKL
decomposition per model, the capacity table, and what our runs say about the paper's claims.

Runs whose metrics.jsonl holds `track_*` keys (the `fisher_tracking` callback) give the curves; the claims
on them read the tracked runs of the ROLES in `groups`. The runs of `capacity_group` give the capacity
table, and its claims compare them by their model config (VGG13 variant, ResNet depth), which is what those
claims are about. Every one of them gets the `fisher` and `cckl` analyses at its selected checkpoint (cached in
its analysis/ directory under a key naming the options).
"""

from __future__ import annotations

import itertools
import math
import os

from . import plots
from .context import RunRecord, StudyContext, direction, paired_difference
from .markdown import bullets, header, pct, row, ticked
from .papers import paper_numbers
from .registry import SECTIONS
from .roles import reads_roles
from .sections import longest

ROLES = {
    "standard": "natural training with tracking: Fig. 3, and the baseline of Fig. 4",
    "pgd_at": "PGD-AT with tracking: Fig. 4",
    "trades": "TRADES with tracking: Fig. 4",
}
TRACKING = (
    ("track_cckl", "CCKL (all pairs)"),
    ("track_cckl_sampled", "CCKL (sampled pairs)"),
    ("track_cckl_fisher", "½ΔᵀFΔ (non-robust)"),
    ("track_cckl_remainder", "remainder (robust)"),
    ("track_cckl_bound", "label-JS lower bound"),
)


def _num(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def _model_name(record: RunRecord) -> str:
    m = record.config.model
    opts = ", ".join(f"{k}={v}" for k, v in m.options.items())
    return f"{m.name}({opts})" if opts else m.name


@SECTIONS.register("shi")
@reads_roles(ROLES)
def shi_section(
    ctx: StudyContext,
    groups: tuple[str, ...] = ("main",),
    capacity_group: str = "shi_capacity",
    fisher_n: int = 512,
    eps: tuple[float, ...] = (0.01, 1.0),
    anchors: int = 64,
    partners: int = 256,
) -> str:
    """Shi et al.: tracking curves, decomposition table, Fisher attack check, capacity table, claims."""
    tracked = [r for r in ctx.records if any("track_fisher_fro" in h for h in r.history)]
    capacity = ctx.runs(capacity_group)
    cast = ctx.cast(groups, ROLES)
    lines = [
        "## Shi et al.: Fisher information, CCKL and its non-robust / robust components (arXiv 1906.02494)",
        "",
        *cast.note(),
    ]
    untracked = [r.label for r in cast.runs.values() if r not in tracked]
    if untracked:
        lines += [
            f"Runs with a role here but no tracking curves (callback `fisher_tracking`): {ticked(untracked)}; "
            "the claims on the curves leave them out.",
            "",
        ]
    if not tracked and not capacity:
        return "\n".join(lines)
    lines += [
        "Input Fisher F(x) = Jᵀ(diag p − ppᵀ)J of the softmax output w.r.t. the [0, 1] pixels, computed exactly "
        "from K×K matrices (trace, Frobenius and spectral norm — the paper plots only the Frobenius norm, "
        "calling the spectral norm infeasible). CCKL = mean KL(p_i ‖ p_j) over all ordered test pairs of "
        "different classes; its non-robust component is the mean quadratic Fisher term ½ΔᵀF(x_i)Δ "
        "(Δ = x_j − x_i), the robust component the remainder (estimated over seeded pairs). Formulas and "
        "derivations: docs/fisher_cckl.md.",
        "",
    ]
    roles = {role: r for role, r in cast.runs.items() if r in tracked}
    claims: list[str] = []
    if tracked:
        lines += _tracking(ctx, tracked, roles.get("standard"), claims)
    analysed = tracked + [r for r in capacity if r not in tracked]
    fisher = {r.label: ctx.analysis(r, "fisher", n=fisher_n, eps=list(eps)) for r in analysed}
    cckl = {r.label: ctx.analysis(r, "cckl", anchors=anchors, partners=partners) for r in analysed}
    lines += _decomposition(analysed, fisher, cckl)
    links = ", ".join(
        f"[{r.label}]({os.path.relpath(r.run_dir / 'figures' / 'cckl_pairs.png', ctx.out_dir)})" for r in analysed
    )
    lines += [f"Per-pair KL against ½ΔᵀFΔ (figures of the `cckl` analysis): {links}.", ""]
    _share_claim(tracked, cckl, claims)
    lines += _attack(analysed, fisher)
    robust = [r for role in ("pgd_at", "trades") if (r := roles.get(role)) is not None]
    _fisher_claim(roles.get("standard"), robust, fisher, claims)
    if capacity:
        lines += _capacity(capacity, fisher, cckl, claims)
    lines += ["### What our runs show about the paper's claims", "", *bullets(claims), ""]
    return "\n".join(lines)


def _series(record: RunRecord, key: str, scale: float = 1.0) -> tuple[list[float], list[float]]:
    h = [rec for rec in record.history if key in rec]
    return [rec["epoch"] for rec in h], [scale * rec[key] for rec in h]


def _tracking(ctx: StudyContext, tracked: list[RunRecord], natural: RunRecord | None, claims: list[str]) -> list[str]:
    plt = plots.plt
    fig, axes = plt.subplots(1, 4, figsize=(16.5, 3.5))
    for i, r in enumerate(tracked):
        c = plots.COLORS[i % 10]
        axes[0].plot(*_series(r, "track_acc", 100), color=c, lw=1.6, label=r.label)
        axes[1].plot(*_series(r, "track_fisher_fro"), color=c, lw=1.6)
        axes[2].plot(*_series(r, "track_fisher_spectral"), color=c, lw=1.6)
        axes[3].plot(_series(r, "track_acc", 100)[1], _series(r, "track_fisher_fro")[1], "o-", ms=3, color=c, lw=1.2)
    for ax, (xl, yl) in zip(
        axes,
        (
            ("epoch", "test accuracy (%)"),
            ("epoch", "mean ‖F(x)‖_F"),
            ("epoch", "mean ‖F(x)‖₂ (spectral)"),
            ("test accuracy (%)", "mean ‖F(x)‖_F"),
        ),
    ):
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    for ax in axes[1:]:
        ax.set_yscale("log")
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="upper center",
        ncol=len(tracked),
        bbox_to_anchor=(0.5, 1.08),
        frameon=False,
    )
    fig.tight_layout()
    path, rel = ctx.figure("shi_fisher_tracking.png")
    plots.save(fig, path)

    fig, axes = plt.subplots(1, len(tracked), figsize=(4.4 * len(tracked), 3.4), squeeze=False)
    for ax, r in zip(axes[0], tracked):
        for j, (key, name) in enumerate(TRACKING):
            ax.plot(*_series(r, key), color=plots.COLORS[j], lw=1.5, label=name, ls="--" if j == 1 else "-")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_title(r.label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("nats (symlog)")
    fig.legend(
        *axes[0][0].get_legend_handles_labels(), loc="upper center", ncol=5, bbox_to_anchor=(0.5, 1.1), frameon=False
    )
    fig.tight_layout()
    path2, rel2 = ctx.figure("shi_cckl_tracking.png")
    plots.save(fig, path2)

    first = tracked[0].config.callbacks
    opts = next((c.options for c in first if c.name == "fisher_tracking"), {})
    split = opts.get("split", "test")
    lines = [
        "### Tracking during training (paper Fig. 3, 4 and App. A)",
        "",
        f"Recorded by the `fisher_tracking` callback after each epoch on the {split} split (Fisher norms on a "
        f"fixed seeded subset of {opts.get('n', 512)} samples, CCKL over all pairs, its components over "
        f"{opts.get('anchors', 16)} × {opts.get('partners', 64)} fixed pairs). These curves are analysis only: "
        "model selection reads the validation split and never these numbers.",
        "",
        f"![Fisher norms and test accuracy per epoch]({rel})",
        "",
        f"![CCKL and its components per epoch]({rel2})",
        "",
    ]
    if natural is not None and len(_series(natural, "track_fisher_fro")[0]) >= 3:
        epochs, fro = _series(natural, "track_fisher_fro")
        claims.append(_growth_claim(natural.label, epochs, fro, _series(natural, "track_acc")[1]))
    return lines


def _growth_claim(label: str, epochs: list[float], fro: list[float], acc: list[float]) -> str:
    """Fig. 3's claim on one natural run's curves: reproduced when the mean Frobenius norm grows at least
    tenfold from the first to the last recorded epoch while test accuracy rises (the curves carry no
    standard errors, so this is a threshold, not a noise test)."""
    from scipy.stats import spearmanr

    peak = max(range(len(fro)), key=fro.__getitem__)
    grows = fro[-1] >= 10 * fro[0] and acc[-1] > acc[0]
    rho = float(spearmanr(acc, fro).statistic)
    shape = (
        f"; it peaks at {_num(fro[peak])} in epoch {epochs[peak]} ({100 * acc[peak]:.1f}% accuracy) and then "
        f"eases while accuracy saturates, so it is not monotone in accuracy (Spearman ρ over epochs {rho:.2f})"
        if fro[peak] > 1.2 * fro[-1]
        else f" (Spearman ρ over epochs {rho:.2f})"
    )
    return (
        f"**Fig. 3 (natural training: the Fisher norm grows sharply with accuracy)** — "
        f"{'reproduced' if grows else 'not reproduced'} on `{label}`: mean ‖F‖_F goes from {_num(fro[0])} "
        f"(epoch {epochs[0]}, {100 * acc[0]:.1f}% test accuracy) to {_num(fro[-1])} (epoch {epochs[-1]}, "
        f"{100 * acc[-1]:.1f}%){shape}."
    )


def _decomposition(records: list[RunRecord], fisher: dict, cckl: dict) -> list[str]:
    first = cckl[records[0].label]
    lines = [
        "### CCKL and its components per model (selected checkpoint, test split)",
        "",
        f"Fisher norms: means over the first {fisher[records[0].label]['n']} test samples. CCKL over all "
        f"{first['n']} test samples; the decomposition over {first['pairs']} seeded cross-category pairs "
        f"({first['anchors']} anchors). Pairs of real images are far apart, so ½ΔᵀFΔ is the quadratic term of "
        "an expansion far outside its radius: it can exceed the KL, and the remainder can be negative.",
        "",
        *header(
            [
                "run",
                "model",
                "clean",
                "tr F",
                "‖F‖_F",
                "‖F‖₂",
                "‖F‖₂/‖F‖_F",
                "max rank",
                "CCKL",
                "2·JS bound",
                "label-JS bound",
                "sampled CCKL",
                "½ΔᵀFΔ",
                "remainder",
                "pairs with ½ΔᵀFΔ > KL",
            ],
            "ll" + "r" * 13,
        ),
    ]
    for r in records:
        f, c = fisher[r.label], cckl[r.label]
        lines.append(
            row(
                r.label,
                _model_name(r),
                pct(c["accuracy"]),
                _num(f["trace"]["mean"]),
                _num(f["frobenius"]["mean"]),
                _num(f["spectral"]["mean"]),
                f"{f['spectral_over_frobenius']['mean']:.2f}",
                f["max_rank"],
                _num(c["cckl"]),
                _num(c["bound_pairwise_js"]),
                _num(c["bound_label_js"]),
                _num(c["cckl_sampled"]),
                _num(c["fisher_term"]),
                _num(c["remainder"]),
                f"{pct(c['pairs_fisher_exceeds_kl'], 0)}%",
            )
        )
    return [*lines, ""]


def _share_claim(tracked: list[RunRecord], cckl: dict, claims: list[str]) -> None:
    if not tracked:
        return
    share = {r.label: cckl[r.label]["fisher_term"] / cckl[r.label]["cckl_sampled"] for r in tracked}
    heavy = [label for label, v in share.items() if v >= 0.5]
    claims.append(
        "**Current models rely heavily on the non-robust component (½ΔᵀFΔ carries most of CCKL)** — "
        f"{'not reproduced' if not heavy else 'reproduced for ' + ', '.join(heavy)}: the quadratic Fisher "
        "term is "
        + ", ".join(f"{100 * v:.0f}% (`{label}`)" for label, v in share.items())
        + " of the sampled CCKL at the selected checkpoint; the remainder (robust component) carries the "
        "rest. The quadratic term itself: "
        + ", ".join(f"{_num(cckl[r.label]['fisher_term'])} (`{r.label}`)" for r in tracked)
        + "."
    )


def _attack(records: list[RunRecord], fisher: dict) -> list[str]:
    eps = [step["eps"] for step in fisher[records[0].label]["attack"]]
    columns = [c for e in eps for c in (f"ε={e}: Taylor ratio", "KL Fisher", "KL random", "flips Fisher / random")]
    lines = [
        "### The Fisher attack (one l2 step along the leading eigenvector of F)",
        "",
        "Taylor ratio: KL(p(x) ‖ p(x ± εu)) / (½ε²λ_max), unclipped, median over samples (→ 1 as ε → 0). "
        "KL and flips after clipping to [0, 1]; the random baseline is a seeded Gaussian direction of the same "
        "length (better sign of ±). Flips: share of clean-correct test points whose prediction changes.",
        "",
        *header(["run", *columns], "l" + "r" * len(columns)),
    ]
    for r in records:
        cells = []
        for step in fisher[r.label]["attack"]:
            cells += [
                f"{step['taylor_ratio_median']:.3f}",
                _num(step["kl_fisher"]),
                _num(step["kl_random"]),
                f"{pct(step['flip_fisher'])}% / {pct(step['flip_random'])}%",
            ]
        lines.append(row(r.label, *cells))
    return [*lines, ""]


def _fisher_claim(natural: RunRecord | None, robust: list[RunRecord], fisher: dict, claims: list[str]) -> None:
    """Fig. 4's claim: the adversarially trained `robust` runs have a smaller mean Fisher norm than `natural`."""
    if natural is None or not robust:
        return
    nat = fisher[natural.label]["frobenius"]["mean"]
    parts, smaller = [], []
    for r in robust:
        v = fisher[r.label]["frobenius"]["mean"]
        smaller.append(v < nat)
        parts.append(f"`{r.label}` {_num(v)} ({'smaller' if v < nat else 'NOT smaller'}, ×{v / nat:.2g})")
    verdict = "reproduced" if all(smaller) else ("partly reproduced" if any(smaller) else "NOT reproduced")
    claims.append(
        f"**Fig. 4 (PGD-AT / TRADES have a smaller mean Fisher norm than natural training)** — {verdict} "
        f"on {natural.config.dataset.name}: mean ‖F‖_F on the test split at the selected checkpoint is "
        f"{_num(nat)} for `{natural.label}` against " + ", ".join(parts) + "."
    )
    claims.append(_clean_cost_claim(natural, robust))


def _clean_cost_claim(natural: RunRecord, robust: list[RunRecord]) -> str:
    """Whether each adversarially trained run's clean accuracy is below the natural run's beyond two standard
    errors of the paired per-sample difference on the test split."""
    parts, ways = [], []
    for r in robust:
        mean, se = paired_difference(r.eval.per_sample["clean"], natural.eval.per_sample["clean"])
        ways.append(direction(mean, se))
        parts.append(f"{100 * r.eval.clean:.1f}% (`{r.label}`, {mean:+.1f} ± {se:.1f} points)")
    lower = [r.label for r, w in zip(robust, ways) if w < 0]
    verdict = (
        "yes, beyond noise in every run"
        if len(lower) == len(robust)
        else f"beyond noise only for {ticked(lower)}"
        if lower
        else "not beyond noise in any run"
    )
    return (
        f"**Adversarial training costs clean accuracy** — {verdict} here: clean {100 * natural.eval.clean:.1f}% "
        f"(`{natural.label}`) vs " + ", ".join(parts) + " (paired per-sample differences ± standard error)."
    )


def _accuracies(rec: tuple[RunRecord, float, float, float]) -> list[str]:
    """Clean, PGD and CW accuracy (%) of a capacity row (run, clean, pgd, cw)."""
    return [f"{100 * v:.1f}" for v in rec[1:]]


def _capacity(records: list[RunRecord], fisher: dict, cckl: dict, claims: list[str]) -> list[str]:
    cfg = records[0].config
    pgd, cw = longest(records[0].eval.suite, "pgd"), longest(records[0].eval.suite, "cw")
    lines = [
        "### Capacity under TRADES (paper Table, Section 4)",
        "",
        f"TRADES on {cfg.dataset.name} under {cfg.threat_model}, {cfg.train.epochs} epochs, evaluated with "
        f"{pgd} and {cw} (step {records[0].eval.step:.3g}) on the test split; one seed per model, so differences "
        "of a few points are within run-to-run variation. On digits this is a scaled-down version of the "
        "paper's CIFAR-10 experiment (narrow models, few epochs; see the config's comments); "
        "configs/shi_cifar10.yaml is the full-size one.",
        "",
        *header(
            ["run", "model", "clean", pgd or "PGD", cw or "CW", "‖F‖_F", "CCKL", "½ΔᵀFΔ", "remainder"], "llrrrrrrr"
        ),
    ]
    rows = []
    for r in records:
        e, c = r.eval, cckl[r.label]
        at_pgd, at_cw = (e.attacks.get(name, float("nan")) if name else float("nan") for name in (pgd, cw))
        rows.append((r, e.clean, at_pgd, at_cw))
        lines.append(
            row(
                r.label,
                _model_name(r),
                *_accuracies(rows[-1]),
                _num(fisher[r.label]["frobenius"]["mean"]),
                _num(c["cckl"]),
                _num(c["fisher_term"]),
                _num(c["remainder"]),
            )
        )
    paper = "; ".join(
        f"{model} {v['clean']:.1f} / {v['pgd']:.1f} / {v['cw']:.1f}"
        for model, v in paper_numbers("shi_capacity").items()
    )
    lines += ["", f"Paper (CIFAR-10, TRADES, accuracy % clean / PGD / CW): {paper}.", ""]
    columns = [c for c in ("clean", pgd, cw) if c is not None]
    vgg = {
        rec[0].config.model.options.get("variant", "normal"): rec for rec in rows if rec[0].config.model.name == "vgg13"
    }
    order = [v for v in ("pure_linear", "half_linear", "normal") if v in vgg]
    if len(order) >= 2:
        steps = [(vgg[a][0], vgg[b][0]) for a, b in itertools.pairwise(order)]
        per_variant = "; ".join(f"{v} {' / '.join(_accuracies(vgg[v]))}" for v in order)
        claims.append(
            "**Capacity: more nonlinearity in VGG13 raises clean and robust accuracy together** — "
            f"{_rise_verdict(steps, columns)}: {per_variant} (clean / {pgd} / {cw} %)."
        )
    resnets = [rec for rec in rows if rec[0].config.model.name.startswith("resnet")]
    if len(resnets) >= 2:
        small, large = resnets[0], resnets[-1]
        claims.append(
            "**Capacity: the larger ResNet is better on clean and robust accuracy** — "
            f"{_rise_verdict([(small[0], large[0])], columns)}: `{small[0].label}` "
            f"{' / '.join(_accuracies(small))} vs `{large[0].label}` {' / '.join(_accuracies(large))}."
        )
    return lines


def _rise_verdict(steps: list[tuple[RunRecord, RunRecord]], columns: list[str]) -> str:
    """Whether accuracy rises from the first to the second run of every step in every column (per-sample
    outcomes on the same test points): 'reproduced' when every paired difference is above two standard
    errors, 'not reproduced' when one is below minus two, else 'not resolved' (some within noise)."""
    falls, flat = [], []
    for a, b in steps:
        for col in columns:
            way = direction(*paired_difference(b.eval.per_sample[col], a.eval.per_sample[col]))
            if way < 0:
                falls.append(f"{col} {a.label} → {b.label}")
            elif way == 0:
                flat.append(f"{col} {a.label} → {b.label}")
    if falls:
        return f"not reproduced (lower beyond two standard errors: {', '.join(falls)})"
    if flat:
        return f"not resolved (within two standard errors: {', '.join(flat)}; one seed per model)"
    return "reproduced (every rise beyond two standard errors of the paired difference)"
