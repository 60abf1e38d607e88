"""Any image classification data saved with `numpy.savez` (a .npz archive of plain arrays).

Keys: x_train, y_train, x_test, y_test — or just x, y (a seeded, stratified test split is then
held out) — and optionally class_names (an array of strings). Images may be N×C×H×W, N×H×W×C or
N×H×W, uint8 (0..255) or float already in [0, 1]. Archives are read with allow_pickle=False.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from .. import seeds
from ..errors import RobustlabError
from ..rundir import atomic_path
from .base import (
    ImageDataset,
    Split,
    carve_validation,
    check_images,
    check_stats,
    data_root,
    finish,
    missing_files_error,
    to_float_images,
)
from .registry import DATASETS

SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
WHOLE_KEYS = ("x", "y")


def resolve_file(dataset: str, path: str, root: Any) -> Path:
    """An absolute `path`, else `path` under the data root, else under the working directory."""
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [data_root(root) / p, Path.cwd() / p]
    for c in candidates:
        if c.is_file():
            return c
    raise missing_files_error(dataset, [str(p) if p.is_absolute() else path], [c.parent for c in candidates])


def image_layout(shape: tuple[int, ...]) -> str:
    """The layout of an image array: N×H×W, N×H×W×C (last dim 1 or 3, dim 1 not) or N×C×H×W."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        return "NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"
    raise RobustlabError(f"images must be N×C×H×W, N×H×W×C or N×H×W; got shape {shape}.")


def _images(x: np.ndarray, where: str) -> torch.Tensor:
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise RobustlabError(
            f"{where}: images must be uint8 (0..255) or float in [0, 1]; got {x.dtype.name}"
            " (convert with .astype(np.uint8) if the values are 0..255)."
        )
    try:
        layout = image_layout(x.shape)
    except RobustlabError as err:
        raise RobustlabError(f"{where}: {err}") from None
    t = to_float_images(x, layout)
    if t.shape[1] not in (1, 3):
        raise RobustlabError(
            f"{where}: images of shape {x.shape} read as {layout} have {t.shape[1]} channels; "
            "expected 1 or 3 (N×1×H×W, N×3×H×W, N×H×W×1, N×H×W×3 or N×H×W)."
        )
    return t


def _labels(y: np.ndarray, where: str, n: int) -> torch.Tensor:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise RobustlabError(
            f"{where}: labels must be a 1-d integer array (or N×1); got {y.dtype.name} of shape {y.shape}."
        )
    if y.shape[0] != n:
        raise RobustlabError(f"{where}: {y.shape[0]} labels for {n} images.")
    return torch.from_numpy(y.astype(np.int64))


def as_split(x: Any, y: Any, where: str) -> tuple[Split, str]:
    """Images and labels given as numpy arrays or torch tensors -> (Split in pixel space, the layout assumed).

    Images: N×C×H×W, N×H×W×C or N×H×W (see `image_layout`), uint8 0..255 or float already in [0, 1];
    labels: integers of any dtype, N or N×1.
    """
    if torch.is_tensor(x):  # numpy has no bfloat16: low-precision floats are read as float32
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() and x.dtype != torch.float64 else x
    xs = x.numpy() if torch.is_tensor(x) else np.asarray(x)
    ys = y.detach().cpu().numpy() if torch.is_tensor(y) else np.asarray(y)
    images = _images(xs, f"{where}: x")
    check_images(f"{where}: x (after conversion from {xs.dtype.name}, read as {image_layout(xs.shape)})", images)
    return Split(images, _labels(ys, f"{where}: y", images.shape[0])), image_layout(xs.shape)


def evaluation_split(path: str | Path) -> tuple[Split, list[str]]:
    """The points of an .npz archive to evaluate on: x_test / y_test when it has them, else all of x / y; and the
    class names (from `class_names`, else "0".."K-1")."""
    arrays = read_arrays(Path(path).expanduser())
    keys = ("x_test", "y_test") if {"x_test", "y_test"} <= set(arrays) else WHOLE_KEYS
    if not set(keys) <= set(arrays):
        raise RobustlabError(
            f"{path}: keys {', '.join(sorted(arrays)) or '(none)'}; expected x_test, y_test or x, y (plus optional "
            "class_names)."
        )
    split, _ = as_split(arrays[keys[0]], arrays[keys[1]], str(path))
    return split, _class_names(arrays, Path(path), [split.y])


