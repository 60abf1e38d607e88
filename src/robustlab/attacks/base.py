"""The attack contract.

An attack is a callable `attack(model, x, y) -> x_adv` on pixel-space batches in [0, 1]. It never
changes the model: parameters, `.grad`, BatchNorm running statistics and the train/eval flag are
the same after it returns (`model_untouched`). It is deterministic for a given seed or generator,
batched, and `attack.run(...)` also returns the per-sample success.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..data.base import check_images
from ..distributed import unwrap
from ..errors import RobustlabError
from ..models.layout import attack_layout
from ..threat import ThreatModel

AttackMode = Literal["eval", "train"]


@dataclass
class AttackResult:
    """`x_adv` (same shape as x, in [0, 1] and in the threat ball) and per-sample `success` (N,) bool.

    An attack made of stages (AutoAttack) also reports `stages[name]`: (N,) bool, still robust after
    that stage and every stage before it.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    stages: dict[str, torch.Tensor] = field(default_factory=dict)


@contextmanager
def model_untouched(model: nn.Module, mode: AttackMode = "eval") -> Iterator[None]:
    """Run the model in `mode` with frozen parameters; restore flag, requires_grad and buffers after.

    In "train" mode BatchNorm would update its running statistics: each buffer is swapped for a copy
    for the attack and the original tensor put back after, untouched (not even its autograd version
    counter moves, so a clean forward pass taken before the attack can still be backpropagated).
    """
    if mode not in ("eval", "train"):
        raise RobustlabError(f"attack mode={mode!r}; allowed: eval, train.")
    was_training = model.training
    requires = [(p, p.requires_grad) for p in model.parameters()]
    swapped = []
    if mode == "train":
        for module in model.modules():
            for name, buf in module._buffers.items():
                if buf is not None:
                    swapped.append((module, name, buf))
                    module._buffers[name] = buf.detach().clone()
    model.train(mode == "train")
    for p, _ in requires:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    finally:
        for p, flag in requires:
            p.requires_grad_(flag)
        for module, name, buf in swapped:
            module._buffers[name] = buf
        model.train(was_training)


def check_logits(where: str, logits: torch.Tensor, n: int, num_classes: int | None) -> None:
    """Raise unless the model returned N×K logits (K = the dataset's class count when known)."""
    if logits.dim() != 2 or logits.shape[0] != n or (num_classes is not None and logits.shape[1] != num_classes):
        k = num_classes if num_classes is not None else "K"
        raise RobustlabError(f"{where}: the model must return logits of shape ({n}, {k}); got {tuple(logits.shape)}.")


def check_targets(where: str, n_target_classes: int, num_classes: int) -> None:
    """Raise unless n_target_classes < num_classes (the true class is never a target)."""
    if n_target_classes >= num_classes:
        raise RobustlabError(
            f"{where}: n_target_classes={n_target_classes} must be < the number of classes ({num_classes}); "
            f"at most {num_classes - 1} classes can be targets."
        )


def top_other_classes(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k): per sample, the k classes other than y with the largest logits, largest first."""
    masked = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return masked.topk(k, dim=1).indices


def margin_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each point and class t of `classes` (N, C; None: every class): the margin f_t − f_y at x (N, C) and
    its input gradient (N, C, d), from one forward and C backward passes; non-finite gradient entries become 0."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    if classes is None:
        classes = torch.arange(logits.shape[1], device=x.device).expand(x.shape[0], -1)
    margins = logits.gather(1, classes) - logits.gather(1, y[:, None])
    c = classes.shape[1]
    grads = [torch.autograd.grad(margins[:, j].sum(), x, retain_graph=j < c - 1)[0] for j in range(c)]
    return margins.detach(), torch.nan_to_num(torch.stack(grads, 1).flatten(2))


def boundary_distances(margins: torch.Tensor, grads: torch.Tensor, norm: str) -> torch.Tensor:
    """|f_t − f_y| / ‖∇(f_t − f_y)‖_q (N, C): the distance to each linearised decision boundary in the threat
    model's norm (q its dual: 1 for linf, 2 for l2)."""
    dual = grads.abs().sum(2) if norm == "linf" else grads.norm(dim=2)
    return margins.abs() / (dual + 1e-12)


