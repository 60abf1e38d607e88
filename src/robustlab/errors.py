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


def unknown_name(kind: str, name: str, known: Iterable[str]) -> RobustlabError:
    """An error for an unknown registry name that lists the known ones and the closest match."""
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return RobustlabError(f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known)}.")
