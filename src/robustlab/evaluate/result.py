"""An evaluation's result: accuracies, per-sample robustness, stages, flags; its tables and files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import read_json
from ..data.npz import read_arrays, write_arrays
from ..errors import RobustlabError
from ..rundir import write_text_atomic
from ..ui import out


@dataclass
class EvalResult:
    """Accuracies in [0, 1]; `per_sample[name]` is a bool array (robust to that attack).

    `stages[attack][component]` is the accuracy after that component of a cascaded attack
    (AutoAttack), with per-sample arrays under "attack:component"; `flags` are the sanity flags.
    """

    threat: str
    suite: list[str]
    n: int
    clean: float
    attacks: dict[str, float]
    worst_case: float
    step: float
    seconds: dict[str, float] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    flags: list[dict[str, Any]] = field(default_factory=list)
    per_sample: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_sample")
        return d

    def row(self) -> dict[str, float]:
        """clean, each attack, worst case — in suite order."""
        return {"clean": self.clean, **self.attacks, "worst case": self.worst_case}

    def robust(self, n: int | None = None) -> np.ndarray:
        """Per-sample worst case (robust to every attack of the suite) over the first n points."""
        rows = [self.per_sample["clean"]] + [self.per_sample[a] for a in self.suite]
        return np.logical_and.reduce(rows)[:n]

    def save(self, run_dir: str | Path, stem: str = "eval") -> None:
        """Write <stem>_samples.npz, <stem>.md and, last, <stem>.json (what `load` and a study look for)."""
        run_dir = Path(run_dir)
        write_arrays(run_dir / f"{stem}_samples.npz", self.per_sample)
        write_text_atomic(
            run_dir / f"{stem}.md", markdown_table({run_dir.name: self}) + stages_lines(self) + flag_lines(self.flags)
        )
        write_text_atomic(run_dir / f"{stem}.json", json.dumps(self.to_json(), indent=2))

    @classmethod
    def load(cls, run_dir: str | Path, stem: str = "eval") -> EvalResult:
        d = read_json(Path(run_dir) / f"{stem}.json")
        samples = Path(run_dir) / f"{stem}_samples.npz"
        per = read_arrays(samples) if samples.exists() else {}
        try:
            return cls(**d, per_sample=per)
        except TypeError as e:
            raise RobustlabError(f"{Path(run_dir) / (stem + '.json')} is not a robustlab evaluation ({e}).") from None


def markdown_table(results: dict[str, EvalResult], digits: int = 2) -> str:
    """Rows = runs, columns = clean, each attack, worst case (accuracy %)."""
    if not results:
        return ""
    columns: list[str] = []
    for r in results.values():
        for c in r.row():
            if c not in columns:
                columns.append(c)
    lines = ["| run | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, r in results.items():
        row = r.row()
        cells = [f"{100 * row[c]:.{digits}f}" if c in row else "–" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stages_lines(result: EvalResult) -> str:
    """One line per cascaded attack: robust accuracy after each of its components."""
    return "".join(
        f"\n{attack}: " + " → ".join(f"{name} {100 * acc:.2f}%" for name, acc in comps.items()) + "\n"
        for attack, comps in result.stages.items()
    )


def flag_lines(flags: list[dict[str, Any]]) -> str:
    """The sanity flags as text: raised ones with their explanation, then a summary of the checks."""
    if not flags:
        return ""
    raised = [f for f in flags if f["raised"]]
    lines = [f"\nFLAG {f['name']}: {f['detail']}\n  {f['explanation']}" for f in raised]
    checked = ", ".join(f"{f['name']} (n={f['n']})" for f in flags if f["checked"] and not f["raised"])
    skipped = ", ".join(f"{f['name']} ({f['detail']})" for f in flags if not f["checked"])
    lines.append(
        f"\nsanity flags: {len(raised)} raised"
        + (f"; passed: {checked}" if checked else "")
        + (f"; not checked: {skipped}" if skipped else "")
    )
    return "\n".join(lines) + "\n"


def print_table(results: dict[str, EvalResult], title: str = "") -> None:
    from rich.table import Table

    first = next(iter(results.values()))
    table = Table(title=title or f"accuracy (%) under {first.threat}, n={first.n}")
    table.add_column("run")
    columns = list(first.row())
    for c in columns:
        table.add_column(c, justify="right")
    for name, r in results.items():
        row = r.row()
        table.add_row(name, *[f"{100 * row[c]:.2f}" if c in row else "–" for c in columns])
    out.print(table)
    for r in results.values():
        text = stages_lines(r) + flag_lines(r.flags)
        if text:
            out.print(text.strip("\n"), markup=False)
