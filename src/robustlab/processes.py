"""Process settings. Processes leave together: a child robustlab starts (a study's worker, a torchrun rank)
ends when its parent ends, by any signal, kill -9 included, instead of training on as an orphan. And a
robustlab process keeps the memory its tensors free (`keep_freed_memory`).

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


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Let glibc keep the memory that tensors free for the next tensors instead of handing it back to the
    kernel; True where applied (glibc), False elsewhere (a no-op).

    An attack allocates and frees the same activation sizes thousands of times. By default glibc serves
    blocks above a moving threshold with fresh mmap pages and trims the top of the heap when it is freed, so
    the kernel zeroes new pages for every batch: 235,000 page faults in 30 forward+backward passes of the
    digits small_cnn on 500 images, 3,000 with this setting (tests/test_processes.py); 20 million in the
    default study, 0.8 million with it (docs/evaluation.md); AutoAttack on 150 digits took 7 % less CPU time
    with it (two interleaved pairs of runs). Settings: no
    trimming while less than 1 GiB is free at the top, a 64 MiB pad when the heap grows, mmap only for
    blocks of 32 MiB or more (glibc's largest threshold; fixing it also stops the moving threshold)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows)
        return False
    return all(
        mallopt(param, value)
        for param, value in ((_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20), (_M_MMAP_THRESHOLD, 32 << 20))
    )
