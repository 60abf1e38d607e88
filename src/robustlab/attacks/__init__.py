"""Attacks in pixel space: `attack(model, x, y) -> x_adv`; `attack.run(...)` adds per-sample success.

`build("pgd-20", threat, step=...)` builds an attack from a spec string: a registered family name,
optionally followed by `-<steps>` ("fgsm", "pgd-10", "cw-100"). `cw` is PGD with the CW margin loss.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from ..errors import RobustlabError, closest, did_you_mean
from ..registry import Registry, import_submodules
from ..threat import ThreatModel
from .base import Attack, AttackResult, check_logits, model_untouched
from .pgd import FGSM, PGD

ATTACKS: Registry[Attack] = Registry("attack")
ATTACKS.register("fgsm")(FGSM)
ATTACKS.register("pgd")(PGD)


@ATTACKS.register("cw")
def cw(threat: ThreatModel, steps: int = 10, step: float | None = None, random_start: Literal["uniform", "normal", "none"] = "uniform",
       restarts: int = 1, targeted: bool = False, keep_best: bool = True, kappa: float = 50.0, **kw: Any) -> PGD:
    """PGD with the CW margin loss (the papers' `CW-k`)."""
    attack = PGD(threat, steps=steps, step=step, loss="cw", random_start=random_start, restarts=restarts, targeted=targeted,
                 keep_best=keep_best, kappa=kappa, **kw)
    attack.name = "cw"
    return attack


PROGRAMMATIC = ("seed", "mode", "num_classes")

import_submodules(__name__, __path__)  # further attack families register themselves in ATTACKS


def _stepped(family: str) -> bool:
    return family in ATTACKS and "steps" in ATTACKS.options(family)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """"pgd-20" -> ("pgd", {"steps": 20}); "fgsm" -> ("fgsm", {})."""
    spec = spec.strip().lower()
    if spec in ATTACKS:
        return spec, {}
    m = re.fullmatch(r"(.+?)-(\d+)", spec)
    if m and _stepped(m.group(1)):
        return m.group(1), {"steps": int(m.group(2))}
    raise RobustlabError(
        f"unknown attack {spec!r}.{did_you_mean(closest_spec(spec))} Write a family name, optionally with -STEPS "
        f"(e.g. pgd-20, cw-100). Known families: {', '.join(ATTACKS.names())}."
    )


def closest_spec(spec: str, others: list[str] | None = None) -> str | None:
    """The attack spec (or name of `others`) closest to a mistyped `spec`: "pdg-20" -> "pgd-20", "apgd-cee" -> "apgd-ce"."""
    spec = spec.strip().lower()
    m = re.fullmatch(r"(.+?)-(\d+)", spec)
    family = closest(m.group(1), [name for name in ATTACKS.names() if _stepped(name)]) if m else None
    if family:
        return f"{family}-{m.group(2)}"
    return closest(spec, ATTACKS.names() + (others or []))


def build(
    spec: str | dict[str, Any],
    threat: ThreatModel | str,
    *,
    defaults: dict[str, Any] | None = None,
    seed: int = 0,
    mode: str = "eval",
    num_classes: int | None = None,
) -> Attack:
    """Build an attack from "name[-steps]" or {"name": ..., **options}.

    `defaults` (e.g. the evaluation step size) apply to the families that take them and are ignored
    by the others; options written in the spec itself are validated and win over `defaults`.
    """
    threat = ThreatModel.parse(threat)
    if isinstance(spec, dict):
        spec = dict(spec)
        if "name" not in spec:
            raise RobustlabError(f"attack spec {spec!r} needs a 'name' key.")
        family, kw = parse_spec(str(spec.pop("name")))
        kw.update(spec)
    else:
        family, kw = parse_spec(spec)
    allowed = ATTACKS.options(family)
    merged = {k: v for k, v in (defaults or {}).items() if k in allowed}
    merged.update(kw)
    return ATTACKS.create(family, threat, skip=PROGRAMMATIC, seed=seed, mode=mode, num_classes=num_classes, **merged)


def names() -> list[str]:
    return ATTACKS.names()


__all__ = ["ATTACKS", "Attack", "AttackResult", "FGSM", "PGD", "build", "check_logits", "closest_spec", "model_untouched", "names",
           "parse_spec"]
