"""Terminal output: one console, a training progress bar with running loss and accuracy."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# logs and progress go to stderr, result tables to stdout; 160 columns when not on a terminal
console = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _fmt(stats: dict[str, float]) -> str:
    keys = [k for k in ("loss", "acc", "adv_acc") if k in stats] or list(stats)[:3]
    return "  ".join(f"{k} {stats[k]:.3f}" for k in keys)


def progress_bar(disable: bool = False) -> Progress:
    """A rich progress bar on stderr; it draws only on a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=disable or not console.is_terminal,
    )


class TrainProgress:
    """Progress over the steps of an epoch, and a one-line summary after each epoch."""

    def __init__(self, epochs: int, steps_per_epoch: int, disable: bool = False):
        self.epochs, self.steps = epochs, steps_per_epoch
        self.disable = disable
        self.bar = progress_bar(disable)
        self.task: TaskID | None = None

    def __enter__(self) -> TrainProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def start_epoch(self, epoch: int) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(f"epoch {epoch + 1}/{self.epochs}", total=self.steps, info="")

    def step(self, running: dict[str, float]) -> None:
        if self.task is not None:
            self.bar.update(self.task, advance=1, info=_fmt(running))

    def epoch_done(self, record: dict[str, Any], best: dict[str, Any] | None) -> None:
        if self.disable:
            return
        train = {k[6:]: v for k, v in record.items() if k.startswith("train_")}
        val = "  ".join(f"{k} {record[k]:.3f}" for k in ("val_clean", "val_robust") if k in record)
        star = " *" if best is not None and best.get("epoch") == record["epoch"] else ""
        console.print(
            f"epoch {record['epoch']:>3}/{self.epochs}  {_fmt(train)}  {val}  ({record['time_s']:.1f}s){star}"
        )
