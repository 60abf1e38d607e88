"""LeNet-5 style network (`lenet`)."""

from __future__ import annotations

from torch import nn

from ..errors import RobustlabError
from .base import ImageClassifier
from .registry import MODELS
from .resnet import kaiming_init


@MODELS.register("lenet")
def lenet(
    num_classes,
    in_channels,
    input_size,
    mean,
    std,
    channels: tuple[int, int] = (6, 16),
    hidden: tuple[int, int] = (120, 84),
) -> ImageClassifier:
    """LeNet-5 style: conv(c1, 5×5)-ReLU-maxpool2 -> conv(c2, 5×5)-ReLU-maxpool2 (the body, the Grad-CAM
    map) -> flatten -> FC(h1)-ReLU -> FC(h2)-ReLU (the neck; features = the h2 = 84-unit layer) -> head.

    Both convs use padding 2 (the original used none, on 32×32 inputs), so the convs preserve the
    spatial size and each pool halves it (rounding down): 28×28 inputs give c2×7×7, 8×8 give c2×2×2.
    Defaults are the classic channels (6, 16) and hidden sizes (120, 84). Convs are Kaiming-normal
    (fan_out, relu) with zero bias; linear layers keep PyTorch's default initialisation.
    """
    if any(c < 1 for c in (*channels, *hidden)):
        raise RobustlabError(f"channels={channels!r} and hidden={hidden!r} must all be >= 1.")
    c1, c2 = channels
    h1, h2 = hidden
    body = nn.Sequential(
        nn.Conv2d(in_channels, c1, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )
    side = input_size // 2 // 2
    neck = nn.Sequential(
        nn.Flatten(), nn.Linear(c2 * side * side, h1), nn.ReLU(inplace=True), nn.Linear(h1, h2), nn.ReLU(inplace=True)
    )
    model = ImageClassifier(
        body,
        neck,
        nn.Linear(h2, num_classes),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        mean=mean,
        std=std,
    )
    return kaiming_init(model)
