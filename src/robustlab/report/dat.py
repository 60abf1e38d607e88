"""Report section `dat`: DAT (Mao et al., [DAT], NeurIPS 2022, arXiv 2209.07735) against standard training
and PGD-AT on clean accuracy, common-corruption robustness (accuracy, mCE, relative mCE) and adversarial
robustness, with the VQ discretiser's reconstructions, and what the runs say about the paper's claim."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .. import corruptions as C
from ..corruptions.metrics import mce
from . import plots
from .context import RunRecord, StudyContext, direction, paired_difference
from .markdown import fixed, header, row
from .papers import paper_numbers
from .registry import SECTIONS
from .roles import Cast, reads_roles
from .sections import autoattack_of, longest

ROLES = {
    "dat": "the DAT run (its discretiser draws the reconstructions)",
    "standard": "standard training: the baseline of mCE and of every comparison",
    "pgd_at": "PGD adversarial training, the contrast the paper draws",
}


def image_rows(rows: dict[str, torch.Tensor], path: Path, *, col_titles: list[str] | None = None) -> None:
    """A grid of images: one row per entry (N×C×H×W in [0, 1]), labelled on the left."""
    import matplotlib.pyplot as plt

    n = max(t.shape[0] for t in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(0.75 * n + 1.3, 0.75 * len(rows) + 0.3), squeeze=False)
    for i, (label, imgs) in enumerate(rows.items()):
        for j in range(n):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < imgs.shape[0]:
                img = imgs[j].detach().cpu().clamp(0, 1)
                img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
                ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.axis("off")
            if i == 0 and col_titles and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=7)
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    plots.save(fig, path)


def corruption_result(ctx: StudyContext, record: RunRecord) -> dict[str, Any]:
    """The run's corruption accuracy on the images its evaluation used (eval split and max_samples), with the
    analysis defaults otherwise (cached in analysis/corruption.json)."""
    split = ctx.dataset(record).split(record.config.eval.split).head(record.config.eval.max_samples)

    def compute() -> dict[str, Any]:
        res = C.corruption_accuracy(ctx.model(record), split, seed=0, root=ctx.data_root, quiet=ctx.quiet)
        return {**res, "split": record.config.eval.split, "seed": 0}

    res = ctx.cached(record, "corruption", compute)
    expected = {
        "n": len(split),
        "severities": list(C.SEVERITIES),
        "source": "generate",
        "seed": 0,
        "split": record.config.eval.split,
    }
    if any(res.get(k) != v for k, v in expected.items()) or "per_image_acc" not in res:
        res = compute()  # the cached file was written by an analysis with other options
        (record.run_dir / "analysis" / "corruption.json").write_text(json.dumps(res, indent=2))
    return res


def _vq_of(record: RunRecord):
    from ..vq import load_vq

    opts = record.config.method.options
    source = opts.get("vq")
    return load_vq(source if isinstance(source, str) else record.run_dir, opts.get("vqgan_config", "auto"))


def _examples(ctx: StudyContext, record: RunRecord, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test image of each class (up to k images) and their labels."""
    split = ctx.dataset(record).split(record.config.eval.split)
    first = [int(torch.nonzero(split.y == c)[0]) for c in torch.unique(split.y).tolist()][:k]
    idx = torch.tensor(first)
    return split.x[idx].to(ctx.device), split.y[idx].to(ctx.device)


def _direction(delta: float, se: float, up: str, down: str) -> str:
    """`up` / `down` when the paired difference (points) is beyond two standard errors, else the same within noise."""
    words = {1: up, -1: down, 0: "the same within noise"}[direction(delta, se)]
    return f"{words} ({delta:+.1f} points, noise ±{2 * se:.1f})"


CORRUPTION_WORDS = {
    1: "corruption accuracy higher",
    -1: "corruption accuracy lower",
    0: "corruption accuracy the same within noise",
}


