"""Report section `scarl` ([SCARL], ICLR 2023 submission, OpenReview SWUGykek_T): robustness rows, CCA of
features vs word vectors (Fig. 1) and class-similarity heatmaps (Fig. 2) of the runs of ROLES, with what our
runs say about the paper's claims."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analysis.cca import run_vectors
from ..analysis.similarity import heatmaps
from ..evaluate import markdown_table
from . import plots
from .context import StudyContext
from .markdown import bullets, header, pct, row
from .papers import paper_numbers
from .registry import SECTIONS
from .roles import reads_roles

ROLES = {
    "standard": "the naturally trained model",
    "fgsm_at": "the FGSM-trained model of the paper's Fig. 1 (*)",
    "pgd_at": "the PGD adversarially trained model",
    "trades": "TRADES, the baseline SCARL is compared with (same KL attack in training)",
    "scarl": "the SCARL model; its word vectors are the default `vectors`",
}
# |word-vector r₁ − control r₁| below this counts as no difference (a margin: the control's spread is not recorded)
GAP_MARGIN = 0.05


def _spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


def _cca_figure(cca: dict[str, dict[str, Any]], path) -> None:
    """Left: first canonical correlation, natural vs adversarial, per model. Right: the whole spectra."""
    plt = plots.plt
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.5, 3.6))
    labels = list(cca)
    x = np.arange(len(labels))
    for i, setting in enumerate(("natural", "adversarial")):
        vals = [cca[m][setting]["first"] for m in labels]
        bars = ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, label=setting, color=plots.COLORS[i])
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        ax.hlines(
            [cca[m][setting]["control_first"] for m in labels],
            x + (i - 1) * 0.38,
            x + i * 0.38,
            colors="k",
            linestyles=":",
            lw=1.5,
            label="random class vectors (control)" if i else None,
        )
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("first canonical correlation")
    ax.legend(fontsize=7, loc="upper left", ncol=3, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    for i, m in enumerate(labels):
        for setting, style in (("natural", "-"), ("adversarial", "--")):
            r = cca[m][setting]["correlations"]
            ax2.plot(
                range(1, len(r) + 1),
                r,
                style,
                marker="o",
                ms=3,
                color=plots.COLORS[i % 10],
                label=m if setting == "natural" else None,
            )
    ax2.set_xlabel("canonical component (solid: natural, dashed: adversarial)")
    ax2.set_ylabel("canonical correlation")
    ax2.set_ylim(0, 1.05)
    ax2.xaxis.set_major_locator(plots.plt.MaxNLocator(integer=True))
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    plots.save(fig, path)


@SECTIONS.register("scarl")
@reads_roles(ROLES)
def scarl_section(
    ctx: StudyContext,
    groups: tuple[str, ...] = ("main", "scarl"),
    vectors: str | None = None,
    n: int | None = None,
    dim: int = 5,
    reg: float = 0.0,
    attack: str = "pgd-20",
) -> str:
    """SCARL's robustness rows, CCA (natural vs adversarial) and class-similarity heatmaps for the runs of
    ROLES in `groups` (a role no run plays is named and skipped). `vectors` defaults to the scarl run's
    word vectors; `n`, the images of the CCA, to the paper's number of image-word pairs."""
    cast = ctx.cast(groups, ROLES)
    lines = [
        "## SCARL: semantic word vectors and robustness (ICLR 2023 submission, OpenReview SWUGykek_T)",
        "",
        *cast.note(),
    ]
    records = list(cast.runs.values())
    if not records:
        return "\n".join(lines)
    scarl = cast.get("scarl")
    spec = vectors or (run_vectors(scarl.meta) if scarl else "minilm")
    threat = records[0].eval.threat
    lines += [
        f"Runs {', '.join(r.label for r in records)}; word vectors `{spec}`. The paper reports no numbers we "
        "could retrieve, so there is no target to match; we test its qualitative claims.",
        "",
        "### Robustness",
        "",
        f"Accuracy (%) on the {records[0].config.eval.split} split under {threat}.",
        "",
        markdown_table({r.label: r.eval for r in records}),
    ]
    worst = {r.label: r.eval.worst_case for r in records}
    trades = cast.get("trades")
    if scarl is not None and trades is not None:
        diff = 100 * (scarl.eval.worst_case - trades.eval.worst_case)
        clean_diff = 100 * (scarl.eval.clean - trades.eval.clean)
        lines += [
            f"SCARL vs TRADES (same KL attack in training): worst-case accuracy {diff:+.2f} points, clean "
            f"{clean_diff:+.2f} points. One run per method: a difference smaller than the run-to-run spread is "
            "no evidence either way (docs/scarl.md gives the spread we measured on digits).",
            "",
        ]

    opts = {
        "vectors": spec,
        "n": paper_numbers("scarl_cca")["pairs"] if n is None else n,
        "dim": dim,
        "reg": reg,
        "attack": attack,
    }
    cca = {r.label: ctx.analysis(r, "cca", figure=False, **opts) for r in records}
    settings = ("natural", "adversarial")
    lines += [
        "### CCA of visual features and class word vectors (Fig. 1)",
        "",
        _cca_setup(next(iter(cca.values())), attack, threat, dim, reg),
        "",
        *header(
            [
                "run",
                "worst-case acc (eval)",
                "natural r₁",
                "r₂",
                "r₃",
                "ctrl",
                "acc",
                "adversarial r₁",
                "r₂",
                "r₃",
                "ctrl",
                "acc",
            ],
            "l" + "r" * 11,
        ),
    ]
    for label, c in cca.items():
        cells = []
        for setting in settings:
            r = c[setting]["correlations"] + [float("nan")] * 3
            cells += [f"{v:.3f}" for v in r[:3]] + [f"{c[setting]['control_first']:.3f}", pct(c[setting]["accuracy"])]
        lines.append(row(label, pct(worst[label]), *cells))
    path, rel = ctx.figure("scarl_cca.png")
    _cca_figure(cca, path)
    lines += ["", f"![CCA natural vs adversarial]({rel})", ""]

    sims = {r.label: ctx.analysis(r, "similarity", figure=False, vectors=spec) for r in records}
    words = np.array(next(iter(sims.values()))["words"])
    path, rel = ctx.figure("scarl_similarity.png")
    panels = {f"{label} (ρ={s['spearman']:.2f})": np.array(s["model"]) for label, s in sims.items()}
    heatmaps(
        {**panels, f"word vectors ({spec})": words},
        ctx.dataset(records[0]).class_names,
        path,
        title="Class-similarity matrices (inner products of normalised class-mean features; "
        "off-diagonal entries, each panel on its own colour scale)",
    )
    lines += [
        "### Class-similarity matrices (Fig. 2)",
        "",
        "Inner products of the normalised class-mean features on the natural test split, next to the "
        "word-vector matrix; ρ = Spearman correlation of each model's off-diagonal entries with the word "
        "vectors'.",
        "",
        f"![class-similarity heatmaps]({rel})",
        "",
        *header(["run", "worst-case acc", "ρ with word vectors"], "lrr"),
    ]
    lines += [row(label, pct(worst[label]), f"{s['spearman']:.3f}") for label, s in sims.items()]
    lines += ["", _claims(cca, sims, worst, dim, len(words), scarl.label if scarl else None)]
    return "\n".join(lines) + "\n"


