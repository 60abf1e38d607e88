"""User-facing errors.

A `RobustlabError` is raised for bad input that the user can fix (an unknown name, a value out of
range, a missing file). The CLI prints its message without a traceback; everything else is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RobustlabError(ValueError):
    """Bad input: the message names the offending value and what is allowed."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is left intact."""


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a mistyped `name`, or None when none is close."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return close[0] if close else None


def did_you_mean(suggestion: str | None) -> str:
    return f" Did you mean {suggestion!r}?" if suggestion else ""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> RobustlabError:
    """An error for an unknown registry name that lists the known ones and the closest match."""
    known = sorted(known)
    hint = did_you_mean(closest(name, known))
    return RobustlabError(f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known)}.")
