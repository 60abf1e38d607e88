"""The embedded default dataset: scikit-learn's bundled 8×8 handwritten digits (1,797 images)."""

from __future__ import annotations

import torch

from .. import seeds
from .base import ImageDataset, finish
from .registry import DATASETS


@DATASETS.register("digits")
def load_digits(root=None, val_fraction: float = 0.15, seed: int = 0, test_fraction: float = 0.25) -> ImageDataset:
    """Digits as 1×8×8 images in [0, 1] (pixel values 0..16 divided by 16).

    The train/test split is fixed by `seed` (stratified, `test_fraction` of each class held out);
    the validation split is then carved from the training part. `root` is unused (the data ship
    with scikit-learn).
    """
    from sklearn.datasets import load_digits as sk_digits

    from .base import carve_validation

    bunch = sk_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    trainval, test = carve_validation(x, y, test_fraction, seeds.test_split(seed))
    return finish(
        "digits",
        trainval.x,
        trainval.y,
        test.x,
        test.y,
        [str(d) for d in range(10)],
        val_fraction=val_fraction,
        seed=seed,
    )
