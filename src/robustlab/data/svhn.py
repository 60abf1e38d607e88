"""SVHN (cropped digits, "format 2") from the official train_32x32.mat / test_32x32.mat / extra_32x32.mat.

Each .mat file holds X, a 32×32×3×N uint8 array (height, width, channel, sample), and y, an N×1
array of labels 1..10 where 10 stands for the digit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import RobustlabError
from .base import AugmentSpec, ImageDataset, check_stats, data_root, finish, missing_files_error, to_float_images
from .registry import DATASETS


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN .mat file -> (uint8 images N×3×32×32, int64 labels N with 10 mapped to 0)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except Exception as err:  # scipy raises ValueError, TypeError, OSError, NotImplementedError (v7.3), ...
        raise RobustlabError(f"{path}: not a readable SVHN .mat file ({type(err).__name__}: {err}).") from None
    missing = [k for k in ("X", "y") if k not in mat]
    if missing:
        raise RobustlabError(
            f"{path}: no variable {' or '.join(missing)}; an SVHN .mat file holds X (32×32×3×N) and y (N×1)."
        )
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
        raise RobustlabError(f"{path}: X must be a uint8 array H×W×3×N; got {x.dtype.name} of shape {x.shape}.")
    if y.dtype.kind not in "iuf" or y.size != x.shape[3] or (y.ndim == 2 and 1 not in y.shape) or y.ndim > 2:
        raise RobustlabError(f"{path}: y must hold {x.shape[3]} labels (N×1); got {y.dtype.name} of shape {y.shape}.")
    labels = y.reshape(-1)
    # some re-exports store labels as double; accept them only when integral
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        raise RobustlabError(f"{path}: y holds non-integer labels.")
    labels = labels.astype(np.int64)
    bad = (labels < 0) | (labels > 10)
    if bad.any():
        raise RobustlabError(
            f"{path}: label {int(labels[bad][0])} is out of range; SVHN labels are 1..10 (10 = digit 0)."
        )
    labels[labels == 10] = 0
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # H×W×C×N -> N×C×H×W
    return images, labels


@DATASETS.register("svhn")
def load_svhn(
    root=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    extra: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ImageDataset:
    """SVHN as 3×32×32 images in [0, 1]; 73,257 train (minus validation) / 26,032 test; classes "0".."9".

    Searched, in order: <root>/svhn, <root>/SVHN, <root>. `extra=True` appends the 531,131 images of
    extra_32x32.mat to the training set (≈6.5 GB as float32). Augmentation: random crop with 4 pixels
    of padding, no flip (digits are not mirror-symmetric). Mean 0 / std 1 unless given.
    """
    base = data_root(root)
    dirs = [base / "svhn", base / "SVHN", base]
    names = ["train_32x32.mat", "test_32x32.mat"] + (["extra_32x32.mat"] if extra else [])
    found = next((d for d in dirs if all((d / n).is_file() for n in names)), None)
    if found is None:
        partial = [
            f"{d} has only {', '.join(n for n in names if (d / n).is_file())}"
            for d in dirs
            if any((d / n).is_file() for n in names)
        ]
        raise missing_files_error("svhn", names, dirs, ("Incomplete: " + "; ".join(partial) + ".") if partial else "")
    check_stats("svhn", mean, std, 3)
    train_x, train_y = read_svhn_mat(found / "train_32x32.mat")
    test_x, test_y = read_svhn_mat(found / "test_32x32.mat")
    if extra:
        extra_x, extra_y = read_svhn_mat(found / "extra_32x32.mat")
        if extra_x.shape[1:] != train_x.shape[1:]:
            raise RobustlabError(
                f"svhn: extra_32x32.mat images {extra_x.shape[1:]} differ in shape from train_32x32.mat images "
                f"{train_x.shape[1:]}."
            )
        train_x, train_y = np.concatenate([train_x, extra_x]), np.concatenate([train_y, extra_y])
    return finish(
        "svhn",
        to_float_images(train_x), torch.from_numpy(train_y),
        to_float_images(test_x), torch.from_numpy(test_y),
        [str(d) for d in range(10)],
        val_fraction=val_fraction, seed=seed, mean=mean, std=std,
        augment=AugmentSpec(crop_padding=4, flip=False),
    )  # fmt: skip
