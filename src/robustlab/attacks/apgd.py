"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020), Algorithm 1, for linf and l2.

PGD without a step size to tune: the step starts at η(0) = 2ε and is halved at checkpoints w_j when
the search stalls; a momentum term (α = 0.75) mixes the new step with the last one:

    z(k+1) = P_S(x(k) + η(k) ∇f(x(k)))                                   (sign / l2-normalised gradient)
    x(k+1) = P_S(x(k) + α (z(k+1) − x(k)) + (1 − α)(x(k) − x(k−1)))        (α = 1 for the first step)

Checkpoints: w_j = ⌈p_j N_iter⌉ with p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06).
At w_j the step is halved, and the search restarts from the best point x_max, if

    Condition 1: Σ_{i=w_{j−1}}^{w_j −1} 1[f(x(i+1)) > f(x(i))] < ρ · (w_j − w_{j−1})   (ρ = 0.75)
    Condition 2: η(w_{j−1}) ≡ η(w_j) and f_max(w_{j−1}) ≡ f_max(w_j)   (no halving, no progress)

Losses: cross-entropy (APGD-CE) and the difference of logits ratio DLR (APGD-DLR); APGD-T maximises
the targeted DLR towards each of the `n_target_classes` classes with the largest clean logits in turn.
A point counts as broken once any iterate is misclassified; broken points leave the batch (their
result cannot change), so the cost falls as the attack succeeds. Against a randomised model, `eot_iter` > 1
averages the loss and gradient of each iterate over that many passes (attacks.eot; AutoAttack `rand` uses 20).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from ..errors import RobustlabError
from ..registry import check_range
from ..threat import ThreatModel, per_sample
from . import losses
from .base import (
    Attack,
    AttackMode,
    check_logits,
    check_targets,
    malt_targets,
    rows_to_keep,
    run_generators,
    run_in_passes,
    top_other_classes,
)
from .eot import expected_grad
from .pgd import ascent_step, random_start
from .registry import ATTACKS

ApgdLoss = Literal["ce", "dlr"]
Targeting = Literal["logits", "malt"]


