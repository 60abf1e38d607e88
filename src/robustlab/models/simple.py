"""Small models for small inputs: `mlp` and `small_cnn` (the digits default)."""

from __future__ import annotations

from torch import nn

from .base import ImageClassifier
from .registry import MODELS


class _MLP(ImageClassifier):
    has_spatial_map = False


@MODELS.register("mlp")
def mlp(num_classes, in_channels, input_size, mean, std, hidden: tuple[int, ...] = (256, 128)) -> ImageClassifier:
    """Fully connected ReLU network; features = the last hidden layer."""
    layers: list[nn.Module] = []
    width = in_channels * input_size * input_size
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        width = h
    return _MLP(
        nn.Flatten(),
        nn.Sequential(*layers),
        nn.Linear(width, num_classes),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        mean=mean,
        std=std,
    )


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]


@MODELS.register("small_cnn")
def small_cnn(num_classes, in_channels, input_size, mean, std, width: int = 32, hidden: int = 128) -> ImageClassifier:
    """conv(w)-conv(2w)-pool-conv(4w)-pool, then FC(hidden); features = the FC layer (N×hidden)."""
    w = width
    body = nn.Sequential(
        *_conv(in_channels, w), *_conv(w, 2 * w), nn.MaxPool2d(2), *_conv(2 * w, 4 * w), nn.MaxPool2d(2)
    )
    side = input_size // 4
    neck = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * side * side, hidden), nn.ReLU(inplace=True))
    return ImageClassifier(
        body,
        neck,
        nn.Linear(hidden, num_classes),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        mean=mean,
        std=std,
    )
