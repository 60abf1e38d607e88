"""Square Attack (Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient
black-box adversarial attack via random search", ECCV 2020), for linf and l2.

A score-based black-box attack: it only queries the model's logits. Random search on the margin
loss z_y − max_{j≠y} z_j: each iteration changes the perturbation inside a random square window of
side h = round(sqrt(p · H · W)) and keeps the change if the margin decreases. The fraction p starts
at `p_init` (0.8, AutoAttack's value) and is halved at iterations 10, 50, 200, 500, 1000, 2000, 4000,
6000 and 8000 (the schedule is written for 10,000 queries; AutoAttack uses it unscaled with 5,000,
`rescale_schedule=True` stretches it over the budget).

- linf: start from vertical stripes x ± ε (one sign per column and channel); a step sets the window
  to x ± ε with one random sign per channel (the paper's ρ ∈ {−2ε, 2ε} added, then projected).
- l2: start from a grid of pseudo-Gaussian tiles with random signs, scaled to norm ε; a step draws
  two windows W1, W2, puts a new pseudo-Gaussian pattern plus the old perturbation of W1 into W1,
  with the mass of W1 ∪ W2 (so W2's is moved into W1), zeroes W2, and rescales to norm ε.

Every query is one forward pass of one image; the initial point costs one query, so a point never
uses more than `queries` forward passes. Points leave the batch once misclassified.
"""

from __future__ import annotations

import torch

from ..registry import check_range
from ..threat import ThreatModel, per_sample
from . import losses
from .base import Attack, AttackMode, check_logits
from .registry import ATTACKS

HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(p_init: float, it: int, queries: int, rescale: bool) -> float:
    """The square-size fraction at iteration `it`: p_init halved at each of HALVINGS passed."""
    if rescale:
        it = int(it / queries * 10000)
    return p_init / 2 ** sum(it > h for h in HALVINGS)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y − max_{j≠y} z_j (N,): negative once the point is misclassified."""
    return -losses.cw_margin(logits, y, float("inf"))


def pseudo_gaussian(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """Concentric rectangles: entry = Σ_{k ≥ d} 1/(k+1)², d its ring around the centre; unit l2 norm."""
    if rows == 0:
        return torch.zeros(0, cols, device=device)
    rings = max(rows // 2 + 1, cols // 2 + 1)
    r = (torch.arange(rows, device=device) - (rows // 2)).abs()
    c = (torch.arange(cols, device=device) - (cols // 2)).abs()
    ring = torch.maximum(r[:, None], c[None, :])
    tail = (1.0 / (torch.arange(rings, device=device, dtype=torch.float32) + 1) ** 2).flip(0).cumsum(0).flip(0)
    pattern = tail[ring]
    return pattern / pattern.norm()


def eta_pattern(s: int, device: torch.device) -> torch.Tensor:
    """The paper's η for an s×s window: two pseudo-Gaussian halves of opposite sign, unit l2 norm."""
    pattern = torch.cat([pseudo_gaussian(s // 2, s, device), -pseudo_gaussian(s - s // 2, s, device)])
    return pattern / pattern.norm()


def window_mask(n: int, h: int, w: int, s: int, generator: torch.Generator, device: torch.device):
    """Random s×s windows, one per sample: (mask (n, 1, h, w) bool, top (n,), left (n,))."""
    top = torch.randint(0, h - s + 1, (n,), generator=generator, device=device)
    left = torch.randint(0, w - s + 1, (n,), generator=generator, device=device)
    rows = torch.arange(h, device=device)[None, :] - top[:, None]
    cols = torch.arange(w, device=device)[None, :] - left[:, None]
    mask = ((rows >= 0) & (rows < s))[:, :, None] & ((cols >= 0) & (cols < s))[:, None, :]
    return mask[:, None], top, left


def place(
    pattern: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int, flip: torch.Tensor
) -> torch.Tensor:
    """An s×s `pattern` placed at (top, left) per sample, transposed where `flip`: (n, 1, h, w); outside the
    window the values are meaningless (callers mask them)."""
    s = pattern.shape[0]
    rows = (torch.arange(h, device=top.device)[None, :] - top[:, None]).clamp(0, s - 1)
    cols = (torch.arange(w, device=top.device)[None, :] - left[:, None]).clamp(0, s - 1)
    r, c = rows[:, :, None], cols[:, None, :]
    return torch.where(flip[:, None, None], pattern[c, r], pattern[r, c])[:, None]


def _signs(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1


def _sq_norm(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return (t**2).sum(dims, keepdim=True)


@ATTACKS.register("square")
class Square(Attack):
    """Square Attack with a budget of `queries` forward passes per point (AutoAttack: 5000, p_init 0.8)."""

    name = "square"

    def __init__(
        self,
        threat: ThreatModel,
        queries: int = 5000,
        p_init: float = 0.8,
        rescale_schedule: bool = False,
        *,
        seed: int = 0,
        mode: AttackMode = "eval",
        num_classes: int | None = None,
    ):
        super().__init__(threat, seed=seed, mode=mode, num_classes=num_classes)
        self.check_threat()
        check_range(f"{self.name} queries", queries, 1)
        check_range(f"{self.name} p_init", p_init, 0.0, 1.0, lo_open=True)
        self.queries, self.p_init, self.rescale_schedule = queries, p_init, rescale_schedule

    def __repr__(self) -> str:
        return f"Square({self.threat}, queries={self.queries}, p_init={self.p_init})"

    def _run(self, model, x, y, generator, num_classes, need_success):
        # inference mode: cheaper forward passes than no_grad (pooling keeps no indices, no version counters);
        # the results are cloned outside it, so the caller gets ordinary tensors
        with torch.inference_mode():
            x_adv, success = self._search(model, x, y, generator, num_classes)
        return x_adv.clone(), success.clone()

    def _search(self, model, x, y, generator, num_classes):
        n = x.shape[0]
        x_adv = self._init(x, generator)
        logits = model(x_adv)
        check_logits(self.name, logits, n, num_classes)
        m_best = margin(logits, y)
        # the points still searched, compacted once per iteration in which some point broke
        idx, xo, yo, x_best = torch.arange(n, device=x.device), x, y, x_adv.clone()
        for it in range(1, self.queries):
            active = m_best >= 0
            if not active.all():  # the one host sync of an iteration: broken points leave the batch at once
                x_adv[idx[~active]] = x_best[~active]
                keep = torch.nonzero(active).flatten()
                idx, xo, yo, x_best, m_best = (t.index_select(0, keep) for t in (idx, xo, yo, x_best, m_best))
            if idx.numel() == 0:
                break
            p = p_schedule(self.p_init, it, self.queries, self.rescale_schedule)
            x_new = (
                self._step_linf(xo, x_best, p, generator)
                if self.threat.norm == "linf"
                else self._step_l2(xo, x_best, p, generator)
            )
            m_new = margin(model(x_new), yo)
            better = m_new < m_best
            x_best = torch.where(per_sample(better, x_new), x_new, x_best)
            m_best = torch.where(better, m_new, m_best)
        x_adv[idx] = x_best
        success = torch.ones(n, dtype=torch.bool, device=x.device)
        success[idx] = m_best < 0
        return x_adv, success

    def _init(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        eps = self.threat.eps
        if self.threat.norm == "linf":
            return (x + eps * _signs((n, c, 1, w), generator, x.device)).clamp(0.0, 1.0)
        s = max(h // 5, 1)
        tiles_h, tiles_w = h // s, w // s
        off_h, off_w = (h - s * tiles_h) // 2, (w - s * tiles_w) // 2
        tile = eta_pattern(s, x.device)
        signs = _signs((n, c, tiles_h, tiles_w), generator, x.device)
        grid = (signs[:, :, :, None, :, None] * tile[None, None, None, :, None, :]).reshape(
            n, c, tiles_h * s, tiles_w * s
        )
        delta = torch.zeros_like(x)
        delta[:, :, off_h : off_h + tiles_h * s, off_w : off_w + tiles_w * s] = grid
        return (x + eps * delta / per_sample(delta.flatten(1).norm(dim=1).clamp_min(1e-12), x)).clamp(0.0, 1.0)

    def _step_linf(self, x: torch.Tensor, x_best: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        s = min(max(round((p * h * w) ** 0.5), 1), min(h, w) - 1)
        mask, _, _ = window_mask(n, h, w, s, generator, x.device)
        signs = _signs((n, c, 1, 1), generator, x.device)
        window = (x + self.threat.eps * signs).clamp(0.0, 1.0)
        unchanged = ((window - x_best).abs() * mask).flatten(1).amax(1) < 1e-7
        signs = torch.where(per_sample(unchanged, signs), -signs, signs)  # a query that changes nothing is wasted
        window = (x + self.threat.eps * signs).clamp(0.0, 1.0)
        return torch.where(mask, window, x_best)

    def _step_l2(self, x: torch.Tensor, x_best: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        eps = self.threat.eps
        side = min(h, w)
        s = max(round((p * h * w) ** 0.5), 3)
        s = min(s + 1 - s % 2, side - 1 + side % 2)  # odd (the pattern has a centre) and inside the image
        delta = x_best - x
        w1, top, left = window_mask(n, h, w, s, generator, x.device)
        w2, _, _ = window_mask(n, h, w, s, generator, x.device)
        old = delta * w1
        norm_w1 = _sq_norm(old, (2, 3)).sqrt()  # per channel (n, c, 1, 1)
        norm_img = _sq_norm(delta, (1, 2, 3))  # squared (n, 1, 1, 1)
        norm_windows = _sq_norm(delta * (w1 | w2), (2, 3))  # squared, per channel
        flip = torch.rand(n, generator=generator, device=x.device) < 0.5
        new = place(eta_pattern(s, x.device), top, left, h, w, flip) * _signs((n, c, 1, 1), generator, x.device)
        new = (new + old / (norm_w1 + 1e-12)) * w1
        target = ((eps**2 - norm_img).clamp_min(0) / c + norm_windows).sqrt()
        new = new / _sq_norm(new, (2, 3)).sqrt().clamp_min(1e-12) * target
        delta = torch.where(w2, torch.zeros_like(delta), delta)
        delta = torch.where(w1, new, delta)
        delta = eps * delta / per_sample(delta.flatten(1).norm(dim=1).clamp_min(1e-12), delta)
        return (x + delta).clamp(0.0, 1.0)
