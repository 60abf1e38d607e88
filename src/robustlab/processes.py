"""Processes leave together: a child robustlab starts (a study's worker, a torchrun rank) ends when its
parent ends, by any signal, kill -9 included, instead of training on as an orphan.

`die_with_parent()` runs in the child: a daemon thread checks once a second whether the process has
been re-parented and then ends it (its files are written atomically, so nothing is left half-written).
`launch_kwargs()` are the `subprocess` arguments that make a program robustlab does not control
(torchrun) receive SIGTERM when the launching process dies (Linux), which torchrun passes on to its ranks.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

POLL_SECONDS = 1.0


def die_with_parent(parent: int | None = None) -> None:
    """End this process as soon as `parent` (default: the current parent) is no longer its parent."""
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        os._exit(1)

    if os.getppid() != parent:  # the parent died before this process got here
        os._exit(1)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def launch_kwargs() -> dict[str, Any]:
    """`subprocess.run(..., **launch_kwargs())`: on Linux the child gets SIGTERM when this process dies."""
    return {"preexec_fn": _parent_death_signal} if sys.platform.startswith("linux") else {}