def checkpoints(steps: int) -> set[int]:
    """The iterations w_j (1-based) at which the step size may be halved."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return {math.ceil(q * steps - 1e-9) for q in p[1:]}


@ATTACKS.register("apgd")
class APGD(Attack):
    """APGD with `loss` ce or dlr, untargeted or targeted (top `n_target_classes` targets, one run each)."""

    name = "apgd"

    def __init__(
        self,
        threat: ThreatModel,
        steps: int = 100,
        loss: ApgdLoss = "ce",
        targeted: bool = False,
        n_target_classes: int = 9,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        initial_step: float = 2.0,
        targeting: Targeting = "logits",
        runs_per_pass: int | None = None,
        eot_iter: int = 1,
        *,
        seed: int = 0,
        mode: AttackMode = "eval",
        num_classes: int | None = None,
    ):
        super().__init__(threat, seed=seed, mode=mode, num_classes=num_classes)
        self.check_threat()
        check_range(f"{self.name} steps", steps, 1)
        check_range(f"{self.name} restarts", restarts, 1)
        check_range(f"{self.name} n_target_classes", n_target_classes, 1)
        check_range(f"{self.name} rho", rho, 0.0, 1.0, lo_open=True)
        check_range(f"{self.name} momentum", momentum, 0.0, 1.0)
        check_range(f"{self.name} initial_step", initial_step, 0.0, lo_open=True)
        if loss not in ("ce", "dlr"):
            raise RobustlabError(f"{self.name}: loss={loss!r}; allowed: ce, dlr.")
        if targeting not in ("logits", "malt"):
            raise RobustlabError(f"{self.name}: targeting={targeting!r}; allowed: logits, malt.")
        if runs_per_pass is not None:
            check_range(f"{self.name} runs_per_pass", runs_per_pass, 1)
        self.steps, self.loss, self.targeted, self.n_target_classes = steps, loss, targeted, n_target_classes
        self.restarts, self.rho, self.momentum, self.initial_step = restarts, rho, momentum, initial_step
        self.targeting, self.runs_per_pass = targeting, runs_per_pass
        self.checkpoints = checkpoints(steps)
        check_range(f"{self.name} eot_iter", eot_iter, 1)
        self.eot_iter = eot_iter
        if num_classes is not None:
            self._check_classes(num_classes)

    def __repr__(self) -> str:
        kind = f"targeted, {self.n_target_classes} targets" if self.targeted else f"restarts={self.restarts}"
        return f"APGD({self.threat}, steps={self.steps}, loss={self.loss}, {kind})"

    def _check_classes(self, k: int) -> None:
        if self.targeted:
            check_targets(self.name, self.n_target_classes, k)
        need = 4 if self.targeted else 3
        if self.loss == "dlr" and k < need:
            raise RobustlabError(
                f"{self.name}: the {'targeted ' if self.targeted else ''}DLR loss needs at least {need} classes; "
                f"the model has {k}. Use apgd-ce."
            )

    def _objective(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if self.loss == "ce":
            return -losses.cross_entropy(logits, target) if target is not None else losses.cross_entropy(logits, y)
        return losses.targeted_dlr(logits, y, target) if target is not None else losses.dlr(logits, y)

    def _value_and_grad(self, model, x_adv, y, target):
        """(loss (M,), input gradient, logits) at x_adv, averaged over `eot_iter` passes (attacks.eot); non-finite
        gradient entries become 0."""
        value, grad, logits = expected_grad(model, x_adv, lambda out: self._objective(out, y, target), self.eot_iter)
        return value, torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0), logits

    def _run(self, model, x, y, generator, num_classes, need_success):
        with torch.no_grad():
            logits = model(x)
        check_logits(self.name, logits, x.shape[0], num_classes)
        self._check_classes(logits.shape[1])
        success = logits.argmax(1) != y
        x_adv = x.clone()
        targets = None
        if self.targeted and self.targeting == "malt":
            targets = malt_targets(model, x, y, logits, self.n_target_classes, self.threat.norm)
        elif self.targeted:
            targets = top_other_classes(logits, y, self.n_target_classes)
        n_runs = (self.n_target_classes if self.targeted else 1) * self.restarts  # run r: target r // restarts
        generators = run_generators(generator, n_runs)

        def attack_rows(point, run, owner, m):
            blocks = zip(run.view(-1, m)[:, 0].tolist(), point.view(-1, m))
            start = torch.cat([random_start(x, self.threat, "uniform", 0.0, generators[r])[p] for r, p in blocks])
            target = targets[point, run // self.restarts] if targets is not None else None
            return self._single_run(model, x[point], y[point], target, start, owner, m)

        run_in_passes(x_adv, success, n_runs, self.runs_per_pass, attack_rows)
        return x_adv, success

    def _single_run(self, model, x, y, target, x_start, owner, m):
        """One APGD run per row (R rows, `owner` numbers their m points) -> (broken (R,) bool, x_adv (R, ...):
        the first misclassified iterate, else x_max). The rows of a point stop once one of them breaks it."""
        rows = x.shape[0]
        found = torch.zeros(rows, dtype=torch.bool, device=x.device)
        x_out = x.clone()
        f_cur, grad, logits = self._value_and_grad(model, x_start, y, target)
        s = {
            "idx": torch.arange(rows, device=x.device),
            "owner": owner,
            "x": x,
            "y": y,
            "cur": x_start,
            "prev": x_start,
            "f": f_cur,
            "grad": grad,
            "best": x_start,
            "f_best": f_cur,
            "grad_best": grad,
            "eta": torch.full((rows,), self.initial_step * self.threat.eps, device=x.device),
            "ups": torch.zeros(rows, device=x.device),
            "halved_last": torch.zeros(rows, dtype=torch.bool, device=x.device),
            "f_best_last": f_cur,
        }
        if target is not None:
            s["target"] = target
        s = self._retire(s, logits, found, x_out, m)
        last_checkpoint = 0
        for k in range(1, self.steps + 1):
            if s["idx"].numel() == 0:
                break
            alpha = 1.0 if k == 1 else self.momentum
            z = ascent_step(s["cur"], s["grad"], s["x"], self.threat, s["eta"])
            x_new = s["cur"] + alpha * (z - s["cur"]) + (1 - alpha) * (s["cur"] - s["prev"])
            x_new = (s["x"] + self.threat.project(x_new - s["x"])).clamp(0.0, 1.0)
            f_new, grad, logits = self._value_and_grad(model, x_new, s["y"], s.get("target"))
            s["ups"] = s["ups"] + (f_new > s["f"]).float()
            s["prev"], s["cur"], s["f"], s["grad"] = s["cur"], x_new, f_new, grad
            better = f_new > s["f_best"]
            s["best"] = torch.where(per_sample(better, x_new), x_new, s["best"])
            s["grad_best"] = torch.where(per_sample(better, grad), grad, s["grad_best"])
            s["f_best"] = torch.where(better, f_new, s["f_best"])
            # before a checkpoint may move "cur" back to the best point: the iterate recorded is the one judged
            s = self._retire(s, logits, found, x_out, m)
            if k in self.checkpoints:
                cond1 = s["ups"] < self.rho * (k - last_checkpoint)
                cond2 = ~s["halved_last"] & (s["f_best"] <= s["f_best_last"])
                halve = cond1 | cond2
                s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
                s["cur"] = torch.where(per_sample(halve, s["cur"]), s["best"], s["cur"])
                s["grad"] = torch.where(per_sample(halve, s["grad"]), s["grad_best"], s["grad"])
                s["f"] = torch.where(halve, s["f_best"], s["f"])
                s["halved_last"], s["f_best_last"], s["ups"] = halve, s["f_best"], torch.zeros_like(s["ups"])
                last_checkpoint = k
        x_out[s["idx"]] = s["best"]
        return found, x_out

    @staticmethod
    def _retire(
        s: dict[str, torch.Tensor], logits: torch.Tensor, found: torch.Tensor, x_out: torch.Tensor, m: int
    ) -> dict[str, torch.Tensor]:
        """Record the rows whose current iterate is misclassified; drop them and the other rows of their points."""
        fooled = logits.argmax(1) != s["y"]
        if not fooled.any():  # the one host sync of an iteration: broken points leave the batch at once
            return s
        found[s["idx"][fooled]] = True
        x_out[s["idx"][fooled]] = s["cur"][fooled]
        keep = torch.nonzero(rows_to_keep(s["owner"], fooled, m)).flatten()
        return {key: v.index_select(0, keep) for key, v in s.items()}


@ATTACKS.register("apgd-ce")
class APGDCE(APGD):
    """APGD on the cross-entropy: AutoAttack's first attack."""

    name = "apgd-ce"

    def __init__(
        self,
        threat: ThreatModel,
        steps: int = 100,
        restarts: int = 1,
        runs_per_pass: int | None = None,
        eot_iter: int = 1,
        *,
        seed: int = 0,
        mode: AttackMode = "eval",
        num_classes: int | None = None,
    ):
        super().__init__(
            threat,
            steps,
            "ce",
            restarts=restarts,
            runs_per_pass=runs_per_pass,
            eot_iter=eot_iter,
            seed=seed,
            mode=mode,
            num_classes=num_classes,
        )


