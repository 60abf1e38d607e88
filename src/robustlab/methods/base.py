"""The training-objective contract: `method.loss(model, x, y, ctx) -> (loss, stats)`.

A method is an `nn.Module` so that extra trainable parts (projection heads) and state (memory banks)
are trained, checkpointed and resumed with the model. `train_attack` is the attack it trains with
(None for standard training). A method that trains against PGD takes `attack: TrainAttack` and gets the
config options attack_steps, attack_step, attack_start, attack_sigma, attack_mode from
`train_attack_options`.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

import torch
from torch import nn

from ..attacks import PGD, Attack
from ..attacks.base import AttackMode
from ..attacks.pgd import Loss, Start
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
        return (self.epoch + self.step % max(1, self.steps_per_epoch) / max(1, self.steps_per_epoch)) / max(
            1, self.num_epochs
        )


class Method(nn.Module):
    """Base class. Subclasses set `train_attack` in __init__ and implement `loss`."""

    name = "method"
    needs_threat = True
    supervised = True  # trains the classifier on the labels (False: a representation learnt without them)
    # a method that leaves some model parameters unused (e.g. the head, when it trains only the features)
    # needs DistributedDataParallel(find_unused_parameters=True) in a distributed run
    ddp_find_unused = False

    def __init__(self, threat: ThreatModel | str | None):
        super().__init__()
        if self.needs_threat and threat is None:
            raise RobustlabError(
                f"method {self.name!r} trains against an attack and needs a threat model (e.g. threat: linf:8/255)."
            )
        self.threat = ThreatModel.parse(threat) if threat is not None else None
        self.train_attack: Attack | None = None

    @property
    def attack_threat(self) -> ThreatModel:
        """The threat model of a method that trains against an attack (__init__ refused None for those)."""
        if self.threat is None:
            raise RobustlabError(f"method {self.name!r} has no threat model to attack with.")
        return self.threat

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

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """The training attack's examples for this batch (the model is left untouched)."""
        assert self.train_attack is not None
        return self.train_attack(model, x, y, generator=ctx.generator)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == y).float().mean()


@dataclass(frozen=True)
class TrainAttack:
    """The options of the attack a method trains with. In a config they are the method's keys
    `attack_<field>` (e.g. `method: {name: trades, attack_steps: 5}`), offered by `train_attack_options`."""

    steps: int = 10
    step: float | None = None  # None: eps / 4
    start: Start = "uniform"
    sigma: float = 0.001  # the scale of the "normal" start
    mode: AttackMode = "eval"  # the model's mode during the attack

    def pgd(self, threat: ThreatModel, loss: Loss) -> PGD:
        """The PGD a method trains with: last iterate (no keep-best), one restart, as in the papers."""
        return PGD(
            threat,
            steps=self.steps,
            step=self.step,
            loss=loss,
            random_start=self.start,
            sigma=self.sigma,
            keep_best=False,
            mode=self.mode,
        )


Init = TypeVar("Init", bound=Callable[..., None])


def train_attack_options(
    defaults: TrainAttack = TrainAttack(), *, fixed: tuple[str, ...] = ()
) -> Callable[[Init], Init]:
    """Decorate a method's `__init__(self, ..., *, attack: TrainAttack, ...)` so that its config options
    include the training attack's fields as flat keys `attack_<field>`, with this method's `defaults`
    (fields named in `fixed` are not options: they keep the value in `defaults`).

    Why a decorator: the registry validates and lists a method's options from its constructor's
    signature (`registry.validate_kwargs`), and configs keep flat keys (`attack_steps: 3`), so the
    signature the registry reads has `attack_steps, attack_step, ...` in place of `attack`, and a call
    with them gets `attack=replace(defaults, steps=..., ...)`. A subclass may pass `attack=` itself.
    """
    types = typing.get_type_hints(TrainAttack)
    offered = {f"attack_{f.name}": f.name for f in fields(TrainAttack) if f.name not in fixed}

    def decorate(init: Init) -> Init:
        sig = inspect.signature(init, eval_str=True)
        if "attack" not in sig.parameters or sig.parameters["attack"].kind != inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"{init.__qualname__} must take a keyword-only parameter `attack: TrainAttack`")
        params: list[inspect.Parameter] = []
        for p in sig.parameters.values():
            if p.name != "attack":
                params.append(p)
                continue
            params += [
                inspect.Parameter(
                    key, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, name), annotation=types[name]
                )
                for key, name in offered.items()
            ]

        @functools.wraps(init)
        def wrapper(self: Any, *args: Any, attack: TrainAttack | None = None, **kwargs: Any) -> None:
            chosen = {name: kwargs.pop(key) for key, name in offered.items() if key in kwargs}
            if attack is not None and chosen:
                raise TypeError(f"{init.__qualname__}: give either attack= or {', '.join(offered)}, not both")
            init(self, *args, attack=attack if attack is not None else replace(defaults, **chosen), **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
