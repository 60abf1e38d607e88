"""Roles: the names under which report sections find a study's runs.

A study config gives a run `role: NAME` next to its `label` and `group`. A section reads the runs it needs
by (group, role), never by label or method, so renaming a run keeps its rows, and a role no run plays is
named in the report instead of silently leaving rows out. A section declares the roles it reads with
`reads_roles` and takes the groups it reads them from as its `groups` option; `check_roles` rejects, before
any training, a role that no section of the study reads from the run's group (a typo would otherwise only
show as a missing role in the report).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


def section_groups(name: str, options: dict[str, Any]) -> tuple[str, ...]:
    """The groups a section reads its roles from: its `groups` option, else the option's default."""
    default = inspect.signature(SECTIONS.get(name)).parameters["groups"].default
    return tuple(options.get("groups", default))


def check_roles(study: StudyConfig, runs: list[tuple[str, str, Any]], roles: dict[str, str]) -> None:
    """Raise a RobustlabError for a run whose role no section of the study reads from the run's group."""
    readers = []  # (section name, its groups, its roles)
    for spec in study.sections:
        name, options = (spec, {}) if isinstance(spec, str) else (spec["name"], spec)
        if section_roles(name):
            readers.append((name, section_groups(name, options), section_roles(name)))
    for label, group, _ in runs:
        role = roles.get(label)
        if role is None or any(group in groups and role in read for _, groups, read in readers):
            continue
        there = "; ".join(f"{name} reads {', '.join(read)}" for name, groups, read in readers if group in groups)
        raise RobustlabError(f"study {study.name!r}: run {label!r} (group {group!r}) has role {role!r}, which no "
                             f"section of the study reads from group {group!r}; "
                             + (there or "no section reads roles from that group") + ".")


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
        return [f"Roles not played in this study: {ticked(self.missing)} (no run of "
                f"group{'s' * (len(self.groups) > 1)} {ticked(self.groups)} has {them}); the rows and claims that need "
                f"{them} are left out. A study config gives a run its role with `role:`.", ""]
