"""Reports: sections (markdown + figures) assembled by `robustlab study`.

Each paper's section lives in its own module here and registers itself in SECTIONS (report/registry.py);
sections find the study's runs by the roles the study config gives them (report/roles.py).
"""

from ..registry import import_submodules
from .context import RunRecord, StudyContext
from .registry import SECTIONS

import_submodules(__name__, __path__)

__all__ = ["SECTIONS", "RunRecord", "StudyContext"]
