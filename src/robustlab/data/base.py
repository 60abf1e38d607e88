"""The in-memory dataset every loader returns, and the checks all loaders share."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import RobustlabError


@dataclass
class Split:
    """Images `x` (N×C×H×W float32 in [0, 1]) and integer labels `y` (N,) held in memory."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def subset(self, index: torch.Tensor | slice) -> Split:
        return Split(self.x[index], self.y[index])

    def head(self, n: int | None) -> Split:
        """The first `n` samples (all when n is None)."""
        return self if n is None or n >= len(self) else self.subset(slice(0, n))

    def __repr__(self) -> str:  # the dataclass default would print both tensors in full
        images = f"{len(self)} images {'×'.join(map(str, self.x.shape[1:]))} {_values(self.x)}"
        return f"Split({images}, labels {int(self.y.min())}..{int(self.y.max())})" if len(self) else f"Split({images})"


def _values(*xs: torch.Tensor) -> str:
    """dtype and value range of image tensors, e.g. "float32 in [0, 1]"."""
    dtype = str(xs[0].dtype).removeprefix("torch.")
    xs = tuple(x for x in xs if x.numel())
    return f"{dtype} in [{min(float(x.min()) for x in xs):.3g}, {max(float(x.max()) for x in xs):.3g}]" if xs else dtype


@dataclass
class AugmentSpec:
    """Training-time augmentation: random crop with `crop_padding` pixels of padding, horizontal flip."""

    crop_padding: int = 0
    flip: bool = False
    pad_mode: str = "constant"  # "constant" (zeros), "reflect" or "replicate" ("edge", as SCARL uses)

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.flip


@dataclass
class ImageDataset:
    """A dataset with train / validation / test splits in pixel space.

    The validation split is carved from the official training set with a fixed seed; model
    selection uses it, never the test split. `mean`/`std` are the per-channel statistics that a
    model built for this dataset puts inside its first layer.
    """

    name: str
    train: Split
    val: Split
    test: Split
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: AugmentSpec = field(default_factory=AugmentSpec)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def input_size(self) -> int:
        return int(self.train.x.shape[-1])

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise RobustlabError(f"unknown split {name!r}; allowed: train, val, test.")
        return getattr(self, name)

    def summary(self) -> str:
        c, s = self.in_channels, self.input_size
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
            f"{c}×{s}×{s}, {self.num_classes} classes"
        )

    def __repr__(self) -> str:  # the dataclass default would print every split's tensors in full
        names = ", ".join(self.class_names[:4]) + (", …" if self.num_classes > 4 else "")
        values = _values(self.train.x, self.val.x, self.test.x)
        return (
            f"ImageDataset({self.summary()} ({names}), {values}" + (", augmented" if self.augment.enabled else "") + ")"
        )


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else $ROBUSTLAB_DATA, else ./data."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("ROBUSTLAB_DATA")
    return Path(env).expanduser() if env else Path("data")


def to_float_images(x: np.ndarray | torch.Tensor, layout: str = "NCHW") -> torch.Tensor:
    """uint8 (0..255) or float images in `layout` ("NCHW", "NHWC" or "NHW") -> float32 N×C×H×W in [0, 1]."""
    t = torch.as_tensor(np.asarray(x))
    if layout == "NHW":
        t = t.unsqueeze(1)
    elif layout == "NHWC":
        t = t.permute(0, 3, 1, 2)
    elif layout != "NCHW":
        raise ValueError(f"unknown layout {layout!r}")
    t = t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
    return t.contiguous()


def check_images(where: str, x: torch.Tensor) -> None:
    """Raise unless `x` is a float N×C×H×W batch in [0, 1] with 1 or 3 channels."""
    if not torch.is_tensor(x) or x.dim() != 4:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise RobustlabError(f"{where}: images must be a 4-d tensor N×C×H×W; got shape {shape}.")
    if not x.is_floating_point():
        raise RobustlabError(f"{where}: images must be float in [0, 1]; got dtype {x.dtype}.")
    if x.numel() == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if not (lo >= 0.0 and hi <= 1.0):
        raise RobustlabError(
            f"{where}: images must lie in [0, 1] (pixel space; normalisation belongs inside the model); "
            f"got values in [{lo:.4g}, {hi:.4g}]."
        )


