"""FGSM and projected gradient descent (Madry et al. 2018) for linf and l2.

Losses: "ce" (cross-entropy), "cw" (the CW margin, so `cw(k)` = PGD-k with the margin loss as the
papers use it) and "kl" (KL to the clean output, the TRADES inner maximisation). Random start:
"uniform" in the ball, "normal" (x + sigma·N(0, I), TRADES uses sigma = 0.001) or "none".
Restarts keep the per-sample worst case. With `keep_best` every iterate is a candidate, so more
steps or restarts with the same seed never make the attack weaker. `eot_iter` > 1 steps along the gradient
averaged over that many passes, against randomised models (attacks.eot).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..errors import RobustlabError
from ..registry import check_range
from ..threat import ThreatModel, per_sample
from . import losses
from .base import Attack, AttackMode, check_logits
from .eot import expected_grad
from .registry import ATTACKS

Loss = Literal["ce", "cw", "kl"]
Start = Literal["uniform", "normal", "none"]


def ball_noise(
    x: torch.Tensor, norm: str, radius: float | torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Noise uniform in the `norm` ball of `radius` (a number or per-sample (N,)), shaped like x (`generator`
    None: torch's global generator)."""
    scale = per_sample(radius, x) if torch.is_tensor(radius) else radius
    if norm == "linf":
        return (2 * torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) - 1) * scale
    # uniform in the l2 ball: Gaussian direction, radius·U^(1/d)
    d = x[0].numel()
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = direction / per_sample(direction.flatten(1).norm(dim=1).clamp_min(1e-12), x)
    u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / d)
    return direction * per_sample(u, x) * scale


def random_start(
    x: torch.Tensor, threat: ThreatModel, kind: str, sigma: float, generator: torch.Generator | None
) -> torch.Tensor:
    """An initial point in the ball around x, clipped to [0, 1]."""
    if kind == "none":
        return x.clone()
    if kind == "normal":
        delta = sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    else:
        delta = ball_noise(x, threat.norm, threat.eps, generator)
    return (x + threat.project(delta)).clamp(0.0, 1.0)


def ascent_step(
    x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, threat: ThreatModel, step: float | torch.Tensor
) -> torch.Tensor:
    """One steepest-ascent step for the norm, then projection onto the ball and [0, 1].

    `step` is a number or a per-sample tensor (N,).
    """
    if torch.is_tensor(step):
        step = per_sample(step, x_adv)
    if threat.norm == "linf":
        x_adv = x_adv + step * grad.sign()
    else:
        g_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
        x_adv = x_adv + step * grad / per_sample(g_norm, grad)
    return (x + threat.project(x_adv - x)).clamp(0.0, 1.0)


