"""AutoAttack (Croce & Hein, ICML 2020): a fixed cascade of parameter-free attacks.

Each attack runs only on the points that every attack before it failed to break, so the result is
the per-sample worst case over the cascade at the cost of running the later (expensive) attacks on
the robust points only. Versions:

- `standard`: APGD-CE → APGD-T (9 targets) → FAB-T (9 targets) → Square (5000 queries), 100
  iterations each, one run each;
- `plus`: APGD-CE and APGD-DLR with 5 restarts, FAB with 5 restarts, Square, APGD-T, FAB-T;
- `rand` (for randomised defences): APGD-CE and APGD-DLR, one run each, each step's gradient averaged over
  20 passes (`eot_iter`, attacks.eot), as the reference implementation (fra31/auto-attack) defines it;
- `custom`: the attack specs in `attacks`, in order (e.g. ["apgd-ce", "square"]).

`run(...)` reports the cumulative robustness after each component in `AttackResult.stages`; an
`on_stage(label, robust, n, seconds)` callable, when set, hears of each component as it finishes (the
evaluation prints a line per stage when its progress bar cannot draw).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import torch

from ..errors import RobustlabError
from ..threat import ThreatModel
from .base import Attack, AttackMode, check_logits
from .registry import ATTACKS

Version = Literal["standard", "plus", "rand", "custom"]


def version_specs(version: str, steps: int, n_target_classes: int, queries: int) -> list[dict[str, Any]]:
    """The component attack specs of a version (`custom` has none of its own)."""
    apgd_t = {"name": "apgd-t", "steps": steps, "n_target_classes": n_target_classes}
    fab_t = {"name": "fab-t", "steps": steps, "n_target_classes": n_target_classes}
    square = {"name": "square", "queries": queries}
    if version == "standard":
        return [{"name": "apgd-ce", "steps": steps}, apgd_t, fab_t, square]
    if version == "rand":  # the reference's version for randomised defences (fra31/auto-attack): EOT over 20 passes
        return [{"name": f"apgd-{loss}", "steps": steps, "eot_iter": 20} for loss in ("ce", "dlr")]
    if version == "plus":
        return [
            {"name": "apgd-ce", "steps": steps, "restarts": 5},
            {"name": "apgd-dlr", "steps": steps, "restarts": 5},
            {"name": "fab", "steps": steps, "restarts": 5},
            square,
            apgd_t,
            fab_t,
        ]
    return []


@ATTACKS.register("autoattack")
class AutoAttack(Attack):
    """AutoAttack `version` (standard | plus | rand | custom with `attacks`); see the module doc."""

    name = "autoattack"

    def __init__(
        self,
        threat: ThreatModel,
        version: Version = "standard",
        attacks: list[str | dict[str, Any]] | None = None,
        steps: int = 100,
        n_target_classes: int = 9,
        queries: int = 5000,
        *,
        seed: int = 0,
        mode: AttackMode = "eval",
        num_classes: int | None = None,
    ):
        from .registry import build, parse_spec

        super().__init__(threat, seed=seed, mode=mode, num_classes=num_classes)
        self.check_threat()
        if version not in ("standard", "plus", "rand", "custom"):
            raise RobustlabError(f"{self.name}: version={version!r}; allowed: standard, plus, rand, custom.")
        if (version == "custom") != bool(attacks):
            raise RobustlabError(
                f"{self.name}: give `attacks` (a list of attack specs) exactly when version='custom'; "
                f"got version={version!r}, attacks={attacks!r}."
            )
        specs = list(attacks or []) if version == "custom" else version_specs(version, steps, n_target_classes, queries)
        self.version = version
        self.on_stage: Callable[[str, int, int, float], None] | None = None
        self.components: list[tuple[str, Attack]] = []
        for spec in specs:
            label = spec if isinstance(spec, str) else str(spec.get("name"))
            if parse_spec(label)[0] == self.name:
                raise RobustlabError(f"{self.name}: a custom AutoAttack cannot contain autoattack itself.")
            if label in dict(self.components):
                label = f"{label}#{len(self.components) + 1}"
            self.components.append((label, build(spec, threat, seed=seed, mode=mode, num_classes=num_classes)))

    def __repr__(self) -> str:
        return f"AutoAttack({self.threat}, {self.version}: {' → '.join(label for label, _ in self.components)})"

    def _run(self, model, x, y, generator, num_classes, need_success):
        with torch.no_grad():
            logits = model(x)
        check_logits(self.name, logits, x.shape[0], num_classes)
        robust = logits.argmax(1) == y
        x_adv = x.clone()
        stages: dict[str, torch.Tensor] = {}
        for label, attack in self.components:
            t0 = time.perf_counter()
            todo = torch.nonzero(robust).flatten()
            if todo.numel():
                result = attack.run(model, x[todo], y[todo], generator=generator)
                broken = todo[result.success]
                x_adv[broken] = result.x_adv[result.success]
                robust[broken] = False
            stages[label] = robust.clone()
            if self.on_stage is not None:
                self.on_stage(label, int(robust.sum()), x.shape[0], time.perf_counter() - t0)
        return x_adv, ~robust, stages
