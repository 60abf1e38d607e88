"""Residual networks: `resnet9`, `resnet20`, `resnet32`, `resnet32x10`, `preact_resnet18`, `wrn34_10`.

All follow the model contract (see base.py): the body ends at the last spatial feature map (the
Grad-CAM target), the neck is a global pool to a flat vector, the head is one nn.Linear.

Initialisation (all models in this package that call `kaiming_init`): every Conv2d gets Kaiming-normal
weights (mode="fan_out", nonlinearity="relu") and a zero bias if it has one; every BatchNorm2d gets
weight 1 and bias 0; nn.Linear layers keep PyTorch's default initialisation.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from torch import Tensor, nn

from ..errors import RobustlabError
from ..registry import check_range
from .base import GlobalPool, ImageClassifier
from .registry import MODELS

Module = TypeVar("Module", bound=nn.Module)


def kaiming_init(model: Module) -> Module:
    """Kaiming-normal (fan_out, relu) convs with zero bias; BatchNorm weight 1, bias 0. Returns `model`."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _classifier(
    body: nn.Module, neck: nn.Module, feature_dim: int, num_classes: int, in_channels: int, input_size: int, mean, std
) -> ImageClassifier:
    model = ImageClassifier(
        body,
        neck,
        nn.Linear(feature_dim, num_classes),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        mean=mean,
        std=std,
    )
    return kaiming_init(model)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_conv3x3(cin, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


# ---------------------------------------------------------------------------------------------------
# ResNet-9 (DAWNBench / Myrtle.ai)


class Residual(nn.Module):
    """x + f(x) (no activation after the sum, as in the Myrtle ResNet-9)."""

    def __init__(self, f: nn.Module):
        super().__init__()
        self.f = f

    def forward(self, x: Tensor) -> Tensor:
        return x + self.f(x)


@MODELS.register("resnet9")
def resnet9(num_classes, in_channels, input_size, mean, std, width: int = 64) -> ImageClassifier:
    """The DAWNBench (Myrtle.ai) ResNet-9; channels w/2w/4w/8w with w = `width` (64 by default).

    prep: conv(w); layer1: conv(2w) + maxpool2 + residual(2 × conv(2w)); layer2: conv(4w) + maxpool2;
    layer3: conv(8w) + maxpool2 + residual(2 × conv(8w)); every conv is 3×3 conv-BN-ReLU. The body ends
    after layer3 (the last spatial map); neck = global max pool -> 8w features. The original's fixed
    0.125 logit scaling is not applied (the head is a plain nn.Linear with bias).
    """
    check_range("width", width, 1)
    w = width
    body = nn.Sequential(
        OrderedDict(
            prep=_conv_bn_relu(in_channels, w),
            layer1=nn.Sequential(
                _conv_bn_relu(w, 2 * w),
                nn.MaxPool2d(2),
                Residual(nn.Sequential(_conv_bn_relu(2 * w, 2 * w), _conv_bn_relu(2 * w, 2 * w))),
            ),
            layer2=nn.Sequential(_conv_bn_relu(2 * w, 4 * w), nn.MaxPool2d(2)),
            layer3=nn.Sequential(
                _conv_bn_relu(4 * w, 8 * w),
                nn.MaxPool2d(2),
                Residual(nn.Sequential(_conv_bn_relu(8 * w, 8 * w), _conv_bn_relu(8 * w, 8 * w))),
            ),
        )
    )
    return _classifier(body, GlobalPool("max"), 8 * w, num_classes, in_channels, input_size, mean, std)


# ---------------------------------------------------------------------------------------------------
# CIFAR ResNets (He et al. 2016, section 4.2)


class BasicBlock(nn.Module):
    """Post-activation basic block: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)).

    The shortcut is the identity, or (option B) a 1×1 strided conv + BN projection when the stride or
    the channel count changes.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


def _cifar_resnet(n: int, width: int, num_classes, in_channels, input_size, mean, std) -> ImageClassifier:
    check_range("width", width, 1)
    widths = [16 * width, 32 * width, 64 * width]
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(_conv3x3(in_channels, 16), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
    )
    cin = 16
    for i, (cout, stride) in enumerate(zip(widths, (1, 2, 2))):
        blocks = []
        for j in range(n):
            blocks.append(BasicBlock(cin, cout, stride if j == 0 else 1))
            cin = cout
        layers[f"layer{i + 1}"] = nn.Sequential(*blocks)
    return _classifier(nn.Sequential(layers), GlobalPool("avg"), cin, num_classes, in_channels, input_size, mean, std)


_CIFAR_RESNET_DOC = """CIFAR ResNet-{depth} (He et al. 2016, section 4.2): 3×3 stem conv(16)-BN-ReLU, then 3 stages of
    {n} basic blocks with 16/32/64 × `width` channels and strides 1/2/2, global average pool, head.

    Shortcuts are option B: identity where the shape is unchanged, a 1×1 strided conv + BN projection
    where it changes (the paper's CIFAR models used option A, zero-padding; B adds a few thousand
    parameters). The stem keeps 16 channels for every `width` (as in Zagoruyko & Komodakis and the
    Madry et al. wide ResNet), so for `width` > 1 the first block also projects 16 -> 16·width.
    Features = 64·width (after the global average pool)."""


@MODELS.register("resnet20")
def resnet20(num_classes, in_channels, input_size, mean, std, width: int = 1) -> ImageClassifier:
    return _cifar_resnet(3, width, num_classes, in_channels, input_size, mean, std)


@MODELS.register("resnet32")
def resnet32(num_classes, in_channels, input_size, mean, std, width: int = 1) -> ImageClassifier:
    return _cifar_resnet(5, width, num_classes, in_channels, input_size, mean, std)


@MODELS.register("resnet32x10")
def resnet32x10(num_classes, in_channels, input_size, mean, std, width: int = 10) -> ImageClassifier:
    return _cifar_resnet(5, width, num_classes, in_channels, input_size, mean, std)


resnet20.__doc__ = _CIFAR_RESNET_DOC.format(depth=20, n=3)
resnet32.__doc__ = _CIFAR_RESNET_DOC.format(depth=32, n=5)
resnet32x10.__doc__ = (
    _CIFAR_RESNET_DOC.format(depth=32, n=5)
    + "\n\n    `resnet32x10` is ResNet-32 with width 10 (160/320/640 channels), as used by Shi et al."
)


# ---------------------------------------------------------------------------------------------------
# Pre-activation ResNet-18 and Wide ResNet (pre-activation blocks)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b; wide basic block of Zagoruyko & Komodakis).

    a = relu(bn1(x)); out = conv2(dropout(relu(bn2(conv1(a))))) + shortcut, where the shortcut is x
    itself, or a 1×1 strided conv of `a` (the pre-activated input) when the shape changes.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv3x3(cout, cout)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a = self.relu1(self.bn1(x))  # bn1 makes a new tensor, so x is intact for the identity shortcut
        skip = x if self.shortcut is None else self.shortcut(a)
        out = self.conv1(a)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        return out + skip


def _preact_resnet(
    stem_channels: int,
    widths: list[int],
    strides: list[int],
    blocks_per_stage: int,
    dropout: float,
    num_classes,
    in_channels,
    input_size,
    mean,
    std,
) -> ImageClassifier:
    layers: OrderedDict[str, nn.Module] = OrderedDict(stem=_conv3x3(in_channels, stem_channels))
    cin = stem_channels
    for i, (cout, stride) in enumerate(zip(widths, strides)):
        blocks = []
        for j in range(blocks_per_stage):
            blocks.append(PreActBlock(cin, cout, stride if j == 0 else 1, dropout))
            cin = cout
        layers[f"layer{i + 1}"] = nn.Sequential(*blocks)
    layers["bn"] = nn.BatchNorm2d(cin)
    layers["relu"] = nn.ReLU(inplace=True)
    return _classifier(nn.Sequential(layers), GlobalPool("avg"), cin, num_classes, in_channels, input_size, mean, std)


@MODELS.register("preact_resnet18")
def preact_resnet18(num_classes, in_channels, input_size, mean, std, width: int = 64) -> ImageClassifier:
    """Pre-activation ResNet-18 (He et al. 2016b), CIFAR variant.

    3×3 stem conv(w), stride 1, no max pool; 4 stages of 2 pre-activation blocks with w/2w/4w/8w
    channels (w = `width`, 64 by default) and strides 1/2/2/2; final BN+ReLU (the body ends here, the
    Grad-CAM map), global average pool -> 8w = 512 features (SCARL's h(x)), head.
    """
    check_range("width", width, 1)
    w = width
    return _preact_resnet(
        w, [w, 2 * w, 4 * w, 8 * w], [1, 2, 2, 2], 2, 0.0, num_classes, in_channels, input_size, mean, std
    )


@MODELS.register("wrn34_10")
def wrn34_10(
    num_classes, in_channels, input_size, mean, std, depth: int = 34, widen: int = 10, dropout: float = 0.0
) -> ImageClassifier:
    """Wide ResNet-`depth`-`widen` (Zagoruyko & Komodakis 2016), WRN-34-10 by default.

    3×3 stem conv(16); 3 stages of n = (depth - 4) / 6 pre-activation wide basic blocks with
    16/32/64 × `widen` channels and strides 1/2/2 (`dropout` between the two convs of each block, off by
    default); final BN+ReLU (end of the body), global average pool -> 64·widen features, head.
    """
    if depth < 10 or (depth - 4) % 6 != 0:
        raise RobustlabError(f"depth={depth!r}; allowed: 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...).")
    check_range("widen", widen, 1)
    if not 0.0 <= dropout < 1.0:
        raise RobustlabError(f"dropout={dropout!r} is out of range; allowed: >= 0 and < 1.")
    n = (depth - 4) // 6
    k = widen
    return _preact_resnet(
        16, [16 * k, 32 * k, 64 * k], [1, 2, 2], n, dropout, num_classes, in_channels, input_size, mean, std
    )