MALT_CANDIDATES = 100


def malt_targets(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, k: int, norm: str
) -> torch.Tensor:
    """(N, k): the targets of MALT (Melamed, Yehudai, Shamir, "MALT Powers Up Adversarial Attacks", NeurIPS 2024,
    arXiv 2407.02240): among the `MALT_CANDIDATES` classes other than y with the largest logits (100, as in the
    official code, odeliamel/MALT demo.py), the k whose linearised decision boundary is closest, closest first."""
    candidates = top_other_classes(logits, y, min(MALT_CANDIDATES, logits.shape[1] - 1))
    margins, grads = margin_gradients(model, x, y, candidates)
    order = boundary_distances(margins, grads, norm).topk(k, dim=1, largest=False).indices
    return candidates.gather(1, order)


RowAttack = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def run_in_passes(
    x_adv: torch.Tensor, success: torch.Tensor, n_runs: int, runs_per_pass: int | None, attack_rows: RowAttack
) -> None:
    """Run `n_runs` independent runs of an attack (its targets × restarts) on the points not broken yet,
    `runs_per_pass` runs at a time (None: all) as one batch of rows, one row per (run, point); updates
    `success` and `x_adv` in place.

    `attack_rows(point, run, owner, m)` attacks the points `point` (rows,) in the runs `run` (rows,) and returns
    per row (found, x_out); `owner` (rows,) numbers the m points of the pass, so that the rows of a point leave
    together once one of them breaks it (`rows_to_keep`). A run's result depends on its point and run only (its
    random start is drawn before any run), so a point is broken in one pass of 9 runs exactly when it is
    broken in 9 passes of one run, the reference implementation's order. Its adversarial example is that of
    its first run that found one; an unbroken point keeps the last run's output.
    """
    per_pass = runs_per_pass or n_runs
    for first in range(0, n_runs, per_pass):
        todo = torch.nonzero(~success).flatten()
        m = todo.numel()
        if m == 0:
            return
        runs = min(per_pass, n_runs - first)
        point = todo.repeat(runs)
        run = torch.arange(first, first + runs, device=x_adv.device).repeat_interleave(m)
        owner = torch.arange(m, device=x_adv.device).repeat(runs)
        found, x_out = attack_rows(point, run, owner, m)
        found, x_out = found.view(runs, m), x_out.view(runs, m, *x_adv.shape[1:])
        for j in reversed(range(runs)):  # the earliest run's example wins
            keep = found[j] if j < runs - 1 else torch.ones_like(found[j])
            x_adv[todo[keep]] = x_out[j][keep]
        success[todo] = found.any(0)


def run_generators(generator: torch.Generator, n_runs: int) -> list[torch.Generator]:
    """One generator per run, seeded from `generator` before any run: a run draws the same random start
    whichever runs share its pass."""
    seeds = torch.randint(0, 2**62, (n_runs,), generator=generator, device=generator.device).tolist()
    return [torch.Generator(device=generator.device).manual_seed(seed) for seed in seeds]


def rows_to_keep(owner: torch.Tensor, fooled: torch.Tensor, m: int) -> torch.Tensor:
    """(rows,) bool: the rows whose point (`owner` in 0..m-1) no row has just broken (`fooled`)."""
    hits = torch.zeros(m, device=owner.device).index_add_(0, owner, fooled.to(torch.float32))
    return hits[owner] == 0


class _Float32Logits:
    """The model as an attack sees it: logits in float32 even under autocast, so losses, margins and the
    keep-best bookkeeping run in full precision (the input gradient is float32 already: x is a float32 leaf)."""

    def __init__(self, model: nn.Module):
        self.module = model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x).float()


