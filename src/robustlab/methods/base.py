"""The training-objective contract: `method.loss(model, x, y, ctx) -> (loss, stats)`.

A method is an `nn.Module` so that extra trainable parts (projection heads) and state (memory banks)
are trained, checkpointed and resumed with the model. `train_attack` is the attack it trains with
(None for standard training); `attack_mode` is the model mode during that attack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..attacks import PGD
from ..errors import RobustlabError
from ..threat import ThreatModel


@dataclass
class StepContext:
    """Where the Trainer is: 0-based `epoch` of `num_epochs`, global `step`, and the attack generator."""

    epoch: int = 0
    num_epochs: int = 1
    step: int = 0
    steps_per_epoch: int = 1
    generator: torch.Generator | None = None
    extras: dict = field(default_factory=dict)

    @property
    def progress(self) -> float:
        """Fraction of training done at the start of this step, in [0, 1]."""
        return (self.epoch + self.step % max(1, self.steps_per_epoch) / max(1, self.steps_per_epoch)) / max(1, self.num_epochs)


class Method(nn.Module):
    """Base class. Subclasses set `train_attack` in __init__ and implement `loss`."""

    name = "method"
    needs_threat = True
    # a method that leaves some model parameters unused (e.g. the head, when it trains only the features)
    # needs DistributedDataParallel(find_unused_parameters=True) in a distributed run
    ddp_find_unused = False

    def __init__(self, threat: ThreatModel | str | None):
        super().__init__()
        if self.needs_threat and threat is None:
            raise RobustlabError(f"method {self.name!r} trains against an attack and needs a threat model (e.g. threat: linf:8/255).")
        self.threat = ThreatModel.parse(threat) if threat is not None else None
        self.train_attack: PGD | None = None

    def build_parts(self, model: nn.Module, dataset) -> None:
        """Called by the Trainer before it builds the optimizer: create trainable parts whose shapes
        depend on the model or the data (e.g. a critic over the representation), so that they are
        optimised, checkpointed and resumed with the model. The default does nothing."""

    def setup(self, trainer) -> None:
        """Called by the Trainer once before the first step (also on resume), e.g. to read the dataset's
        class names or prepare a frozen auxiliary model. The default does nothing."""

    def describe(self) -> str:
        """One line: the objective and the attack it trains with."""
        return f"{self.name}: " + (repr(self.train_attack) if self.train_attack is not None else "no training attack")

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """The training attack's examples for this batch (the model is left untouched)."""
        assert self.train_attack is not None
        return self.train_attack(model, x, y, generator=ctx.generator)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == y).float().mean()


def pgd_for_training(
    threat: ThreatModel,
    *,
    loss: str,
    steps: int,
    step: float | None,
    start: str,
    sigma: float = 0.001,
    mode: str = "eval",
) -> PGD:
    """The PGD a method trains with: last iterate (no keep-best), one restart, as in the papers."""
    return PGD(threat, steps=steps, step=step, loss=loss, random_start=start, sigma=sigma, keep_best=False, mode=mode)  # type: ignore[arg-type]