def _verdict(clean: tuple[float, float], corruption: tuple[float, float], at_clean: tuple[float, float] | None) -> str:
    """The paper's claim from DAT − standard (difference, standard error) in clean and in mean corruption
    accuracy, and PGD-AT − standard in clean accuracy (None without a PGD-AT run): consistent when clean
    accuracy is not lower beyond noise and corruption accuracy is higher beyond noise."""
    kept, corr = direction(*clean) >= 0, direction(*corruption)
    parts = ("clean accuracy kept" if kept else "clean accuracy lower", CORRUPTION_WORDS[corr])
    verdict = ("consistent with the claim" if kept and corr > 0 else "not reproduced") + f" ({', '.join(parts)})"
    if at_clean is not None:
        verdict += (
            ". PGD-AT costs clean accuracy here, the contrast the paper draws"
            if direction(*at_clean) < 0
            else ". PGD-AT does not cost clean accuracy here either, so the contrast the paper draws does not arise"
        )
    return verdict


def _mean_pct(values: list[float]) -> float:
    return 100 * sum(values) / len(values)


@SECTIONS.register("dat")
@reads_roles(ROLES)
def dat_section(ctx: StudyContext, groups: tuple[str, ...] = ("dat", "main"), examples: int = 10) -> str:
    """The `dat` run beside the `standard` and `pgd_at` runs of `groups`; mCE normalised by `standard`."""
    cast = ctx.cast(groups, ROLES)
    lines = ["## DAT: discrete adversarial training (Mao et al., NeurIPS 2022)", "", *cast.note()]
    d0 = cast.get("dat")
    if d0 is None:
        return "\n".join(lines)
    records = [r for role in ("standard", "pgd_at", "dat") if (r := cast.get(role)) is not None]
    results = {r.label: corruption_result(ctx, r) for r in records}
    std = cast.get("standard")
    base = results.get(std.label) if std is not None else None
    scores = {label: mce(res, base) if base is not None else None for label, res in results.items()}
    first = records[0]
    n = first.eval.n
    aa = {r.label: autoattack_of(r) for r in records}  # AutoAttack on the first test points, when evaluated
    aa_n = {v[0].n for v in aa.values() if v}
    aa_cols = [f"AutoAttack (n={next(iter(aa_n))})" if len(aa_n) == 1 else "AutoAttack (n)"] if aa_n else []
    strongest = longest(first.eval.suite, "pgd")

    baseline = std.label if std is not None else "standard"
    lines += [
        f"`{d0.label}` trains with {_describe(d0)}. Common corruptions: the 15 of Hendrycks & Dietterich "
        f"(2019) at 5 severities, generated from the {first.config.eval.split} split (n = {n}) with CIFAR-10-C's "
        f"parameters (one pixel here = one CIFAR pixel; docs/dat.md). mCE and relative mCE are normalised by "
        f"`{baseline}` (= 100 by definition; lower is better). Adversarial columns: the paper protocol at "
        f"{first.eval.threat}.",
        "",
    ]
    skipped = sorted({c for res in results.values() for c in res.get("skipped", {})})
    if skipped:
        why = next(iter(results.values()))["skipped"][skipped[0]].split(";")[0]
        lines += [f"Skipped corruptions: {', '.join(skipped)} — {why}.", ""]
    head = [
        "run",
        "method",
        "clean",
        "corruption acc",
        "mCE",
        "rel. mCE",
        *([strongest] if strongest else []),
        *aa_cols,
        "worst case",
        "train time",
    ]
    lines += header(head, "ll" + "r" * (len(head) - 2))
    for r in records:
        res, sc = results[r.label], scores[r.label]
        cells = [
            r.label,
            r.config.method.name,
            fixed(100 * r.eval.clean),
            fixed(100 * res["mean_acc"]),
            fixed(sc["mce"]) if sc else "–",
            fixed(sc["relative_mce"]) if sc else "–",
        ]
        cells += [fixed(100 * r.eval.attacks[strongest])] if strongest else []
        found = aa[r.label]
        if aa_cols:  # each cell names its n when the runs' AutoAttack n differ
            n_note = f" ({found[0].n})" if found and len(aa_n) > 1 else ""
            cells.append(fixed(100 * found[0].attacks[found[1]]) + n_note if found else "–")
        cells += [fixed(100 * r.eval.worst_case), "reused" if r.reused else f"{r.train_seconds:.0f} s"]
        lines.append(row(*cells))
    lines.append("")

    # accuracy per corruption (mean over severities) and per severity (mean over corruptions)
    names = [c for c in C.BENCHMARK if all(c in res["acc"] for res in results.values())]
    lines += [
        "Accuracy (%) per corruption, mean over the 5 severities:",
        "",
        *header(["corruption", *results], "l" + "r" * len(results)),
    ]
    for c in names:
        lines.append(row(c, *(fixed(_mean_pct(res["acc"][c])) for res in results.values())))
    lines.append("")
    sev = [0, *C.SEVERITIES]
    series = {
        label: {
            "acc": (
                sev,
                [100 * res["clean_acc"]] + [_mean_pct([res["acc"][c][s - 1] for c in names]) for s in C.SEVERITIES],
            )
        }
        for label, res in results.items()
    }
    path, rel = ctx.figure("dat_corruption_severity.png")
    plots.curves(series, [("acc", "mean corruption accuracy (%)")], path, xlabel="severity (0 = clean)")
    bars = {c: {label: _mean_pct(res["acc"][c]) for label, res in results.items()} for c in names}
    path2, rel2 = ctx.figure("dat_corruption_bars.png")
    plots.grouped_bars(bars, path2, title="accuracy per corruption (mean over severities)")
    lines += [f"![accuracy against severity]({rel})", "", f"![accuracy per corruption]({rel2})", ""]

    lines += _vq_part(ctx, d0, examples)
    lines += _claim(cast, results, scores, n, strongest)
    return "\n".join(lines) + "\n"


