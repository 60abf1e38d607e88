"""The resume state of an evaluation, and the fingerprints that tell evaluations apart."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import read_json
from ..data.npz import read_arrays, write_arrays
from ..rundir import write_text_atomic


class EvalState:
    """An evaluation's progress on disk: <stem>.json (settings, batches done and seconds per attack)
    and <stem>.npz (the per-sample results of the finished batches). Both are replaced atomically."""

    def __init__(self, path: str | Path, settings: dict[str, Any]):
        path = Path(path)
        self.json_path, self.npz_path = path.with_suffix(".json"), path.with_suffix(".npz")
        self.settings = json.loads(json.dumps(settings))
        self.batches: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.arrays: dict[str, np.ndarray] = {}
        if self.json_path.exists() and self.npz_path.exists():
            saved = read_json(self.json_path)
            if saved.get("settings") == self.settings:
                self.batches, self.seconds = saved["batches"], saved["seconds"]
                self.arrays = read_arrays(self.npz_path)

    @property
    def resumed(self) -> bool:
        return bool(self.batches)

    def record(self, label: str, batches_done: int, seconds: float, arrays: dict[str, np.ndarray]) -> None:
        self.arrays.update(arrays)
        self.batches[label], self.seconds[label] = batches_done, seconds
        write_arrays(self.npz_path, self.arrays, compressed=False)
        # written last: it never claims batches the npz lacks
        write_text_atomic(
            self.json_path, json.dumps({"settings": self.settings, "batches": self.batches, "seconds": self.seconds})
        )

    def remove(self) -> None:
        self.json_path.unlink(missing_ok=True)
        self.npz_path.unlink(missing_ok=True)


def fingerprint(*tensors: torch.Tensor) -> str:
    """A hash of tensors' contents (model weights, data) for telling evaluations apart."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
