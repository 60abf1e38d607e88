"""Class vectors from a file the user made: .npy (K×D in class order), .npz or .json (class -> vector).

No pickle: .npy/.npz are read with allow_pickle=False.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.npz import read_array, read_arrays
from ..errors import RobustlabError


def file_class_vectors(path: str | Path, class_names: list[str]) -> np.ndarray:
    """K×D class vectors from `path`.

    - `.npy`: a K×D array whose rows follow the dataset's class order;
    - `.npz`: one array of shape (D,) per class, named by the class name;
    - `.json`: an object {"class name": [D numbers], ...}.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = read_array(path)
        if arr.ndim != 2 or arr.shape[0] != len(class_names):
            raise RobustlabError(
                f"{path}: expected a {len(class_names)}×D array (one row per class, in the dataset's "
                f"class order {class_names}); got shape {arr.shape}."
            )
        return arr.astype(np.float32)
    if suffix == ".npz":
        mapping: dict[str, Any] = read_arrays(path)
    elif suffix == ".json":
        try:
            mapping = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise RobustlabError(f"{path}: invalid JSON: {e}") from None
        if not isinstance(mapping, dict):
            raise RobustlabError(f"{path}: expected a JSON object mapping class name -> list of numbers.")
    else:
        raise RobustlabError(f"{path}: unknown vector file type {suffix!r}; allowed: .npy, .npz, .json.")
    missing = [n for n in class_names if n not in mapping]
    if missing:
        raise RobustlabError(f"{path} has no vector for the classes {missing}; it holds {sorted(mapping)[:20]}.")
    rows = [np.asarray(mapping[n], dtype=np.float32).reshape(-1) for n in class_names]
    if len({r.shape[0] for r in rows}) != 1:
        raise RobustlabError(f"{path}: the class vectors have different lengths {sorted({r.shape[0] for r in rows})}.")
    return np.stack(rows)
