"""The model contract: Normalize -> body (spatial map) -> neck (flat features) -> head (logits).

Every model takes pixel-space images in [0, 1] and holds its dataset's mean/std normalisation as
its first layer, so attacks and analyses never see normalised inputs.

- `model(x)` -> logits (N×K)
- `model.forward_features(x)` -> z (N×D), the flattened layer right before the logits
  (A_fc in AALP, h(x) in SCARL, the representation in Zhu et al.)
- `model.forward_head(z)` -> logits
- `model.forward_map(x)` -> the last spatial feature map (N×C'×h×w), for Grad-CAM; conv nets only
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import RobustlabError

# What code that calls the model contract (forward_features / forward_head / forward_map) is typed with: an
# ImageClassifier, the distributed proxy of one, or an outside model kept to the contract. It is `Any` because
# torch types a module's attributes as `Tensor | Module`, so the contract's methods cannot be checked statically.
ContractModel = Any


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean/std as non-trainable buffers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        if len(mean) != len(std):
            raise RobustlabError(f"mean {mean} and std {std} have different lengths.")
        if any(s <= 0 for s in std):
            raise RobustlabError(f"std {std} must be > 0 in every channel.")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    """Normalize -> body -> neck -> head.

    `body` maps normalised images to a spatial map (or, for an MLP, to anything); `neck` maps it to the
    flat feature vector; `head` is the final linear layer. `arch` and `arch_kwargs` are recorded so
    that a checkpoint can rebuild the model.
    """

    has_spatial_map = True
    normalize: Normalize
    body: nn.Module
    neck: nn.Module
    head: nn.Linear

    def __init__(
        self,
        body: nn.Module,
        neck: nn.Module,
        head: nn.Linear,
        *,
        num_classes: int,
        in_channels: int,
        input_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.body = body
        self.neck = neck
        self.head = head
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.input_size = input_size
        self.feature_dim = head.in_features
        # filled in by models.create
        self.arch: str = type(self).__name__
        self.arch_kwargs: dict[str, Any] = {}

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, self.input_size, self.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise RobustlabError(
                f"{self.arch}: expected images of shape N×{expected[0]}×{expected[1]}×{expected[2]}; got "
                f"{tuple(x.shape)}."
            )

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last spatial feature map, N×C'×h×w."""
        if not self.has_spatial_map:
            raise RobustlabError(f"{self.arch} has no spatial feature map (Grad-CAM needs a convolutional model).")
        self._check_input(x)
        return self.body(self.normalize(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Flat features right before the logits, N×D."""
        self._check_input(x)
        return self.neck(self.body(self.normalize(x)))

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        """Logits from features, N×K."""
        return self.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class GlobalPool(nn.Module):
    """Global average (or max) pooling to a flat N×C vector."""

    def __init__(self, mode: str = "avg"):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3)) if self.mode == "max" else x.mean(dim=(2, 3))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode for the block (BatchNorm on its running statistics, no dropout), its own mode
    restored after, even when the block raises."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
