"""Reports: sections (markdown + figures) assembled by `robustlab study`."""

from .context import RunRecord, StudyContext
from .sections import SECTIONS

__all__ = ["SECTIONS", "RunRecord", "StudyContext"]
