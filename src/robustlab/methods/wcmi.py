"""Unsupervised representation learning by MI maximisation: `mi` (vanilla) and `wcmi` (worst case).

Zhu, Zhang & Evans (ICML 2020). For a representation g (the model's `forward_features`, e.g. the
64-d output of `basic_encoder`) and an input distribution μ:

    worst-case MI               I_ε(g) = inf_{μ' ∈ B(μ, ε)} I(X'; g(X'))
    representation vulnerability RV_ε(g) = I(X; g(X)) − I_ε(g)
    training principle          max_g  I(X; g(X)) − β·RV_ε(g)   which for β = 1 is   max_g I_ε(g)

`mi` maximises a lower bound Î(x, g(x)) (Deep InfoMax); `wcmi` maximises Î(x', g(x')) at the x'
found by the batch-level PGD that minimises Î within the ε-ball (`infomax.minimise_mi`). The
critic T (here `self.estimator.critic`) is trained jointly with g on the same loss −Î, by the
Trainer's one optimizer (the critic's parameters live on this Method). Labels are never used.

The head of the model is not trained (no labels), so validation accuracy means nothing for these
runs: the selected model is the last epoch (`train.select.by: last`; `auto` is turned into `last`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from ..attacks.base import model_untouched
from ..distributed import unwrap
from ..errors import RobustlabError
from ..infomax import MIEstimator, make_critic, minimise_mi
from ..infomax.critics import check_critic_options
from ..infomax.estimator import check_options
from .base import Method, TrainAttack, train_attack_options
from .registry import METHODS


@METHODS.register("mi")
class MIMax(Method):
    """Vanilla MI maximisation: min −Î(x, g(x)) over the encoder g and the critic T."""

    name = "mi"
    ddp_find_unused = True  # unsupervised: the model's head is never used
    needs_threat = False
    supervised = False

    def __init__(
        self,
        threat=None,
        bound: Literal["dv", "jsd", "infonce"] = "dv",
        dv_variant: Literal["exact", "code"] = "exact",
        ma_rate: float | None = None,
        critic: Literal["local_global", "concat"] = "local_global",
        critic_options: dict[str, Any] | None = None,
    ):
        super().__init__(threat)
        self.bound, self.dv_variant, self.ma_rate = bound, dv_variant, ma_rate
        self.critic_name, self.critic_options = critic, dict(critic_options or {})
        check_options(bound, dv_variant, ma_rate)
        check_critic_options(critic, self.critic_options)
        self.estimator: MIEstimator | None = None

    def build_parts(self, model, dataset) -> None:
        """Build the critic for the model's input shape and representation size (before the optimizer exists)."""
        x_shape = (model.in_channels, model.input_size, model.input_size)
        critic = make_critic(
            self.critic_name, x_shape, model.feature_dim, tuple(dataset.mean), tuple(dataset.std), **self.critic_options
        )
        self.estimator = MIEstimator(critic, self.bound, self.dv_variant, self.ma_rate)

    def describe(self) -> str:
        return f"{self.name}: maximises the {self.bound} MI estimate on clean inputs"

    def setup(self, trainer) -> None:
        if trainer.cfg.select.by == "auto":
            trainer.select_by = "last"
        elif trainer.select_by != "last":
            raise RobustlabError(
                f"method {self.name!r} is unsupervised (the model's head is never trained), so "
                f"train.select.by={trainer.select_by!r} would select on a meaningless accuracy; use last."
            )

    def inputs(self, model, x, ctx):
        """The batch the MI is maximised on: the clean batch."""
        return x

    def loss(self, model, x, y, ctx):
        if self.estimator is None:
            raise RobustlabError(
                f"method {self.name!r}: the critic is built by Method.build_parts(model, dataset), which the "
                "Trainer calls."
            )
        x_in = self.inputs(model, x, ctx)
        est = self.estimator(x_in, model.forward_features(x_in))
        return est.loss, {"loss": est.loss.detach(), "mi": est.mi.detach()}


@METHODS.register("wcmi")
class WorstCaseMIMax(MIMax):
    """Worst-case MI maximisation: min −Î(x', g(x')), x' = argmin_{x' ∈ B(x, ε)} Î(x', g(x')) (batch-level PGD)."""

    name = "wcmi"
    needs_threat = True

    @train_attack_options(TrainAttack(steps=7, start="none"), fixed=("sigma",))
    def __init__(
        self,
        threat,
        bound: Literal["dv", "jsd", "infonce"] = "dv",
        dv_variant: Literal["exact", "code"] = "exact",
        ma_rate: float | None = None,
        critic: Literal["local_global", "concat"] = "local_global",
        critic_options: dict[str, Any] | None = None,
        *,
        attack: TrainAttack,
    ):
        super().__init__(threat, bound, dv_variant, ma_rate, critic, critic_options)
        if attack.steps < 1:
            raise RobustlabError(f"wcmi: attack_steps={attack.steps!r}; allowed: >= 1.")
        self.attack = replace(
            attack, step=float(attack.step) if attack.step is not None else self.attack_threat.eps / 4
        )

    def describe(self) -> str:
        return (
            f"{self.name}: maximises the {self.bound} MI estimate at the batch-level PGD-{self.attack.steps} "
            f"minimiser of it (step {self.attack.step:.4g}, {self.threat}, keep-best)"
        )

    def inputs(self, model, x, ctx):
        model = unwrap(model)  # the attack needs no DDP: no parameter gradients, no collectives
        with model_untouched(model, self.attack.mode):
            x_adv, _ = minimise_mi(
                model.forward_features,
                self.estimator,
                x,
                self.threat,
                steps=self.attack.steps,
                step=self.attack.step,
                start=self.attack.start,
                generator=ctx.generator,
            )
        return x_adv
