"""Markdown pieces shared by the report sections: table rows and headers, numbers as the tables print them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

ALIGN = {"l": "---|", "r": "---:|"}


def row(*cells: object) -> str:
    """One table row (an empty cell is a single space)."""
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def header(columns: Sequence[str], align: str) -> list[str]:
    """A table's header and alignment lines; `align` has a letter per column: l (text) or r (numbers)."""
    return [row(*columns), "|" + "".join(ALIGN[a] for a in align)]


def missing(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fixed(v: float | None, digits: int = 1) -> str:
    """v with `digits` decimals; – when there is no value."""
    return "–" if missing(v) else f"{v:.{digits}f}"


def pct(v: float | None, digits: int = 1) -> str:
    """A fraction as a percentage with `digits` decimals; – when there is no value."""
    return "–" if v is None or missing(v) else f"{100 * v:.{digits}f}"


def ticked(names: Iterable[str]) -> str:
    """Names in code style, comma-separated."""
    return ", ".join(f"`{n}`" for n in names)


def bullets(items: Iterable[str]) -> list[str]:
    return [f"- {item}" for item in items]
