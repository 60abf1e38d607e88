"""FAB, the fast adaptive boundary attack (Croce & Hein, "Minimally distorted adversarial examples
with a fast adaptive boundary attack", ICML 2020), Algorithm 1, for linf and l2; untargeted and the
targeted FAB-T of AutoAttack.

FAB looks for the adversarial point closest to x. At the iterate x(i) it linearises the decision
boundary between the true class c and a class s,

    π_s:  f_s(x(i)) − f_c(x(i)) + ∇(f_s − f_c)(x(i))·(z − x(i)) = 0,

with s = argmin_{l≠c} |f_l − f_c| / ‖∇f_l − ∇f_c‖_q (the closest linearised boundary; q is the dual
norm) or s = the target (FAB-T). It projects both x(i) and x onto π_s ∩ [0, 1]^d (δ(i), δ_orig) and
moves to a biased convex combination with overshoot η:

    α = min(‖δ(i)‖ / (‖δ(i)‖ + ‖δ_orig‖), α_max)
    x(i+1) = P_[0,1]((1 − α)(x(i) + η δ(i)) + α (x + η δ_orig))

and once x(i+1) is misclassified it records it (if closer than the best so far) and steps back
towards x: x(i+1) ← (1 − β) x + β x(i+1). Restarts after the first start at a random point of the
ball of radius min(‖best − x‖, ε)/2. A point counts as broken when an adversarial point within ε
was found; such points leave the batch.
"""

from __future__ import annotations

import torch

from ..registry import check_range
from ..threat import ThreatModel, per_sample
from .base import (
    Attack,
    AttackMode,
    boundary_distances,
    check_logits,
    check_targets,
    margin_gradients,
    rows_to_keep,
    run_generators,
    run_in_passes,
    top_other_classes,
)
from .pgd import ball_noise
from .registry import ATTACKS


def project_hyperplane_box(p: torch.Tensor, w: torch.Tensor, c: torch.Tensor, norm: str) -> torch.Tensor:
    """δ of least `norm` with w·(p + δ) + c = 0 and p + δ in [0, 1]^d; p, w (M, d), c (M,) -> δ (M, d).

    The minimiser is δ_i = sign(w_i)·min(λ|v_i|, room_i) with v = sign(w) (linf) or w (l2) and room_i
    the distance to the box face in that direction; w·δ(λ) is piecewise linear and non-decreasing in
    λ, so λ is found exactly from the sorted break points. When the hyperplane misses the box, every
    coordinate moves to its face (the closest the box gets to the hyperplane).
    """
    r = -(w * p).sum(1) - c
    flip = torch.where(r < 0, -1.0, 1.0).to(w.dtype)
    w, r = w * flip[:, None], r * flip  # now w·δ must reach r >= 0
    v = w.sign() if norm == "linf" else w
    room = torch.where(w > 0, 1 - p, p)
    a, b = w.abs() * room, w.abs() * v.abs()  # contribution when saturated, slope while not
    breaks = torch.where(v != 0, room / v.abs().clamp_min(1e-30), torch.full_like(room, float("inf")))
    breaks, order = breaks.sort(1)
    a, b = a.gather(1, order), b.gather(1, order)
    sat = a.cumsum(1)  # Σ_{j<=k} a_(j)
    rest = b.flip(1).cumsum(1).flip(1) - b  # Σ_{j>k} b_(j)
    g = sat + torch.where(rest > 0, breaks * rest, torch.zeros_like(rest))  # w·δ at λ = breaks_(k)
    n = (g < r[:, None]).sum(1)  # break points passed before reaching r
    d = p.shape[1]
    zero = torch.zeros_like(r[:, None])
    sat_n = torch.cat([zero, sat], 1).gather(1, n[:, None]).squeeze(1)
    rest_n = torch.cat([b.sum(1, keepdim=True), rest], 1).gather(1, n[:, None]).squeeze(1)
    lam = (r - sat_n) / rest_n.clamp_min(1e-30)
    step = torch.minimum(lam[:, None] * v.abs(), room)
    step = torch.where((n == d)[:, None], room * (v != 0), step)
    return step * w.sign()


