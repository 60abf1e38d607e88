"""CIFAR-10 and CIFAR-100 from the official "python version" pickles, extracted or still in the .tar.gz.

The official format is a Python 2 pickle per batch: a dict with b"data" (N×3072 uint8, each row the
1024 red, then green, then blue pixels of a 32×32 image in row-major order) and b"labels"
(CIFAR-10) or b"fine_labels" / b"coarse_labels" (CIFAR-100). Unpickling can run arbitrary code, so
the files are read with `SafeUnpickler`, which resolves only the few globals those files need
(numpy array reconstruction) and refuses everything else.
"""

from __future__ import annotations

import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import torch

from ..errors import RobustlabError
from .base import AugmentSpec, ImageDataset, check_stats, data_root, finish, missing_files_error, to_float_images
from .registry import DATASETS

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _np_numeric  # type: ignore[no-redef]


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as Python 3 pickles (protocol <= 2) use it for bytes, and nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(
            f"_codecs.encode is only allowed as encode(str, 'latin1'), got encoding {encoding!r}"
        )
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """`bytes()` as Python 3 pickles (protocol <= 2) use it for b"", and nothing more."""
    if args:
        raise pickle.UnpicklingError("bytes(...) is only allowed without arguments")
    return b""


# (module, name) -> the object it resolves to. Python 2 pickles (the official files) name numpy.core;
# numpy 2 writes numpy._core; Python 3 pickles with protocol <= 2 add _codecs.encode / bytes for bytes
# objects; protocol 5 arrays use _frombuffer.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}
if hasattr(_np_numeric, "_frombuffer"):
    _ALLOWED_GLOBALS[("numpy.core.numeric", "_frombuffer")] = _np_numeric._frombuffer
    _ALLOWED_GLOBALS[("numpy._core.numeric", "_frombuffer")] = _np_numeric._frombuffer


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in `_ALLOWED_GLOBALS`; anything else is refused."""

    def __init__(self, file: IO[bytes], where: str):
        super().__init__(file, encoding="bytes")
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RobustlabError(
                f"{self.where}: refusing to unpickle {module}.{name}: a CIFAR batch holds only numpy arrays, "
                "lists, dicts and strings, so this file is not a genuine CIFAR pickle (unpickling it could run code). "
                "Allowed globals: " + ", ".join(sorted({f"{m}.{n}" for m, n in _ALLOWED_GLOBALS})) + "."
            ) from None


def safe_unpickle(file: IO[bytes], where: str) -> dict[str, Any]:
    """Unpickle a CIFAR dict from `file` with `SafeUnpickler`; bytes keys are decoded to str."""
    try:
        obj = SafeUnpickler(file, where).load()
    except RobustlabError:
        raise
    except Exception as err:  # pickle raises many types on corrupt input (UnpicklingError, EOFError, ValueError, ...)
        raise RobustlabError(f"{where}: not a readable CIFAR pickle ({type(err).__name__}: {err}).") from None
    if not isinstance(obj, dict):
        raise RobustlabError(f"{where}: a CIFAR pickle holds a dict; this one holds a {type(obj).__name__}.")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


CIFAR_LAYOUTS: dict[str, dict[str, Any]] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "subdir": "cifar10",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "subdir": "cifar100",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
    },
}


def _search_paths(dataset: str, base: Path) -> list[tuple[str, Path]]:
    """("dir" | "tar", path) in search order."""
    lay = CIFAR_LAYOUTS[dataset]
    sub = base / lay["subdir"]
    return [
        ("dir", base / lay["folder"]),
        ("tar", base / lay["archive"]),
        ("dir", sub / lay["folder"]),
        ("tar", sub / lay["archive"]),
        ("dir", sub),
    ]


def _read_members(dataset: str, base: Path) -> dict[str, dict[str, Any]]:
    """Find the batches (extracted directory or archive) and unpickle them: {file name: dict}."""
    lay = CIFAR_LAYOUTS[dataset]
    needed = lay["train"] + lay["test"] + [lay["meta"]]
    partial = []
    for kind, path in _search_paths(dataset, base):
        if kind == "dir" and path.is_dir():
            present = [n for n in needed if (path / n).is_file()]
            if len(present) == len(needed):
                out = {}
                for n in needed:
                    with open(path / n, "rb") as f:
                        out[n] = safe_unpickle(f, str(path / n))
                return out
            if present:
                partial.append(f"{path} lacks {', '.join(n for n in needed if n not in present)}")
        elif kind == "tar" and path.is_file():
            return _read_archive(path, lay["folder"], needed)
    expected = [*needed, f"(or the archive {lay['archive']})"]
    hint = ("Incomplete: " + "; ".join(partial) + ".") if partial else ""
    raise missing_files_error(dataset, expected, [p for _, p in _search_paths(dataset, base)], hint)


def _read_archive(path: Path, folder: str, needed: list[str]) -> dict[str, dict[str, Any]]:
    """Unpickle the `needed` members <folder>/<name> of a .tar.gz while streaming through it once."""
    out: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                p = PurePosixPath(member.name)
                if member.isfile() and p.name in needed and p.parent.name == folder and p.name not in out:
                    f = tar.extractfile(member)
                    if f is not None:
                        out[p.name] = safe_unpickle(f, f"{path}:{member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise RobustlabError(
            f"{path}: cannot read the archive ({type(err).__name__}: {err}); re-download it."
        ) from None
    missing = [n for n in needed if n not in out]
    if missing:
        raise RobustlabError(f"{path}: the archive lacks {', '.join(f'{folder}/{n}' for n in missing)}.")
    return out


def _names(meta: dict[str, Any], key: str, where: str) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise RobustlabError(
            f"{where}: expected a list of class names under {key!r}; keys present: {', '.join(sorted(map(str, meta)))}."
        )
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _batch(d: dict[str, Any], label_key: str, where: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in d or label_key not in d:
        lacking = " and ".join(repr(k) for k in ("data", label_key) if k not in d)
        raise RobustlabError(f"{where}: no {lacking} entry; keys present: {', '.join(sorted(map(str, d)))}.")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        desc = f"{data.dtype.name} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise RobustlabError(f"{where}: 'data' must be a uint8 array N×3072 (3×32×32 images); got {desc}.")
    labels = np.asarray(d[label_key])
    if labels.size == 0:
        labels = labels.astype(np.int64)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise RobustlabError(
            f"{where}: {label_key!r} must be a list of integers; got {labels.dtype.name} of shape {labels.shape}."
        )
    if labels.shape[0] != data.shape[0]:
        raise RobustlabError(f"{where}: {labels.shape[0]} labels for {data.shape[0]} images.")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise RobustlabError(f"{where}: label {int(bad)} is out of range; allowed: 0..{num_classes - 1}.")
    return data, labels.astype(np.int64)


def _load_cifar(
    dataset: str,
    root: Any,
    label_key: str,
    names_key: str,
    val_fraction: float,
    seed: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> ImageDataset:
    lay = CIFAR_LAYOUTS[dataset]
    members = _read_members(dataset, data_root(root))
    class_names = _names(members[lay["meta"]], names_key, f"{dataset} {lay['meta']}")
    check_stats(dataset, mean, std, 3)

    def split(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_batch(members[n], label_key, f"{dataset} {n}", len(class_names)) for n in files]
        data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        return to_float_images(data.reshape(-1, 3, 32, 32), "NCHW"), torch.from_numpy(labels)

    train_x, train_y = split(lay["train"])
    test_x, test_y = split(lay["test"])
    return finish(
        dataset, train_x, train_y, test_x, test_y, class_names,
        val_fraction=val_fraction, seed=seed, mean=mean, std=std,
        augment=AugmentSpec(crop_padding=4, flip=True),
    )  # fmt: skip


@DATASETS.register("cifar10")
def load_cifar10(
    root=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ImageDataset:
    """CIFAR-10 as 3×32×32 images in [0, 1]; 50,000 train (minus validation) / 10,000 test.

    Reads <root>/cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta) or
    <root>/cifar-10-python.tar.gz, then the same under <root>/cifar10/ (and the batch files directly
    in <root>/cifar10/). Augmentation: random crop with 4 pixels of padding + horizontal flip.
    """
    return _load_cifar(
        "cifar10", root, "labels", "label_names", val_fraction, seed,
        mean if mean is not None else (0.4914, 0.4822, 0.4465),
        std if std is not None else (0.2471, 0.2435, 0.2616),
    )  # fmt: skip


@DATASETS.register("cifar100")
def load_cifar100(
    root=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    coarse: bool = False,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ImageDataset:
    """CIFAR-100 as 3×32×32 images in [0, 1]; 100 fine classes (20 superclasses with coarse=True).

    Reads <root>/cifar-100-python/ (train, test, meta) or <root>/cifar-100-python.tar.gz, then the
    same under <root>/cifar100/. Augmentation: random crop with 4 pixels of padding + horizontal flip.
    """
    return _load_cifar(
        "cifar100", root,
        "coarse_labels" if coarse else "fine_labels",
        "coarse_label_names" if coarse else "fine_label_names",
        val_fraction, seed,
        mean if mean is not None else (0.5071, 0.4865, 0.4409),
        std if std is not None else (0.2673, 0.2564, 0.2762),
    )  # fmt: skip
