"""Batch iteration over in-memory splits: shuffling and augmentation on tensors, on the device."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from . import augment as aug
from .base import AugmentSpec, Split


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: AugmentSpec | None = None,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x, y) batches. The split should already live on `device` (see Split.to) for speed.

    Shuffling and augmentation draw from `generator` only, so a run is reproducible from its seed
    and resumable from the generator's saved state.
    """
    n = len(split)
    if (shuffle or (augment is not None and augment.enabled)) and generator is None:
        raise ValueError("shuffle/augment need a torch.Generator")
    order = torch.randperm(n, generator=generator, device=generator.device) if shuffle and generator else None
    for b in range(num_batches(n, batch_size, drop_last)):
        sl = slice(b * batch_size, min(n, (b + 1) * batch_size))
        if order is not None:
            idx = order[sl].to(split.x.device)
            x, y = split.x[idx], split.y[idx]
        else:
            x, y = split.x[sl], split.y[sl]
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if augment is not None and augment.enabled and generator is not None:
            x = aug.apply(x, augment, generator)
        yield x, y