def _cca_setup(first: dict[str, Any], attack: str, threat: str, dim: int, reg: float) -> str:
    """How the CCA table was made, beside the paper's number of image-word pairs."""
    return (
        f"{first['n']} seeded {first['split']} images (the paper uses {paper_numbers('scarl_cca')['pairs']}; "
        f"fewer when the split is smaller), natural and after {attack} at {threat}; both views PCA-reduced to "
        f"{dim} components" + (f", ridge {reg}" if reg else "") + ". r₁, r₂, r₃: the first canonical "
        "correlations; ctrl: r₁ with random Gaussian class vectors instead of word vectors (mean of 5 draws: "
        "labels without semantics); acc: the model's accuracy on those images."
    )


def _claims(
    cca: dict[str, Any], sims: dict[str, Any], worst: dict[str, float], dim: int, num_classes: int, scarl: str | None
) -> str:
    """Plain statements of what these runs show about the paper's claims (written from the numbers)."""
    labels = list(cca)
    nat = [cca[m]["natural"]["first"] for m in labels]
    adv = [cca[m]["adversarial"]["first"] for m in labels]
    rob = [worst[m] for m in labels]
    agree = [sims[m]["spearman"] for m in labels]
    drops = [m for m in labels if cca[m]["adversarial"]["first"] < cca[m]["natural"]["first"]]
    rho_adv, rho_sim = _spearman(rob, adv), _spearman(rob, agree)
    order = " < ".join(
        f"{m} {100 * worst[m]:.0f}%/r₁ {cca[m]['adversarial']['first']:.2f}"
        for m in sorted(labels, key=worst.__getitem__)
    )
    gap = {
        s: float(np.mean([cca[m][s]["first"] - cca[m][s]["control_first"] for m in labels]))
        for s in ("natural", "adversarial")
    }
    largest_drop = int(np.argmax(np.subtract(nat, adv)))
    most_agreeing = int(np.argmax(agree))
    degenerate = (
        f" (With dim = {dim} ≥ K−1 = {num_classes - 1} the word side spans exactly the label indicators, "
        "so r₁ cannot depend on the words at all.)"
        if dim == 0 or dim >= num_classes - 1
        else ""
    )
    claims = [
        "*An attack destroys the correlation between visual features and word vectors.* The adversarial r₁ is "
        f"below the natural r₁ for {len(drops)} of {len(labels)} models ({', '.join(drops) or 'none'}); the largest "
        f"drop is {nat[largest_drop] - adv[largest_drop]:.3f} ({labels[largest_drop]}).",
        f"*The more robust the model, the stronger the correlation.* Across the {len(labels)} models, Spearman's ρ "
        f"between worst-case accuracy and adversarial r₁ is {rho_adv:.2f} (by robustness: {order}): the claim "
        f"{_rank_verdict(rho_adv)} here for adversarial inputs. With natural inputs: ρ = {_spearman(rob, nat):.2f}.",
        "*Is it the semantics?* Word-vector r₁ minus the random-class-vector control, averaged over the models: "
        f"{gap['natural']:+.3f} (natural), {gap['adversarial']:+.3f} (adversarial). {_semantic_gap(gap)}{degenerate}",
        "*Robust features reflect the word vectors' class relatedness, non-robust ones do not (Fig. 2).* Spearman's "
        f"ρ between robustness and the similarity agreement is {rho_sim:.2f}: the claim {_rank_verdict(rho_sim)} in "
        f"ranking; the agreement itself is {_strength(max(agree))} (largest ρ = {max(agree):.2f}, "
        f"{labels[most_agreeing]})."
        + (f" {scarl} is trained towards these vectors, so its agreement is no independent evidence." if scarl else ""),
        "One seed and a handful of models: these rank correlations are coarse.",
    ]
    return "\n".join(["### What our runs show against the paper's claims", "", *bullets(claims)])


