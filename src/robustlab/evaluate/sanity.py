"""Sanity flags: signs that an evaluation over-estimates robustness (gradient masking).

Computed with every evaluation, after the attacks of the suite (the checklist of Carlini et al.
2019, "On evaluating adversarial robustness", and AutoAttack's automatic checks). The cheap checks
run on the first `FlagConfig.max_samples` points; the others reuse the suite's per-sample results.

| flag | raised when |
|---|---|
| randomised | two identical forward passes give different logits |
| zero_grad | the input gradient of the cross-entropy or of the logit margin is 0 or non-finite on a share of points |
| large_eps | APGD-CE accuracy at the largest probed ε (4ε) or at unbounded ε is not ~0 |
| non_monotone | APGD-CE accuracy rises with ε |
| single_step | FGSM breaks points that no iterative attack breaks |
| square | the black-box Square attack breaks points that every white-box attack missed |

"Breaks" counts only points the model classifies correctly on clean input.

Each flag is a JSON-able dict: name, raised, checked, value, threshold, n (points), detail,
explanation (one line, shown in the report and the terminal).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import build as build_attack
from ..attacks import model_untouched
from ..attacks.square import margin
from ..config import FlagConfig
from ..data import Split, batches
from ..threat import ThreatModel

if TYPE_CHECKING:
    from .result import EvalResult

EXPLANATIONS = {
    "randomised": "The logits change between two identical forward passes: attacks that assume a fixed model "
    "overestimate a randomised one's robustness. Evaluate it with expectation over transformation: --suite "
    "autoattack-rand (AutoAttack's rand version: APGD-CE and APGD-DLR, gradients averaged over 20 passes), or "
    "eot_iter on apgd / pgd attacks (e.g. {name: apgd-ce, eot_iter: 20}).",
    "zero_grad": "Zero or non-finite input gradients leave gradient-based attacks blind (e.g. a non-differentiable "
    "input quantisation, or a saturated softmax).",
    "large_eps": "With a much larger or unbounded ε every point can be turned into another class, so accuracy must "
    "fall to ~0; if it does not, the attacks are being blocked, not defeated.",
    "non_monotone": "Robust accuracy cannot rise with ε (a larger ball contains the smaller one); if it does, the "
    "attack fails at large ε, a sign of masking or of a badly scaled attack.",
    "single_step": "One FGSM step should never beat iterative attacks of the same budget; if it does, the iterative "
    "attacks are stuck (masked or noisy gradients).",
    "square": "A black-box attack should not beat white-box ones; Square breaking points that every gradient attack "
    "missed points to masked gradients, or to white-box attacks too weak to trust.",
}


def _flag(
    name: str, raised: bool, value: float, threshold: float, n: int, detail: str, checked: bool = True
) -> dict[str, Any]:
    return {
        "name": name,
        "raised": bool(raised and checked),
        "checked": checked,
        "value": float(value),
        "threshold": float(threshold),
        "n": int(n),
        "detail": detail,
        "explanation": EXPLANATIONS[name],
    }


def check(
    model: nn.Module,
    split: Split,
    threat: ThreatModel,
    results: list[EvalResult],
    cfg: FlagConfig,
    *,
    num_classes: int | None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 500,
) -> list[dict[str, Any]]:
    """All flags for `model` on the first cfg.max_samples points of `split`, given the evaluations
    `results` of suites on the same split (per-sample arrays aligned from its first point)."""
    sub = split.head(cfg.max_samples).to(device)
    with model_untouched(model):
        with torch.no_grad():
            clean = torch.cat([model(x).argmax(1) == y for x, y in batches(sub, batch_size)]).cpu().numpy()
        flags = [_randomised(model, sub, cfg, batch_size), _zero_grad(model, sub, cfg, batch_size)]
    probe = _Probe(model, sub, clean, num_classes, seed, batch_size)
    flags += _eps_flags(probe, threat, cfg, clean)
    views = _classify(results)
    flags.append(_single_step(probe, threat, views, cfg, clean))
    flags.append(_square(probe, threat, views, cfg, clean))
    return flags


class _Probe:
    """Runs an attack on the clean-correct points of the subset -> the (n,) bool mask of points it breaks."""

    def __init__(self, model, sub: Split, clean: np.ndarray, num_classes, seed: int, batch_size: int):
        self.model, self.sub, self.clean, self.num_classes, self.seed, self.batch_size = (
            model,
            sub,
            clean,
            num_classes,
            seed,
            batch_size,
        )

    def broken(self, spec: str | dict[str, Any], threat: ThreatModel, only: np.ndarray | None = None) -> np.ndarray:
        """Clean-correct points (of `only`, when given) that the attack misclassifies; a point the model gets wrong
        on clean input is never counted as broken."""
        attack = build_attack(spec, threat, seed=self.seed, num_classes=self.num_classes)
        todo = self.clean if only is None else self.clean & only
        idx = np.flatnonzero(todo)
        broken = np.zeros_like(todo)
        if idx.size:
            part = self.sub.subset(torch.as_tensor(idx, device=self.sub.x.device))
            gen = torch.Generator(device=self.sub.x.device).manual_seed(self.seed)
            success = torch.cat(
                [attack.run(self.model, x, y, generator=gen).success for x, y in batches(part, self.batch_size)]
            )
            broken[idx[success.cpu().numpy()]] = True
        return broken


def _randomised(model, sub: Split, cfg: FlagConfig, batch_size: int) -> dict[str, Any]:
    change = scale = 0.0
    with torch.no_grad():
        for x, _ in batches(sub, batch_size):
            a, b = model(x), model(x)
            change = max(change, float(torch.nan_to_num((a - b).abs(), nan=float("inf")).amax()))
            scale = max(scale, float(a.abs().amax()))
    rel = change / max(1.0, scale)
    return _flag(
        "randomised",
        rel > cfg.logits_tol,
        rel,
        cfg.logits_tol,
        len(sub),
        f"largest logit change between two identical forward passes: {rel:.2g} (relative to the largest logit)",
    )


def _zero_grad(model, sub: Split, cfg: FlagConfig, batch_size: int) -> dict[str, Any]:
    bad = []
    for x, y in batches(sub, batch_size):
        x = x.clone().requires_grad_(True)
        logits = model(x)
        g_ce, g_margin = (
            torch.autograd.grad(loss.sum(), x, retain_graph=True)[0].flatten(1)
            for loss in (F.cross_entropy(logits, y, reduction="none"), margin(logits, y))
        )
        bad.append(torch.stack([((g == 0).all(1) | ~torch.isfinite(g).all(1)) for g in (g_ce, g_margin)]).any(0))
    bad_count = int(torch.cat(bad).sum())
    share = bad_count / len(sub)
    return _flag(
        "zero_grad",
        share > cfg.zero_grad_share,
        share,
        cfg.zero_grad_share,
        len(sub),
        f"{bad_count} of {len(sub)} points have a zero or non-finite input gradient (cross-entropy or logit margin)",
    )


def unbounded_eps(threat: ThreatModel, shape: tuple[int, ...]) -> float:
    """A radius that contains the whole [0, 1] box: 1 (linf) or its diagonal sqrt(d) (l2)."""
    return 1.0 if threat.norm == "linf" else math.sqrt(math.prod(shape))


def _eps_flags(probe: _Probe, threat: ThreatModel, cfg: FlagConfig, clean: np.ndarray) -> list[dict[str, Any]]:
    spec = {"name": "apgd-ce", "steps": cfg.probe_steps}
    radii = [(f"{f:g}ε", threat.scaled(f)) for f in cfg.eps_factors]
    radii.append(("unbounded", ThreatModel(threat.norm, unbounded_eps(threat, tuple(probe.sub.x.shape[1:])))))
    acc = {name: float((clean & ~probe.broken(spec, tm)).mean()) for name, tm in radii}
    n = len(clean)
    largest = radii[-2][0]
    curve = ", ".join(f"{name} {100 * a:.1f}%" for name, a in acc.items())
    where = f"APGD-CE-{cfg.probe_steps} on {n} points"
    large = acc[largest] > cfg.large_eps_acc or acc["unbounded"] > cfg.unbounded_acc
    flags = [
        _flag(
            "large_eps",
            large,
            max(acc[largest], acc["unbounded"]),
            cfg.large_eps_acc,
            n,
            f"accuracy {100 * acc[largest]:.1f}% at {largest} (allowed {100 * cfg.large_eps_acc:g}%), "
            f"{100 * acc['unbounded']:.1f}% at unbounded ε (allowed {100 * cfg.unbounded_acc:g}%); {where}",
        )
    ]
    seq = [float(clean.mean()), *acc.values()]
    rise = max(max(seq[j] - seq[i] for j in range(i + 1, len(seq))) for i in range(len(seq) - 1))
    flags.append(
        _flag(
            "non_monotone",
            rise > cfg.monotone_tol,
            rise,
            cfg.monotone_tol,
            n,
            f"largest rise of accuracy with ε: {100 * rise:.1f} points (clean {100 * seq[0]:.1f}%, {curve}; {where})",
        )
    )
    return flags


def _classify(results: list[EvalResult]) -> dict[str, list[np.ndarray]]:
    """Per-sample robust arrays of the results by kind: single (FGSM), whitebox, iterative, square."""
    views: dict[str, list[np.ndarray]] = {"single": [], "whitebox": [], "iterative": [], "square": []}
    for r in results:
        for label in r.suite:
            robust = r.per_sample[label]
            comps = list(r.stages.get(label, {}))
            if comps:  # a cascade (AutoAttack): white-box up to its first Square stage
                sq = next((i for i, c in enumerate(comps) if c.startswith("square")), None)
                if sq is None:
                    views["whitebox"].append(robust)
                else:
                    before = r.per_sample[f"{label}:{comps[sq - 1]}"] if sq > 0 else r.per_sample["clean"]
                    views["whitebox"].append(before)
                    views["square"].append(r.per_sample[f"{label}:{comps[sq]}"])
                views["iterative"].append(robust)
            elif label.startswith("fgsm"):
                views["single"].append(robust)
                views["whitebox"].append(robust)
            elif label.startswith("square"):
                views["square"].append(robust)
                views["iterative"].append(robust)
            else:
                views["whitebox"].append(robust)
                views["iterative"].append(robust)
    return views


def _broken(arrays: list[np.ndarray], clean: np.ndarray, m: int) -> np.ndarray:
    """(m,) bool: clean-correct and broken by at least one of `arrays` (each covers its own first points)."""
    out = np.zeros(m, dtype=bool)
    for a in arrays:
        k = min(m, len(a))
        out[:k] |= ~a[:k]
    return out & clean[:m]


def _covered(arrays: list[np.ndarray], n: int) -> int:
    return min(n, max((len(a) for a in arrays), default=0))


def _single_step(probe: _Probe, threat: ThreatModel, views, cfg: FlagConfig, clean: np.ndarray) -> dict[str, Any]:
    m = _covered(views["iterative"], len(clean))
    if m == 0:
        return _flag(
            "single_step", False, 0.0, cfg.single_step_share, 0, "the suite has no iterative attack", checked=False
        )
    if views["single"]:
        m = min(m, _covered(views["single"], m))
        single = _broken(views["single"], clean, m)
        source = "the suite's FGSM"
    else:
        single = probe.broken("fgsm", threat)[:m]
        source = "an FGSM probe"
    count = int((single & ~_broken(views["iterative"], clean, m)).sum())
    share = count / m
    return _flag(
        "single_step",
        share > cfg.single_step_share,
        share,
        cfg.single_step_share,
        m,
        f"{source} breaks {count} of {m} points that no iterative attack of the suite breaks",
    )


def _square(probe: _Probe, threat: ThreatModel, views, cfg: FlagConfig, clean: np.ndarray) -> dict[str, Any]:
    if views["square"]:
        m = _covered(views["square"], len(clean))
        square = _broken(views["square"], clean, m)
        source = "the suite's Square"
    else:
        m = _covered(views["whitebox"], len(clean))
        if m == 0:
            return _flag("square", False, 0.0, cfg.square_share, 0, "the suite has no white-box attack", checked=False)
        only = np.zeros(len(clean), dtype=bool)
        only[:m] = ~_broken(views["whitebox"], clean, m)
        square = probe.broken({"name": "square", "queries": cfg.square_queries}, threat, only=only)[:m]
        source = f"a Square probe ({cfg.square_queries} queries)"
    count = int((square & ~_broken(views["whitebox"], clean, m)).sum())
    share = count / m
    return _flag(
        "square",
        share > cfg.square_share,
        share,
        cfg.square_share,
        m,
        f"{source} breaks {count} of {m} points that every white-box attack of the suite missed",
    )
