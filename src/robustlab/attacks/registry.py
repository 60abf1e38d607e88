"""The attack registry, and attacks built from spec strings ("pgd-20") or dicts ({"name": "apgd-t", ...})."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..errors import RobustlabError, closest, did_you_mean
from ..registry import Registry
from ..threat import ThreatModel
from .base import Attack

ATTACKS: Registry[Callable[..., Attack]] = Registry("attack")

PROGRAMMATIC = ("seed", "mode", "num_classes")


def _stepped(family: str) -> bool:
    return family in ATTACKS and "steps" in ATTACKS.options(family)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """ "pgd-20" -> ("pgd", {"steps": 20}); "fgsm" -> ("fgsm", {})."""
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
    """The attack spec (or name of `others`) closest to a mistyped `spec`: "pdg-20" -> "pgd-20",
    "apgd-cee" -> "apgd-ce"."""
    spec = spec.strip().lower()
    m = re.fullmatch(r"(.+?)-(\d+)", spec)
    family = closest(m.group(1), [name for name in ATTACKS.names() if _stepped(name)]) if m else None
    if m and family:
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
