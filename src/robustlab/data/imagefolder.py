"""An ImageNet-style tree of class folders: <dir>/train/<class>/<image> and <dir>/val/<class>/<image>.

`test/` is accepted in place of `val/` as the test split. Every image is converted to RGB (or
grayscale), its shorter side resized to `image_size` (bilinear) and the centre `image_size`² square
cropped, and the whole set is held in memory as one tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import RobustlabError
from .base import AugmentSpec, ImageDataset, check_stats, data_root, finish, missing_files_error, to_float_images
from .registry import DATASETS

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PROGRESS_THRESHOLD = 2000  # show a progress bar when reading more files than this


def load_image(path: Path, size: int, grayscale: bool = False) -> np.ndarray:
    """One image file -> uint8 array size×size×C (C = 1 or 3): shorter side resized to `size`, centre crop."""
    from PIL import Image

    bilinear = getattr(Image, "Resampling", Image).BILINEAR
    mode = "L" if grayscale else "RGB"
    try:
        with Image.open(path) as im:
            im.draft("L" if grayscale else None, (size, size))  # JPEG: decode at a reduced scale, still >= size
            im = im.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise RobustlabError(f"{path}: cannot read image ({type(err).__name__}: {err}).") from None
    w, h = im.size
    if min(w, h) != size:
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), bilinear)
        w, h = im.size
    if (w, h) != (size, size):
        left, top = (w - size) // 2, (h - size) // 2
        im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8).reshape(size, size, 1 if grayscale else 3)


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def _image_files(class_dir: Path, max_per_class: int | None) -> list[Path]:
    files = sorted(
        p for p in class_dir.iterdir() if p.suffix.lower() in EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )
    return files[:max_per_class] if max_per_class is not None else files


def read_class_folders(
    split_dir: Path, classes: list[str], size: int, grayscale: bool, max_per_class: int | None, require_each: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images N×C×size×size in [0, 1] and labels from `split_dir/<class>/*` in the order of `classes` (at most
    `max_per_class` each; with `require_each`, an empty class folder is an error)."""
    files: list[Path] = []
    labels: list[int] = []
    for k, name in enumerate(classes):
        found = _image_files(split_dir / name, max_per_class)
        if require_each and not found:
            raise RobustlabError(
                f"imagefolder: {split_dir / name} holds no images with extension {', '.join(EXTENSIONS)} (any case)."
            )
        files += found
        labels += [k] * len(found)
    if not files:
        raise RobustlabError(
            f"imagefolder: {split_dir} holds no images with extension {', '.join(EXTENSIONS)} (any case)."
        )
    out = np.empty((len(files), size, size, 1 if grayscale else 3), dtype=np.uint8)
    items: Any = enumerate(files)
    if len(files) > PROGRESS_THRESHOLD:
        from rich.console import Console
        from rich.progress import track

        items = track(
            items, total=len(files), description=f"reading {split_dir}", console=Console(stderr=True), transient=True
        )
    for i, f in items:
        out[i] = load_image(f, size, grayscale)
    return to_float_images(out, "NHWC"), torch.tensor(labels, dtype=torch.long)


def _resolve_dir(path: str, root: Any) -> Path:
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [data_root(root) / p, Path.cwd() / p]
    for c in candidates:
        if (c / "train").is_dir():
            return c
    raise missing_files_error(
        "imagefolder",
        ["train/<class>/<image>", "val/<class>/<image> (or test/<class>/<image>)"],
        candidates,
        f"Set the option path (now {path!r}) to the folder that holds train/ and val/.",
    )


@DATASETS.register("imagefolder")
def load_imagefolder(
    root=None,
    val_fraction: float = 0.1,
    seed: int = 0,
    path: str = "imagenet",
    image_size: int = 32,
    max_per_class: int | None = None,
    grayscale: bool = False,
    flip: bool = True,
    crop_padding: int = 0,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ImageDataset:
    """Images from class folders under `path` (absolute, else under the data root, else the working directory).

    Classes are the sorted folder names of train/; the folders of val/ (or test/) must be the same.
    Files ending in .png .jpg .jpeg .bmp .webp (any case) are read, in sorted order, at most
    `max_per_class` per class and split. Augmentation: horizontal flip when `flip`, random crop
    with `crop_padding` pixels of padding (0 = none). Mean 0 / std 1 unless given.
    """
    if image_size < 1:
        raise RobustlabError(f"imagefolder: image_size={image_size!r} must be >= 1.")
    if max_per_class is not None and max_per_class < 1:
        raise RobustlabError(f"imagefolder: max_per_class={max_per_class!r} must be >= 1 (or null for all).")
    if crop_padding < 0:
        raise RobustlabError(f"imagefolder: crop_padding={crop_padding!r} must be >= 0.")
    base = _resolve_dir(path, root)
    train_dir = base / "train"
    test_dir = next((base / s for s in ("val", "test") if (base / s).is_dir()), None)
    if test_dir is None:
        raise missing_files_error("imagefolder", ["val/<class>/<image> (or test/<class>/<image>)"], [base])
    classes = _class_folders(train_dir)
    if not classes:
        raise RobustlabError(f"imagefolder: {train_dir} has no class folders; expected train/<class>/<image>.")
    test_classes = _class_folders(test_dir)
    if test_classes != classes:
        extra = sorted(set(test_classes) - set(classes))
        lacking = sorted(set(classes) - set(test_classes))
        parts = ([f"{test_dir} has folders not in train/: {', '.join(extra)}"] if extra else []) + (
            [f"{test_dir} lacks folders {', '.join(lacking)}"] if lacking else []
        )
        raise RobustlabError(
            f"imagefolder: the class folders of {train_dir} and {test_dir} differ: {'; '.join(parts)}."
        )
    check_stats("imagefolder", mean, std, 1 if grayscale else 3)
    train_x, train_y = read_class_folders(train_dir, classes, image_size, grayscale, max_per_class, require_each=True)
    test_x, test_y = read_class_folders(test_dir, classes, image_size, grayscale, max_per_class, require_each=False)
    return finish(
        "imagefolder", train_x, train_y, test_x, test_y, classes,
        val_fraction=val_fraction, seed=seed, mean=mean, std=std,
        augment=AugmentSpec(crop_padding=crop_padding, flip=flip),
    )  # fmt: skip
