"""The attack contract.

An attack is a callable `attack(model, x, y) -> x_adv` on pixel-space batches in [0, 1]. It never
changes the model: parameters, `.grad`, BatchNorm running statistics and the train/eval flag are
the same after it returns (`model_untouched`). It is deterministic for a given seed or generator,
batched, and `attack.run(...)` also returns the per-sample success.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..data.base import check_images
from ..distributed import unwrap
from ..errors import RobustlabError
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


class _Float32Logits:
    """The model as an attack sees it: logits in float32 even under autocast, so losses, margins and the
    keep-best bookkeeping run in full precision (the input gradient is float32 already: x is a float32 leaf)."""

    def __init__(self, model: nn.Module):
        self.module = model

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x).float()


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
        with model_untouched(model, self.mode):
            x_adv, success, *stages = self._run(
                _Float32Logits(model), x, y, self.generator_for(x, generator), k, need_success=True
            )
        return AttackResult(x_adv.detach(), success, stages[0] if stages else {})

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        model = attacked_model(model)
        k = self._check(model, x, y)
        with model_untouched(model, self.mode):
            x_adv, *_ = self._run(_Float32Logits(model), x, y, self.generator_for(x, generator), k, need_success=False)
        return x_adv.detach()

    def _run(self, model, x, y, generator, num_classes, need_success):  # pragma: no cover - abstract
        """-> (x_adv, success) or (x_adv, success, stages); see AttackResult."""
        raise NotImplementedError