def _describe(record: RunRecord) -> str:
    from .. import methods

    m = methods.create("dat", threat=record.config.threat_model, **record.config.method.options)
    return f"CE(x) + CE(x_adv) with {m.train_attack!r}"


def _vq_part(ctx: StudyContext, record: RunRecord, k: int) -> list[str]:
    from .. import methods
    from ..methods.dat import DAT

    vq, meta = _vq_of(record)
    vq = vq.to(ctx.device)
    x, y = _examples(ctx, record, k)
    method = methods.create("dat", threat=record.config.threat_model, **record.config.method.options)
    assert isinstance(method, DAT) and method.train_attack is not None
    method.use_discretiser(vq)
    model = ctx.model(record)
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    with torch.no_grad():
        qx = vq.reconstruct(x)
    x_adv = method.train_attack(model, x, y, generator=gen)
    path, rel = ctx.figure("dat_vq_reconstructions.png")
    image_rows(
        {
            "x": x,
            "Q(x)": qx,
            "DAT example": x_adv,
            "4·|Q(x) − x|": 4 * (qx - x).abs(),
            "4·|example − Q(x)|": 4 * (x_adv - qx).abs(),
        },
        path,
    )
    corr = {
        c: torch.cat([x[:1]] + [C.corrupt(x[:1], c, s, seed=s, root=ctx.data_root) for s in C.SEVERITIES])
        for c in C.names()
        if not C.CORRUPTIONS.get(c).needs_files
    }
    path2, rel2 = ctx.figure("dat_corruption_examples.png")
    image_rows(corr, path2, col_titles=["clean"] + [f"severity {s}" for s in C.SEVERITIES])
    m = meta.get("metrics", {})
    a = vq.arch
    grid = a.resolution // a.factor
    desc = (
        f"The discretiser: a VQ autoencoder with {a.n_embed} codes of size {a.embed_dim} on a {grid}×{grid} "
        f"latent grid (f = {a.factor}), trained on the training split"
    )
    if m:
        desc += (
            f" in {m.get('train_seconds', float('nan')):.0f} s: validation PSNR {m['psnr']:.1f} dB, codebook "
            f"perplexity {m['perplexity']:.0f}, {m['dead_codes']} of {a.n_embed} codes unused on the validation "
            "split"
        )
    return [
        desc + ". Rows: test images x, Q(x), the discrete adversarial example DAT trains on (for the trained DAT "
        "model), and the differences |Q(x) − x| and |example − Q(x)| (both ×4).",
        "",
        f"![VQ reconstructions]({rel})",
        "",
        "One test image under each generated corruption (frost needs external photographs):",
        "",
        f"![corruption examples]({rel2})",
        "",
    ]


