"""MNIST and Fashion-MNIST from the idx files LeCun / Zalando publish (plain or gzipped).

The idx format: a 4-byte magic number (two zero bytes, a dtype code, the number of dimensions),
one big-endian uint32 per dimension, then the data in C order.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import RobustlabError
from .base import (
    AugmentSpec,
    ImageDataset,
    check_stats,
    data_root,
    finish,
    missing_files_error,
    per_class_subset,
    to_float_images,
)
from .registry import DATASETS

# idx dtype codes -> numpy dtypes (multi-byte types are big-endian).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# split -> (images file, labels file), as published.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Folders a system package installs the files into, searched after the user's data root, and the package.
# Debian / Ubuntu: `apt-get install dataset-fashion-mnist` puts the four gzipped idx files here.
SYSTEM_DIRS: dict[str, tuple[Path, str]] = {
    "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist"),
}

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


def _decompress(path: Path, blob: bytes) -> bytes:
    """The gzip member in `blob`; a truncated or corrupt stream is an error naming where it stops."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip header and trailer
    try:
        out = inflater.decompress(blob)
    except zlib.error as err:
        raise RobustlabError(f"{path}: cannot read idx file: corrupt gzip data ({err}).") from None
    if not inflater.eof:
        raise RobustlabError(
            f"{path}: truncated gzip file: the compressed stream stops at byte {len(blob)} of the file, "
            f"after {len(out)} decompressed bytes, before its end marker. Download or reinstall the file."
        )
    return out


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file (gzipped when the name ends in .gz) into an array of its header's shape."""
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise RobustlabError(f"{path}: cannot read idx file ({err}).") from None
    # a bytearray, so that the array viewing it is writable
    raw = bytearray(_decompress(path, blob) if path.suffix == ".gz" else blob)
    if len(raw) < 4:
        raise RobustlabError(f"{path}: not an idx file: {len(raw)} bytes, shorter than the 4-byte magic number.")
    magic = int.from_bytes(raw[:4], "big")
    code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or code not in IDX_DTYPES or ndim == 0:
        raise RobustlabError(
            f"{path}: bad idx magic number 0x{magic:08X}; expected 0x0000TTDD with dtype code TT in "
            f"{{{', '.join(f'{c:02X}' for c in IDX_DTYPES)}}} and DD >= 1 dimensions "
            "(e.g. 0x00000803 for images, 0x00000801 for labels). Is the file corrupt or still compressed?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise RobustlabError(
            f"{path}: truncated idx header: {ndim} dimensions need {header} bytes, file has {len(raw)}."
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    count = int(np.prod(dims, dtype=np.int64))
    need = count * dtype.itemsize
    have = len(raw) - header
    if have != need:
        shape = "×".join(str(d) for d in dims)
        item = need // dims[0] if dims[0] else 0  # bytes per image (per label)
        where = (
            f"the data stops at byte {len(raw)}, inside item {have // item + 1} of {dims[0]} ({item} bytes each)"
            if have < need and item
            else f"{have - need} extra bytes from byte {header + need}"
        )
        raise RobustlabError(
            f"{path}: idx header declares {shape} {dtype.name} values ({need} bytes of data) but the file holds "
            f"{have} bytes after the header ({'truncated' if have < need else 'trailing data'}: {where})."
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)


def _candidates(directory: Path, name: str) -> list[Path]:
    """The accepted spellings of `name` in `directory`: as published, gzipped, and with a dot (x.idx3-ubyte)."""
    dotted = name.replace("-idx", ".idx")
    return [directory / n for n in (name, name + ".gz", dotted, dotted + ".gz")]


def _find(directory: Path, name: str) -> Path | None:
    return next((p for p in _candidates(directory, name) if p.is_file()), None)


def _locate(dataset: str, dirs: list[Path], hint: str = "") -> dict[str, Path]:
    """The first directory holding all four idx files -> {file name: path}; else a missing-files error."""
    names = [n for pair in IDX_FILES.values() for n in pair]
    partial = []
    for d in dirs:
        found = {n: _find(d, n) for n in names}
        if all(found.values()):
            return found  # type: ignore[return-value]
        if any(found.values()):
            partial.append(f"{d} has only {', '.join(p.name for p in found.values() if p)}")
    incomplete = ("Incomplete: " + "; ".join(partial) + ".") if partial else ""
    expected = [f"{n}[.gz]" for n in names]
    raise missing_files_error(dataset, expected, dirs, " ".join(h for h in (incomplete, hint) if h))


def _read_split(
    dataset: str, images_path: Path, labels_path: Path, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise RobustlabError(
            f"{images_path}: expected uint8 images N×H×W (magic 0x00000803); got {images.dtype.name} of shape "
            f"{images.shape}."
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise RobustlabError(
            f"{labels_path}: expected 1-d integer labels (magic 0x00000801); got {labels.dtype.name} of shape "
            f"{labels.shape}."
        )
    if labels.shape[0] != images.shape[0]:
        raise RobustlabError(
            f"{dataset}: {labels_path} holds {labels.shape[0]} labels but {images_path} holds {images.shape[0]} images."
        )
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        at = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise RobustlabError(
            f"{labels_path}: label {int(labels[at])} at index {at} (byte {8 + at * labels.dtype.itemsize}) is out of "
            f"range; allowed: 0..{num_classes - 1}."
        )
    return to_float_images(images, "NHW"), torch.from_numpy(labels.astype(np.int64))


def _load_idx_dataset(
    dataset: str,
    base: Path,
    subdirs: list[str],
    class_names: list[str],
    val_fraction: float,
    seed: int,
    train_per_class: int | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
) -> ImageDataset:
    dirs = [base / d for d in subdirs]
    hint = ""
    if dataset in SYSTEM_DIRS:
        system, package = SYSTEM_DIRS[dataset]
        dirs.append(system)
        hint = (
            f"Or install the Debian / Ubuntu package {package} (apt-get install {package}): its files land in {system}."
        )
    files = _locate(dataset, dirs, hint)
    (tr_img, tr_lab), (te_img, te_lab) = IDX_FILES["train"], IDX_FILES["test"]
    train_x, train_y = _read_split(dataset, files[tr_img], files[tr_lab], len(class_names))
    test_x, test_y = _read_split(dataset, files[te_img], files[te_lab], len(class_names))
    check_stats(dataset, mean, std, train_x.shape[1])
    if train_per_class is not None:
        keep = per_class_subset(dataset, train_y, train_per_class, seed)
        train_x, train_y = train_x[keep], train_y[keep]
    return finish(
        dataset, train_x, train_y, test_x, test_y, class_names,
        val_fraction=val_fraction, seed=seed, mean=mean, std=std, augment=AugmentSpec(),
    )  # fmt: skip


@DATASETS.register("mnist")
def load_mnist(
    root=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    train_per_class: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ImageDataset:
    """MNIST as 1×28×28 images in [0, 1]; 60,000 train (minus validation) / 10,000 test.

    Searched, in order: <root>/mnist, <root>/MNIST/raw, <root>/MNIST, <root>. `train_per_class`: keep
    that many training images of each class (a subset drawn with `seed` before the validation split;
    the test split stays whole). No augmentation; mean 0 / std 1 unless given.
    """
    subdirs = ["mnist", "MNIST/raw", "MNIST", "."]
    return _load_idx_dataset(
        "mnist", data_root(root), subdirs, [str(d) for d in range(10)], val_fraction, seed, train_per_class, mean, std
    )


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(
    root=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    train_per_class: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ImageDataset:
    """Fashion-MNIST as 1×28×28 images in [0, 1]; 60,000 train (minus validation) / 10,000 test.

    Searched, in order: <root>/fashion_mnist, <root>/fashion-mnist, <root>/FashionMNIST/raw,
    <root>/FashionMNIST, then /usr/share/datasets/fashion-mnist (where Debian's package
    dataset-fashion-mnist installs the files). The data root itself is not searched: the file names are
    those of MNIST, so files there are taken to be MNIST. `train_per_class`: keep that many training images
    of each class (a subset drawn with `seed` before the validation split; the test split stays whole).
    No augmentation; mean 0 / std 1 unless given.
    """
    subdirs = ["fashion_mnist", "fashion-mnist", "FashionMNIST/raw", "FashionMNIST"]
    return _load_idx_dataset(
        "fashion_mnist", data_root(root), subdirs, list(FASHION_CLASSES), val_fraction, seed, train_per_class, mean, std
    )
