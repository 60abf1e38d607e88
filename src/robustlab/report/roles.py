"""Roles: the names under which report sections find a study's runs.

A study config gives a run `role: NAME` next to its `label` and `group`. A section reads the runs it needs
by (group, role), never by label or method, so renaming a run keeps its rows, and a role no run plays is
named in the report instead of silently leaving rows out. A section declares the roles it reads with
`reads_roles` and takes the groups it reads them from as its `groups` option; `check_roles` rejects, before
any training, a role that no section reads (a typo would otherwise only show as a missing role in the
report).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import StudyConfig
from ..errors import RobustlabError
from .markdown import ticked
from .registry import SECTIONS

if TYPE_CHECKING:
    from .context import RunRecord


def reads_roles(roles: dict[str, str]) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Declare the roles a section reads ({role: what the section uses the run for})."""

    def deco(section: Callable[..., str]) -> Callable[..., str]:
        if "groups" not in inspect.signature(section).parameters:
            raise TypeError(f"{section.__name__} reads roles but has no `groups` option to read them from")
        section.roles = dict(roles)  # type: ignore[attr-defined]
        return section

    return deco


def section_roles(name: str) -> dict[str, str]:
    """{role: what it is used for} of the registered section `name` (empty for a section that reads none)."""
    return getattr(SECTIONS.get(name), "roles", {})


def check_roles(study: StudyConfig, roles: dict[str, str]) -> None:
    """Raise a RobustlabError for a run ({label: role}) whose role no report section reads (a misspelt role).
    Every registered section counts, not only the study's: `--set sections=[robustness]` keeps roles valid."""
    readers = {name: section_roles(name) for name in SECTIONS.names() if section_roles(name)}
    for label, role in roles.items():
        if not any(role in read for read in readers.values()):
            known = "; ".join(f"{name}: {', '.join(read)}" for name, read in readers.items())
            raise RobustlabError(
                f"study {study.name!r}: run {label!r} has role {role!r}, which no report section "
                f"reads. The roles the sections read: {known}."
            )


@dataclass
class Cast:
    """The runs a section reads, by role, each from the first of `groups` that has a run in that role."""

    groups: tuple[str, ...]
    runs: dict[str, RunRecord]
    missing: list[str]

    def get(self, role: str) -> RunRecord | None:
        return self.runs.get(role)

    def note(self) -> list[str]:
        """A paragraph naming the roles no run plays (none when every role is played)."""
        if not self.missing:
            return []
        them = "them" if len(self.missing) > 1 else "it"
        return [
            f"Roles not played in this study: {ticked(self.missing)} (no run of "
            f"group{'s' * (len(self.groups) > 1)} {ticked(self.groups)} has {them}); the rows and claims that need "
            f"{them} are left out. A study config gives a run its role with `role:`.",
            "",
        ]
