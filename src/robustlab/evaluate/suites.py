"""The built-in suites (a suite is an ordered list of attack specs) and the labels of their attacks."""

from __future__ import annotations

from typing import Any

from .registry import SUITES


@SUITES.register("paper")
def paper_suite() -> list[str | dict[str, Any]]:
    """AALP Table 2: FGSM, PGD-{10,20,40,100}, CW-{10,20,40,100}."""
    return ["fgsm", *(f"pgd-{k}" for k in (10, 20, 40, 100)), *(f"cw-{k}" for k in (10, 20, 40, 100))]


@SUITES.register("quick")
def quick_suite() -> list[str | dict[str, Any]]:
    """FGSM, PGD-20, CW-20: a fast check, not a paper protocol."""
    return ["fgsm", "pgd-20", "cw-20"]


@SUITES.register("autoattack")
def autoattack_suite() -> list[str | dict[str, Any]]:
    """AutoAttack standard: APGD-CE → APGD-T → FAB-T → Square, as one cascaded attack."""
    return ["autoattack"]


@SUITES.register("autoattack-rand")
def autoattack_rand_suite() -> list[str | dict[str, Any]]:
    """AutoAttack rand, for randomised models: APGD-CE and APGD-DLR with EOT over 20 passes."""
    return [{"name": "autoattack", "version": "rand"}]


@SUITES.register("autoattack-plus")
def autoattack_plus_suite() -> list[str | dict[str, Any]]:
    """AutoAttack plus: APGD-CE/-DLR (5 restarts), FAB (5 restarts), Square, APGD-T, FAB-T."""
    return [{"name": "autoattack", "version": "plus"}]


@SUITES.register("fast")
def fast_suite() -> list[str | dict[str, Any]]:
    """A cheaper check beside AutoAttack, never in its place: APGD-CE and APGD-T on the 3 targets MALT ranks
    first (Melamed, Yehudai, Shamir, "MALT Powers Up Adversarial Attacks", NeurIPS 2024, arXiv 2407.02240)."""
    return ["apgd-ce", {"name": "apgd-t", "n_target_classes": 3, "targeting": "malt"}]


def resolve_suite(suite: str | list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
    return SUITES.get(suite)() if isinstance(suite, str) else list(suite)


def attack_label(spec: str | dict[str, Any]) -> str:
    if isinstance(spec, str):
        return spec
    extra = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']}({extra})" if extra else str(spec["name"])
