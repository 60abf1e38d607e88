"""Readers for the pre-generated benchmarks of Hendrycks & Dietterich (2019).

- CIFAR-10-C / CIFAR-100-C: <dir>/<corruption>.npy (50000×32×32×3 uint8: 10000 test images per
  severity, severities 1..5 in order) and <dir>/labels.npy.
- ImageNet-C: <dir>/<corruption>/<severity>/<class folder>/<image>; the class folders must be the
  class names of the model's data set (e.g. the WordNet ids n01440764 ...), read in that order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import Split
from ..data.base import to_float_images
from ..data.imagefolder import read_class_folders
from ..data.npz import read_array
from ..errors import RobustlabError

PER_SEVERITY = 10000


def read_cifar_c(folder: str | Path, corruption: str, severity: int, n: int | None = None) -> Split:
    """Severity `severity` of one CIFAR-10-C (or CIFAR-100-C) corruption, the first `n` images of it."""
    folder = Path(folder).expanduser()
    images, labels = folder / f"{corruption}.npy", folder / "labels.npy"
    if not images.exists() or not labels.exists():
        raise RobustlabError(
            f"CIFAR-C: {images.name} and labels.npy not found in {folder}; download CIFAR-10-C "
            f"(Hendrycks & Dietterich 2019) and point the path at its folder."
        )
    arr, lab = read_array(images, mmap=True), read_array(labels, mmap=True)
    per = arr.shape[0] // 5 if arr.shape[0] % 5 == 0 else PER_SEVERITY
    start = (severity - 1) * per
    stop = start + (per if n is None else min(n, per))
    return Split(
        to_float_images(np.array(arr[start:stop]), "NHWC"), torch.as_tensor(np.array(lab[start:stop]), dtype=torch.long)
    )


def read_imagenet_c(
    folder: str | Path,
    corruption: str,
    severity: int,
    class_names: list[str],
    image_size: int,
    max_per_class: int | None = None,
    grayscale: bool = False,
) -> Split:
    """Severity `severity` of one ImageNet-C corruption, resized/cropped to `image_size` as our imagefolder
    loader does."""
    split_dir = Path(folder).expanduser() / corruption / str(severity)
    if not split_dir.is_dir():
        raise RobustlabError(
            f"ImageNet-C: {split_dir} does not exist (expected <dir>/<corruption>/<severity>/<class>/<image>)."
        )
    x, y = read_class_folders(split_dir, class_names, image_size, grayscale, max_per_class, require_each=False)
    return Split(x, y)
