"""Attacks in pixel space: `attack(model, x, y) -> x_adv`; `attack.run(...)` adds per-sample success.

`build("pgd-20", threat, step=...)` builds an attack from a spec string: a registered family name,
optionally followed by `-<steps>` ("fgsm", "pgd-10", "cw-100"). `cw` is PGD with the CW margin loss.
Each family registers itself in `registry.ATTACKS` from its own module.
"""

from __future__ import annotations

from ..registry import import_submodules
from .base import Attack, AttackResult, check_logits, model_untouched
from .pgd import FGSM, PGD
from .registry import ATTACKS, PROGRAMMATIC, build, closest_spec, parse_spec

import_submodules(__name__, __path__)  # every attack module registers its families


def names() -> list[str]:
    return ATTACKS.names()


__all__ = [
    "ATTACKS",
    "FGSM",
    "PGD",
    "PROGRAMMATIC",
    "Attack",
    "AttackResult",
    "build",
    "check_logits",
    "closest_spec",
    "model_untouched",
    "names",
    "parse_spec",
]