def check_labels(where: str, y: torch.Tensor, num_classes: int, n: int | None = None) -> None:
    """Raise unless `y` holds integer labels in [0, num_classes) (and `n` of them)."""
    if not torch.is_tensor(y) or y.dim() != 1 or y.is_floating_point():
        raise RobustlabError(
            f"{where}: labels must be a 1-d integer tensor; got {getattr(y, 'shape', y)!r} {getattr(y, 'dtype', '')}."
        )
    if n is not None and y.shape[0] != n:
        raise RobustlabError(f"{where}: {y.shape[0]} labels for {n} images.")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = y[(y < 0) | (y >= num_classes)][0].item()
        raise RobustlabError(
            f"{where}: label {bad} is out of range; allowed: 0..{num_classes - 1} ({num_classes} classes)."
        )


def check_stats(dataset: str, mean: tuple[float, ...] | None, std: tuple[float, ...] | None, channels: int) -> None:
    """Raise unless the `mean`/`std` options (when given) have one positive-std value per channel."""
    for key, value in (("mean", mean), ("std", std)):
        if value is not None and len(value) != channels:
            raise RobustlabError(
                f"{dataset}: option {key}={tuple(value)!r} has {len(value)} values; the images have {channels} "
                "channel(s)."
            )
    if std is not None and any(s <= 0 for s in std):
        raise RobustlabError(f"{dataset}: option std={tuple(std)!r} must be positive.")


def carve_validation(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split (x, y) into (train, val) with a seeded, class-stratified permutation."""
    if not 0.0 <= fraction < 1.0:
        raise RobustlabError(f"val_fraction={fraction!r} must be in [0, 1).")
    g = torch.Generator().manual_seed(seed)
    val_idx = []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        val_idx.append(idx[: round(fraction * len(idx))])
    val = torch.cat(val_idx) if val_idx else torch.empty(0, dtype=torch.long)
    val = val[torch.randperm(len(val), generator=g)]
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[val] = False
    train = torch.nonzero(mask).flatten()
    return Split(x[train], y[train]), Split(x[val], y[val])


def per_class_subset(dataset: str, y: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` samples of each class of `y` (all of a smaller class), drawn with `seed`, sorted."""
    if per_class < 1:
        raise RobustlabError(f"{dataset}: train_per_class={per_class!r} must be >= 1 (or null for all).")
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(keep).sort().values


def missing_files_error(dataset: str, expected: list[str], searched: list[Path], hint: str = "") -> RobustlabError:
    """The error for a dataset whose files are not on disk: names the files and the paths searched."""
    where = ", ".join(str(p) for p in searched)
    files = ", ".join(expected)
    return RobustlabError(
        f"{dataset}: data files not found. Expected {files} in one of the folders searched: {where}. "
        f"Set the data root with --data-root or $ROBUSTLAB_DATA.{(' ' + hint) if hint else ''}"
    )


def finish(
    name: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    class_names: list[str],
    *,
    val_fraction: float,
    seed: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    augment: AugmentSpec | None = None,
) -> ImageDataset:
    """Check the arrays a loader read, carve the validation split and build the ImageDataset."""
    for split, (x, y) in {"train": (train_x, train_y), "test": (test_x, test_y)}.items():
        check_images(f"{name} {split}", x)
        check_labels(f"{name} {split}", y, len(class_names), n=x.shape[0])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise RobustlabError(
            f"{name}: train images {tuple(train_x.shape[1:])} and test images {tuple(test_x.shape[1:])} differ in "
            "shape."
        )
    train, val = carve_validation(train_x, train_y.long(), val_fraction, seed)
    c = train_x.shape[1]
    return ImageDataset(
        name=name,
        train=train,
        val=val,
        test=Split(test_x, test_y.long()),
        class_names=list(class_names),
        mean=tuple(mean) if mean is not None else (0.0,) * c,
        std=tuple(std) if std is not None else (1.0,) * c,
        augment=augment or AugmentSpec(),
    )