def _semantic_gap(gap: dict[str, float]) -> str:
    """What the word-vector r₁ minus the random-vector control says, per setting (natural, adversarial),
    by its sign: more than random (part of the correlation is semantic), less than random, or about the same."""
    if all(abs(g) < GAP_MARGIN for g in gap.values()):
        return (
            "Small: most of the correlation reflects how well the features separate the true classes, not what "
            "the words mean."
        )
    words = {
        1: "the word vectors correlate more than random class vectors, so part of the correlation is semantic",
        -1: "the word vectors correlate less than random class vectors: no sign of semantics",
        0: f"the word vectors correlate about as much as random class vectors (within ±{GAP_MARGIN})",
    }
    return " ".join(
        f"{setting.capitalize()} inputs: {words[int(np.sign(g)) if abs(g) >= GAP_MARGIN else 0]}."
        for setting, g in gap.items()
    )


def _rank_verdict(rho: float) -> str:
    """A claim "the more robust, the more X" judged by Spearman's ρ across the models (coarse: a handful of models)."""
    if not np.isfinite(rho):
        return "cannot be tested"
    if rho > 0.5:
        return "holds"
    return "holds only weakly" if rho >= 0.2 else "is reversed" if rho < -0.5 else "does not hold"


def _strength(rho: float) -> str:
    """Words for how strongly a similarity matrix agrees with the word vectors' (Spearman's ρ)."""
    return "absent" if rho <= 0 else "weak" if rho < 0.5 else "moderate" if rho < 0.7 else "strong"