def read_array(path: str | Path, mmap: bool = False) -> np.ndarray:
    """The array of a .npy file (memory-mapped with `mmap`), never unpickling; see `_numpy`."""
    out = _numpy(Path(path), mmap)
    if not isinstance(out, np.ndarray):
        raise RobustlabError(f"{path}: expected a single .npy array (numpy.save); got an .npz archive.")
    return out


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz archive by name, never unpickling; see `_numpy`."""
    out = _numpy(Path(path), False)
    if isinstance(out, np.ndarray):
        raise RobustlabError(f"{path}: expected an .npz archive (numpy.savez); got a single .npy array.")
    return out


def write_arrays(path: str | Path, arrays: dict[str, np.ndarray], compressed: bool = True) -> None:
    """An .npz archive of plain arrays by name, written atomically (the counterpart of `read_arrays`)."""
    save = np.savez_compressed if compressed else np.savez
    with atomic_path(path) as tmp:
        save(tmp, **cast(dict[str, Any], arrays))  # cast: numpy's stub reads a key as its allow_pickle flag


def _numpy(path: Path, mmap: bool) -> np.ndarray | dict[str, np.ndarray]:
    """np.load with allow_pickle=False: an array of Python objects, a truncated or foreign file is a one-line
    error naming the file."""
    try:
        if mmap:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with open(path, "rb") as f:  # our own handle, closed even when numpy fails half-way
            z = np.load(f, allow_pickle=False)
            if isinstance(z, np.ndarray):
                return z
            with z:
                return {k: z[k] for k in z.files}
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise RobustlabError(
                f"{path}: holds pickled Python objects (an array of dtype=object), which are refused "
                "(allow_pickle=False); save plain numeric arrays (class names as np.array(names) of str, "
                "not dtype=object)."
            ) from None
        raise RobustlabError(f"{path}: not a readable numpy file ({err}).") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise RobustlabError(f"{path}: not a readable numpy file ({type(err).__name__}: {err}).") from None


@DATASETS.register("npz")
def load_npz(
    root=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    path: str,
    test_fraction: float = 0.2,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ImageDataset:
    """Images and labels from the .npz archive `path` (absolute, else under the data root, else the working directory).

    With keys x, y (no explicit split) a stratified `test_fraction` of each class is held out as the
    test split, seeded by `seed` + 1 (as `digits` does). Class names come from `class_names`, else
    "0".."K-1" with K = the largest label + 1. No augmentation; mean 0 / std 1 unless given.
    """
    file = resolve_file("npz", path, root)
    arrays = read_arrays(file)
    keys = set(arrays)
    if set(SPLIT_KEYS) <= keys:
        train_x = _images(arrays["x_train"], f"{file} x_train")
        test_x = _images(arrays["x_test"], f"{file} x_test")
        train_y = _labels(arrays["y_train"], f"{file} y_train", train_x.shape[0])
        test_y = _labels(arrays["y_test"], f"{file} y_test", test_x.shape[0])
    elif set(WHOLE_KEYS) <= keys and not keys & set(SPLIT_KEYS):
        if not 0.0 < test_fraction < 1.0:
            raise RobustlabError(f"npz: test_fraction={test_fraction!r} must be in (0, 1).")
        x = _images(arrays["x"], f"{file} x")
        y = _labels(arrays["y"], f"{file} y", x.shape[0])
        train, test = carve_validation(x, y, test_fraction, seeds.test_split(seed))
        train_x, train_y, test_x, test_y = train.x, train.y, test.x, test.y
    else:
        raise RobustlabError(
            f"{file}: keys {', '.join(sorted(keys)) or '(none)'}; expected either {', '.join(SPLIT_KEYS)} "
            f"or {', '.join(WHOLE_KEYS)} (plus optional class_names)."
        )
    class_names = _class_names(arrays, file, [train_y, test_y])
    check_stats("npz", mean, std, train_x.shape[1])
    return finish(
        "npz", train_x, train_y, test_x, test_y, class_names, val_fraction=val_fraction, seed=seed, mean=mean, std=std
    )


def _class_names(arrays: dict[str, np.ndarray], file: Path, labels: list[torch.Tensor]) -> list[str]:
    """`class_names` of the archive, else "0".."K-1" with K = the largest label + 1."""
    if "class_names" not in arrays:
        top = max((int(y.max()) for y in labels if y.numel()), default=-1)
        return [str(k) for k in range(top + 1)]
    names = arrays["class_names"]
    if names.ndim != 1 or names.dtype.kind not in "US" or names.size == 0:
        raise RobustlabError(
            f"{file}: class_names must be a non-empty 1-d array of strings; got {names.dtype.name} of shape "
            f"{names.shape}."
        )
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist()]