def _confirmed(model: nn.Module, y: torch.Tensor, result: AttackResult) -> AttackResult:
    """`result` with every break found in the channels_last layout (`attack_layout`) checked by a forward pass in
    the model's own layout: a point on the decision boundary to within rounding can fall on either side in the two
    layouts, and a reported break must hold for the model as given. A break that does not is withdrawn."""
    idx = torch.nonzero(result.success).flatten()
    if idx.numel() == 0:
        return result
    with model_untouched(model), torch.no_grad():
        held = model(result.x_adv[idx]).argmax(1) != y[idx]
    withdrawn = torch.zeros_like(result.success)
    withdrawn[idx[~held]] = True
    stages = {name: robust | withdrawn for name, robust in result.stages.items()}
    return AttackResult(result.x_adv, result.success & ~withdrawn, stages)


def attacked_model(model: nn.Module | _Float32Logits) -> nn.Module:
    """The model an attack runs on: the caller's, less the distributed or compiled wrappers (`unwrap`) and the
    float32 view a cascade (AutoAttack) passes on to its components."""
    return unwrap(model.module if isinstance(model, _Float32Logits) else model)


class Attack:
    """Base class: input checks, the model-state guard and seeding. Subclasses implement `_run`."""

    name = "attack"

    def __init__(
        self, threat: ThreatModel, *, seed: int = 0, mode: AttackMode = "eval", num_classes: int | None = None
    ):
        self.threat = ThreatModel.parse(threat)
        self.seed = seed
        self.mode = mode
        self.num_classes = num_classes
        if mode not in ("eval", "train"):
            raise RobustlabError(f"{self.name}: mode={mode!r}; allowed: eval, train.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.threat})"

    def check_threat(self, norms: tuple[str, ...] = ("linf", "l2")) -> None:
        """Raise unless the threat model's norm is one of `norms` and eps > 0."""
        if self.threat.norm not in norms:
            raise RobustlabError(
                f"{self.name}: norm {self.threat.norm!r} is not supported; allowed: {', '.join(norms)}."
            )
        if self.threat.eps <= 0:
            raise RobustlabError(f"{self.name}: eps={self.threat.eps} must be > 0 for an attack.")

    def _check(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int | None:
        check_images(self.name, x)
        if not torch.is_tensor(y) or y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
            raise RobustlabError(
                f"{self.name}: labels must be a 1-d integer tensor with one entry per image; got "
                f"{getattr(y, 'shape', y)}."
            )
        k = self.num_classes if self.num_classes is not None else getattr(model, "num_classes", None)
        if y.numel() and k is not None and (int(y.min()) < 0 or int(y.max()) >= k):
            raise RobustlabError(
                f"{self.name}: label {int(y.max()) if int(y.max()) >= k else int(y.min())} out of range 0..{k - 1}."
            )
        return k

    def generator_for(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
        if generator is not None:
            return generator
        return torch.Generator(device=x.device).manual_seed(self.seed)

    def run(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> AttackResult:
        """Attack the batch; returns x_adv and the per-sample success."""
        model = attacked_model(model)
        k = self._check(model, x, y)
        with model_untouched(model, self.mode), attack_layout(model, x, self.mode == "eval") as switched:
            x_adv, success, *stages = self._run(
                _Float32Logits(model), x, y, self.generator_for(x, generator), k, need_success=True
            )
        result = AttackResult(x_adv.detach(), success, stages[0] if stages else {})
        return _confirmed(model, y, result) if switched else result

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        model = attacked_model(model)
        k = self._check(model, x, y)
        with model_untouched(model, self.mode):  # training keeps its layout: a run trains as it always did
            x_adv, *_ = self._run(_Float32Logits(model), x, y, self.generator_for(x, generator), k, need_success=False)
        return x_adv.detach()

    def _run(self, model, x, y, generator, num_classes, need_success):  # pragma: no cover - abstract
        """-> (x_adv, success) or (x_adv, success, stages); see AttackResult."""
        raise NotImplementedError
