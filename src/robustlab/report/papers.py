"""The papers' numbers that the report quotes, read from paper_numbers.yaml (one entry per table or
figure, each naming its source: paper key in docs/references.md, table or figure, data set, model, setting)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

PATH = Path(__file__).with_name("paper_numbers.yaml")
SOURCE_FIELDS = ("paper", "where", "dataset", "model", "setting")


@functools.cache
def entries() -> dict[str, dict[str, Any]]:
    """Every entry of the file: {key: {"source": {...}, "values": ...}}."""
    return yaml.safe_load(PATH.read_text())


def paper_numbers(key: str) -> Any:
    """The values of entry `key`."""
    return entries()[key]["values"]