@ATTACKS.register("fab")
class FAB(Attack):
    """FAB, untargeted (every class is a candidate boundary) or targeted (top `n_target_classes` targets)."""

    name = "fab"

    def __init__(
        self,
        threat: ThreatModel,
        steps: int = 100,
        restarts: int = 1,
        targeted: bool = False,
        n_target_classes: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        runs_per_pass: int | None = None,
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
        check_range(f"{self.name} alpha_max", alpha_max, 0.0, 1.0)
        check_range(f"{self.name} eta", eta, 1.0)
        check_range(f"{self.name} beta", beta, 0.0, 1.0)
        if runs_per_pass is not None:
            check_range(f"{self.name} runs_per_pass", runs_per_pass, 1)
        self.steps, self.restarts, self.targeted, self.n_target_classes = steps, restarts, targeted, n_target_classes
        self.alpha_max, self.eta, self.beta, self.runs_per_pass = alpha_max, eta, beta, runs_per_pass
        if targeted and num_classes is not None:
            check_targets(self.name, n_target_classes, num_classes)

    def __repr__(self) -> str:
        kind = f"targeted, {self.n_target_classes} targets" if self.targeted else "untargeted"
        return f"FAB({self.threat}, steps={self.steps}, restarts={self.restarts}, {kind})"

    def _run(self, model, x, y, generator, num_classes, need_success):
        with torch.no_grad():
            logits = model(x)
        check_logits(self.name, logits, x.shape[0], num_classes)
        if self.targeted:
            check_targets(self.name, self.n_target_classes, logits.shape[1])
        success = logits.argmax(1) != y
        x_adv = x.clone()
        targets = top_other_classes(logits, y, self.n_target_classes) if self.targeted else None
        n_runs = (self.n_target_classes if self.targeted else 1) * self.restarts  # run r: target r // restarts
        generators = run_generators(generator, n_runs)

        def attack_rows(point, run, owner, m):
            # a restart starts at a random point of the ball of radius ε/2 (a point is attacked while its best
            # adversarial point, if any, is farther than ε: min(‖best − x‖, ε)/2 is ε/2)
            blocks = zip(run.view(-1, m)[:, 0].tolist(), point.view(-1, m))
            start = torch.cat(
                [
                    (x + ball_noise(x, self.threat.norm, self.threat.eps / 2, generators[r])).clamp(0.0, 1.0)[p]
                    if r % self.restarts
                    else x[p]
                    for r, p in blocks
                ]
            )
            target = targets[point, run // self.restarts] if targets is not None else None
            best, best_norm = self._single_run(model, x[point], y[point], target, start, owner, m)
            found = best_norm <= self.threat.eps
            return found, torch.where(per_sample(found, best), best, x[point])

        run_in_passes(x_adv, success, n_runs, self.runs_per_pass, attack_rows)
        return x_adv, success

    def _boundary(self, model, x_i, y, target):
        """(f (M,), ∇f (M, ...)) for f = f_s − f_c at x_i, s = target or the closest linearised boundary."""
        margins, grads = margin_gradients(model, x_i, y, None if target is None else target[:, None])
        if target is None:
            s = boundary_distances(margins, grads, self.threat.norm).scatter(1, y[:, None], float("inf")).argmin(1)
        else:
            s = torch.zeros_like(y)
        f = margins.gather(1, s[:, None]).squeeze(1)
        g = grads.gather(1, s[:, None, None].expand(-1, 1, grads.shape[2])).squeeze(1)
        return f, g.view_as(x_i)

    def _single_run(self, model, x, y, target, x_i, owner, m):
        """Algorithm 1 from x_i on each of R rows (`owner` numbers their m points) -> (best (R, ...), best_norm (R,)):
        the closest adversarial point found and its distance (inf if none). The rows of a point stop once one of
        them finds an adversarial point within ε."""
        best = x.clone()
        best_norm = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
        s = {"idx": torch.arange(x.shape[0], device=x.device), "owner": owner, "x": x, "y": y, "x_i": x_i}
        if target is not None:
            s["target"] = target
        for _ in range(self.steps):
            if s["idx"].numel() == 0:
                break
            xo, yo, x_i = s["x"], s["y"], s["x_i"]
            f, grad = self._boundary(model, x_i, yo, s.get("target"))
            w = grad.flatten(1)
            c = f - (w * x_i.flatten(1)).sum(1)
            delta = project_hyperplane_box(
                torch.cat([x_i.flatten(1), xo.flatten(1)]), torch.cat([w, w]), torch.cat([c, c]), self.threat.norm
            ).view(2, *x_i.shape)
            n_cur, n_orig = self.threat.norms(delta[0]), self.threat.norms(delta[1])
            alpha = (n_cur / (n_cur + n_orig).clamp_min(1e-12)).clamp(max=self.alpha_max)
            a = per_sample(alpha, x_i)
            x_new = ((1 - a) * (x_i + self.eta * delta[0]) + a * (xo + self.eta * delta[1])).clamp(0.0, 1.0)
            with torch.inference_mode():
                adv = model(x_new).argmax(1) != yo
            dist = self.threat.norms(x_new - xo)
            closer = adv & (dist < best_norm[s["idx"]])
            best[s["idx"][closer]] = x_new[closer]
            best_norm[s["idx"][closer]] = dist[closer]
            s["x_i"] = torch.where(per_sample(adv, x_new), (1 - self.beta) * xo + self.beta * x_new, x_new)
            within = closer & (dist <= self.threat.eps)
            if within.any():  # the one host sync of an iteration: broken points leave the batch at once
                keep = torch.nonzero(rows_to_keep(s["owner"], within, m)).flatten()
                s = {key: v.index_select(0, keep) for key, v in s.items()}
        return best, best_norm


@ATTACKS.register("fab-t")
class FABT(FAB):
    """Targeted FAB, one run per target among the top `n_target_classes` (AutoAttack's third attack)."""

    name = "fab-t"

    def __init__(
        self,
        threat: ThreatModel,
        steps: int = 100,
        n_target_classes: int = 9,
        runs_per_pass: int | None = None,
        *,
        seed: int = 0,
        mode: AttackMode = "eval",
        num_classes: int | None = None,
    ):
        super().__init__(
            threat,
            steps,
            targeted=True,
            n_target_classes=n_target_classes,
            runs_per_pass=runs_per_pass,
            seed=seed,
            mode=mode,
            num_classes=num_classes,
        )