@ATTACKS.register("pgd")
class PGD(Attack):
    """PGD-`steps` with step size `step` (default eps/4), `restarts` random restarts."""

    name = "pgd"
    # steps k < `steps` after which `run` also reports the points still robust, as stage "step{k}": the result
    # of the PGD-k that `prefix_of` this attack, so an evaluation runs the longest of PGD-10 ... PGD-100 only
    report_steps: tuple[int, ...] = ()

    def __init__(
        self,
        threat: ThreatModel,
        steps: int = 10,
        step: float | None = None,
        loss: Loss = "ce",
        random_start: Start = "uniform",
        sigma: float = 0.001,
        restarts: int = 1,
        targeted: bool = False,
        keep_best: bool = True,
        kappa: float = 50.0,
        eot_iter: int = 1,
        *,
        seed: int = 0,
        mode: AttackMode = "eval",
        num_classes: int | None = None,
    ):
        super().__init__(threat, seed=seed, mode=mode, num_classes=num_classes)
        check_range(f"{self.name} steps", steps, 1)
        check_range(f"{self.name} eot_iter", eot_iter, 1)
        self.eot_iter = eot_iter
        check_range(f"{self.name} restarts", restarts, 1)
        if self.threat.eps <= 0:
            raise RobustlabError(f"{self.name}: eps={self.threat.eps} must be > 0 for an attack.")
        self.step = float(step) if step is not None else self.threat.eps / 4
        check_range(f"{self.name} step", self.step, 0.0, lo_open=True)
        if loss not in ("ce", "cw", "kl"):
            raise RobustlabError(f"{self.name}: loss={loss!r}; allowed: ce, cw, kl.")
        if loss == "kl" and targeted:
            raise RobustlabError(f"{self.name}: the kl loss has no targeted form.")
        if random_start not in ("uniform", "normal", "none"):
            raise RobustlabError(f"{self.name}: random_start={random_start!r}; allowed: uniform, normal, none.")
        self.steps, self.loss, self.start, self.sigma = steps, loss, random_start, sigma
        self.restarts, self.targeted, self.keep_best, self.kappa = restarts, targeted, keep_best, kappa

    def __repr__(self) -> str:
        return (
            f"PGD({self.threat}, steps={self.steps}, step={self.step:.4g}, loss={self.loss}, restarts={self.restarts})"
        )

    @property
    def leaves_at_first_success(self) -> bool:
        """Whether `run` lets a point leave at its first successful iterate, which then decides it (every iterate
        a candidate; not for the KL loss, whose success is not what it ascends)."""
        return self.keep_best and self.loss != "kl"

    def prefix_of(self, other: Attack) -> bool:
        """Whether `run` of this attack gives what `other`'s gives after `self.steps` steps: the same PGD with more
        steps, one restart each, keeping the best iterate in evaluation mode. From the same generator both draw
        the same start and take the same first steps on the same points (a point leaves at its first success);
        PGD-k's last iterate is `other`'s k-th, every earlier one a candidate in both."""
        same = ("threat", "step", "loss", "start", "sigma", "targeted", "kappa", "eot_iter", "num_classes", "seed")
        return (
            type(other) is type(self)
            and isinstance(other, PGD)
            and other.steps > self.steps
            and self.restarts == other.restarts == 1
            and self.leaves_at_first_success
            and other.leaves_at_first_success
            and self.mode == other.mode == "eval"
            and all(getattr(self, a) == getattr(other, a) for a in same)
        )

    def _objective(self, logits: torch.Tensor, y: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        if self.loss == "kl":
            assert ref is not None, "the KL loss needs the clean logits"
            return losses.kl_to_reference(logits, ref)
        if self.loss == "ce":
            ce = losses.cross_entropy(logits, y)
            return -ce if self.targeted else ce
        return _target_margin(logits, y, self.kappa) if self.targeted else losses.cw_margin(logits, y, self.kappa)

    def _success(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred == y if self.targeted else pred != y

    def _run(self, model, x, y, generator, num_classes, need_success):
        ref = None
        if self.loss == "kl":
            with torch.no_grad():
                ref = F.log_softmax(model(x), 1)
        track = need_success or self.restarts > 1 or self.keep_best
        success_first = self.loss != "kl"  # an iterate that succeeds beats one with a higher loss that does not
        # run(...) needs only the success: a point may leave at its first successful iterate, which decides it;
        # attack(...) keeps every point to the end (training wants the highest-loss iterate)
        retire = need_success and self.leaves_at_first_success
        n = x.shape[0]
        s = {
            "idx": torch.arange(n, device=x.device),
            "x": x,
            "y": y,
            "best_x": x.clone(),
            "best_loss": torch.full((n,), float("-inf"), device=x.device),
            "best_succ": torch.zeros(n, dtype=torch.bool, device=x.device),
        }
        if ref is not None:
            s["ref"] = ref
        out_x, out_succ = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
        stages: dict[str, torch.Tensor] = {}

        def still_robust() -> torch.Tensor:
            robust = ~out_succ
            robust[s["idx"]] = ~s["best_succ"]
            return robust

        def consider(cand: torch.Tensor, logits: torch.Tensor, value: torch.Tensor) -> None:
            succ = self._success(logits, s["y"])
            better = value > s["best_loss"]
            if success_first:
                better = (succ & ~s["best_succ"]) | ((succ == s["best_succ"]) & better)
            # in place and without boolean indexing (no host sync, no gather/scatter): this runs every step
            s["best_x"].copy_(torch.where(per_sample(better, cand), cand, s["best_x"]))
            s["best_loss"].copy_(torch.where(better, value, s["best_loss"]))
            s["best_succ"].copy_(torch.where(better, succ, s["best_succ"]))

        for restart in range(self.restarts):
            x_adv = random_start(x, self.threat, self.start, self.sigma, generator)
            x_adv = x_adv if s["idx"].numel() == n else x_adv[s["idx"]]
            for t in range(self.steps):
                if s["idx"].numel() == 0:
                    break
                objective = partial(self._objective, y=s["y"], ref=s.get("ref"))
                value, grad, logits = expected_grad(model, x_adv, objective, self.eot_iter)
                if restart == t == 0:
                    check_logits(self.name, logits, n, num_classes)
                x_adv = x_adv.detach()
                if self.keep_best:
                    consider(x_adv, logits, value)
                if t in self.report_steps and retire:  # iterates 0..t considered: PGD-t's result
                    stages[f"step{t}"] = still_robust()
                x_adv = ascent_step(x_adv, grad, s["x"], self.threat, self.step)
                if retire and s["best_succ"].any():  # one host sync per step: broken points leave at once
                    done = s["best_succ"]
                    out_x[s["idx"][done]], out_succ[s["idx"][done]] = s["best_x"][done], True
                    keep = torch.nonzero(~done).flatten()
                    s = {key: v.index_select(0, keep) for key, v in s.items()}
                    x_adv = x_adv.index_select(0, keep)
            if track and s["idx"].numel():
                with torch.no_grad():
                    logits = model(x_adv)
                    consider(x_adv, logits, self._objective(logits, s["y"], s.get("ref")))
            elif not track:
                s["best_x"] = x_adv
        out_x[s["idx"]], out_succ[s["idx"]] = s["best_x"], s["best_succ"]
        if not (self.report_steps and retire):
            return out_x, out_succ
        # a step the loop did not reach: every point had left, broken, before it
        return out_x, out_succ, {f"step{k}": stages.get(f"step{k}", ~out_succ) for k in self.report_steps}


def _target_margin(logits: torch.Tensor, target: torch.Tensor, kappa: float) -> torch.Tensor:
    """Targeted CW: z_t − max_{j≠t} z_j, capped at kappa (maximised by the attack)."""
    return (-losses.cw_margin(logits, target, float("inf"))).clamp(max=kappa)


@ATTACKS.register("fgsm")
class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size eps from x; l2: FGM."""

    name = "fgsm"

    def __init__(
        self,
        threat: ThreatModel,
        loss: Loss = "ce",
        targeted: bool = False,
        *,
        seed: int = 0,
        mode: AttackMode = "eval",
        num_classes: int | None = None,
    ):
        super().__init__(
            threat,
            steps=1,
            step=ThreatModel.parse(threat).eps,
            loss=loss,
            random_start="none",
            targeted=targeted,
            keep_best=False,
            seed=seed,
            mode=mode,
            num_classes=num_classes,
        )

    def __repr__(self) -> str:
        return f"FGSM({self.threat}, loss={self.loss})"


@ATTACKS.register("cw")
def cw(
    threat: ThreatModel,
    steps: int = 10,
    step: float | None = None,
    random_start: Literal["uniform", "normal", "none"] = "uniform",
    restarts: int = 1,
    targeted: bool = False,
    keep_best: bool = True,
    kappa: float = 50.0,
    eot_iter: int = 1,
    **kw: Any,
) -> PGD:
    """PGD with the CW margin loss (the papers' `CW-k`)."""
    attack = PGD(
        threat,
        steps=steps,
        step=step,
        loss="cw",
        random_start=random_start,
        restarts=restarts,
        targeted=targeted,
        keep_best=keep_best,
        kappa=kappa,
        eot_iter=eot_iter,
        **kw,
    )
    attack.name = "cw"
    return attack