def _claim(cast: Cast, results: dict, scores: dict, n: int, strongest: str | None) -> list[str]:
    std, dat, at = cast.get("standard"), cast.get("dat"), cast.get("pgd_at")
    lines = [
        "**The paper's claim** (Mao et al. 2022): DAT keeps or improves clean accuracy while improving "
        "robustness to common corruptions (ImageNet-C mCE), unlike standard adversarial training, which costs "
        "clean accuracy.",
        "",
    ]
    if std is None or dat is None:
        return [*lines, "(No standard run to compare against.)", ""]
    lines.append(
        f"**Our runs** (one seed, n = {n} test images; 'noise' is two standard errors of the paired "
        "per-image difference):"
    )

    def delta(other: RunRecord, clean: bool) -> tuple[float, float]:
        """(accuracy of `other` minus standard's, its standard error), in points, clean or mean over corruptions."""
        if clean:
            return paired_difference(other.eval.per_sample["clean"], std.eval.per_sample["clean"])
        return paired_difference(results[other.label]["per_image_acc"], results[std.label]["per_image_acc"])

    for clean, what in ((True, "clean accuracy"), (False, "mean corruption accuracy")):
        lines.append(
            f"- {what}: DAT vs standard is {_direction(*delta(dat, clean), 'higher', 'lower')}"
            + (f"; PGD-AT vs standard is {_direction(*delta(at, clean), 'higher', 'lower')}." if at else ".")
        )
    if scores.get(dat.label):
        at_mce = f", PGD-AT {scores[at.label]['mce']:.1f}" if at and scores.get(at.label) else ""
        lines.append(
            f"- mCE (standard = 100): DAT {scores[dat.label]['mce']:.1f}{at_mce}. mCE divides each "
            "corruption's error by the standard model's, so corruptions that standard training already "
            "handles well weigh most; it can disagree with the mean accuracy."
        )
    paper = paper_numbers("dat_setup")
    if strongest:
        at_adv = f", PGD-AT {100 * at.eval.attacks[strongest]:.1f} %" if at else ""
        lines.append(
            f"- adversarial ({strongest} at the study's threat model): DAT "
            f"{100 * dat.eval.attacks[strongest]:.1f} %, standard {100 * std.eval.attacks[strongest]:.1f} %"
            f"{at_adv} — DAT's ℓ2 ε = {paper['l2_eps']} discrete perturbation is not an ℓ∞ defence and is "
            "not meant to be one."
        )
    verdict = _verdict(delta(dat, True), delta(dat, False), delta(at, True) if at is not None else None)
    lines += [
        f"- verdict on {dat.config.dataset.name}, this seed: {verdict}. The noise above is the test-set noise of "
        "one training run; the variation between training seeds is larger here (docs/dat.md repeats the "
        "comparison over three seeds). A small-scale analogue only: the paper's evidence is ViT/ResNet on "
        f"ImageNet with a {paper['codebook_size']}-code VQGAN.",
        "",
    ]
    return lines
