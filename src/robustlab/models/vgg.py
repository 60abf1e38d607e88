"""VGG-13 with the linearised variants of Shi et al. (arXiv 1906.02494) (`vgg13`)."""

from __future__ import annotations

from typing import Literal

from torch import nn

from ..errors import RobustlabError
from .base import GlobalPool, ImageClassifier
from .registry import MODELS
from .resnet import kaiming_init

VGG13: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]

Variant = Literal["normal", "half_linear", "pure_linear"]


@MODELS.register("vgg13")
def vgg13(
    num_classes,
    in_channels,
    input_size,
    mean,
    std,
    variant: Variant = "normal",
    batch_norm: bool = True,
    width: float = 1.0,
) -> ImageClassifier:
    """VGG-13 (config 64,64,M,128,128,M,256,256,M,512,512,M,512,512,M; 3×3 convs, padding 1).

    `variant` (Shi et al., "Understanding Adversarial Behavior of DNNs by Disentangling Non-Robust and Robust
    Components in Performance Metric", arXiv 1906.02494):
      - "normal": conv-BN-ReLU blocks, 2×2 max pooling;
      - "half_linear": no ReLU anywhere, 2×2 max pooling (max pooling is the only nonlinearity);
      - "pure_linear": no ReLU, 2×2 average pooling, so in eval mode the whole model is an affine
        function of its input.
    BatchNorm (`batch_norm`, on by default) is kept in every variant: in eval mode it is affine, so it
    does not break linearity (in train mode it normalises with batch statistics). Without BN the
    convs have biases.

    Channels are round(c × `width`) (at least 1), e.g. width 0.25 -> 16/32/64/128/128. A pooling layer is
    skipped when the spatial size is already 1 (decided from `input_size` at construction), so 8×8
    inputs keep 3 of the 5 pools. The body ends after the last conv block / pool (the Grad-CAM map);
    the neck is a global average pool (the same as flattening the 1×1 map of ≤ 32×32 inputs, and still
    affine for "pure_linear") -> round(512 × width) features; head = one linear layer.
    Convs are Kaiming-normal (fan_out, relu); BN weight 1, bias 0; the head keeps PyTorch's default.
    """
    if not width > 0:
        raise RobustlabError(f"width={width!r} is out of range; allowed: > 0.")
    relu = variant == "normal"
    layers: list[nn.Module] = []
    cin, size = in_channels, input_size
    for v in VGG13:
        if isinstance(v, str):  # "M": a pooling step
            if size > 1:
                layers.append(nn.AvgPool2d(2) if variant == "pure_linear" else nn.MaxPool2d(2))
                size //= 2
            continue
        cout = max(1, round(v * width))
        layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        cin = cout
    model = ImageClassifier(
        nn.Sequential(*layers),
        GlobalPool("avg"),
        nn.Linear(cin, num_classes),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        mean=mean,
        std=std,
    )
    return kaiming_init(model)
