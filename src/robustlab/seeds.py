"""Named random streams: every seed robustlab derives from a run's or an evaluation's seed, in one place.

A stream is a pure function of the user's seed and the position in the work (epoch, rank, batch, ...),
so any part of a run can be recomputed without saved generator state: a resumed training draws exactly
what the uninterrupted one would have, a resumed or sharded evaluation gives the same table. Bit-exact
resume and the stored results of earlier runs depend on these formulas: changing one changes them all.
"""

from __future__ import annotations

import zlib

SPREAD = 1_000_003  # a prime: the streams of consecutive user seeds never overlap for < 1e6 positions
_ATTACK_RANK = 7_919  # primes that keep the ranks' attack and global streams apart
_GLOBAL_RANK = 104_729


def epoch_data(seed: int, epoch: int) -> int:
    """Shuffling and augmentation of one training epoch (the same on every rank)."""
    return seed * SPREAD + epoch


def epoch_attack(seed: int, epoch: int, rank: int) -> int:
    """The training attack's random starts in one epoch on one rank."""
    return seed * SPREAD + _ATTACK_RANK * (rank + 1) + epoch


def epoch_global(seed: int, epoch: int, rank: int) -> int:
    """torch's global generator in one epoch on one rank (layers that draw from it: dropout)."""
    return seed * SPREAD + _GLOBAL_RANK * (rank + 1) + epoch


def validation_batch(seed: int, batch: int) -> int:
    """The model-selection attack on one validation batch."""
    return seed * SPREAD + 2 + batch


def eval_batch(seed: int, batch: int) -> int:
    """Every attack of an evaluation on one batch of the clean-correct points."""
    return seed * SPREAD + batch


def corruption(seed: int, name: str, severity: int) -> int:
    """One common corruption at one severity (every model sees the same corrupted images)."""
    return seed * SPREAD + zlib.crc32(name.encode()) * 10 + severity


def critic(seed: int, index: int) -> int:
    """The `index`-th of the MI critics fitted in a vulnerability analysis."""
    return seed * 1000 + index


def test_split(seed: int) -> int:
    """The seeded train / test split of a dataset that ships without one (digits, an npz of x, y)."""
    return seed + 1