@ATTACKS.register("apgd-dlr")
class APGDDLR(APGD):
    """APGD on the untargeted DLR loss (AutoAttack `plus`)."""

    name = "apgd-dlr"

    def __init__(
        self,
        threat: ThreatModel,
        steps: int = 100,
        restarts: int = 1,
        runs_per_pass: int | None = None,
        eot_iter: int = 1,
        *,
        seed: int = 0,
        mode: AttackMode = "eval",
        num_classes: int | None = None,
    ):
        super().__init__(
            threat,
            steps,
            "dlr",
            restarts=restarts,
            runs_per_pass=runs_per_pass,
            eot_iter=eot_iter,
            seed=seed,
            mode=mode,
            num_classes=num_classes,
        )


@ATTACKS.register("apgd-t")
class APGDT(APGD):
    """APGD on the targeted DLR loss, one run per target among the top `n_target_classes` (AutoAttack's second)."""

    name = "apgd-t"

    def __init__(
        self,
        threat: ThreatModel,
        steps: int = 100,
        n_target_classes: int = 9,
        targeting: Targeting = "logits",
        runs_per_pass: int | None = None,
        eot_iter: int = 1,
        *,
        seed: int = 0,
        mode: AttackMode = "eval",
        num_classes: int | None = None,
    ):
        super().__init__(
            threat,
            steps,
            "dlr",
            targeted=True,
            n_target_classes=n_target_classes,
            targeting=targeting,
            runs_per_pass=runs_per_pass,
            eot_iter=eot_iter,
            seed=seed,
            mode=mode,
            num_classes=num_classes,
        )
