"""RobustBench's most common leaderboard architectures, with RobustBench's exact parameter names.

A checkpoint from the RobustBench model zoo (Croce et al., "RobustBench: a standardized adversarial robustness
benchmark", NeurIPS 2021 Datasets and Benchmarks, arXiv 2010.09670) loads into these modules key for key, so
`robustlab eval --model robustbench:wrn-28-10 --weights FILE` needs no RobustBench install. Written for
robustlab from the architecture definitions in RobustBench's repository
(robustbench/model_zoo/architectures/{wide_resnet,dm_wide_resnet,resnet}.py); names are `FAMILY-DEPTH[-WIDTH]`:

- `wrn-28-10`, `wrn-34-10` (any `wrn-D-W`): `WideResNet`, the TRADES WRN (ReLU, no normalisation), as in
  Carmon et al. 2019 (arXiv 1905.13736) and Zhang et al. 2019 (TRADES, arXiv 1901.08573);
- `dm-wrn-28-10`, `dm-wrn-70-16` (any `dm-wrn-D-W`): `DMWideResNet` with Swish and CIFAR-10 mean/std buffers,
  as in Gowal et al. 2020 (arXiv 2010.03593) and Rebuffi et al. 2021 (arXiv 2103.01946);
- `preact-resnet-18`: `PreActResNet(PreActBlock, [2, 2, 2, 2])` (Wong et al. 2020, arXiv 2001.03994; Rice et al.
  2020, arXiv 2002.11569);
- `dm-preact-resnet-18`: `DMPreActResNet` with Swish and mean/std buffers (Rebuffi et al. 2021);
- `resnet-18`, `resnet-50`: `ResNet` with BasicBlock / Bottleneck.

The `dm-` models normalise inside the model (their `mean` / `std` buffers are part of the checkpoint), the
others expect inputs normalised by the caller (`--mean/--std` when the entry used a normalisation). Every model
also has `forward_features` (the pooled vector before the last linear layer), so the representation analyses
need no `--feature-layer`. Pooling is RobustBench's fixed `avg_pool2d` (8 for the WRNs, 4 for the ResNets):
the models are for 32×32 inputs, as RobustBench's CIFAR entries.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import RobustlabError
from .registry import ROBUSTBENCH

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class Swish(nn.Module):
    """x · sigmoid(x) (the activation of Gowal et al. and Rebuffi et al.)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x)


def _activation(name: str) -> type[nn.Module]:
    if name not in ("relu", "swish"):
        raise RobustlabError(f"activation={name!r}; allowed: relu, swish.")
    return Swish if name == "swish" else nn.ReLU


def _wrn_blocks(depth: int, width: int) -> tuple[int, list[int]]:
    if depth < 10 or (depth - 4) % 6:
        raise RobustlabError(f"WideResNet depth={depth}; allowed: 6n + 4 with n >= 1 (10, 16, 28, 34, 70, ...).")
    if width < 1:
        raise RobustlabError(f"WideResNet width={width}; allowed: an integer >= 1.")
    return (depth - 4) // 6, [16, 16 * width, 32 * width, 64 * width]


def _conv(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=padding, bias=False)


class _Head(nn.Module):
    """forward = head(features); `forward_features` / `forward_head` are the model contract's."""

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def forward_head(self, z: Tensor) -> Tensor:
        return self.classifier()(z)

    def classifier(self) -> nn.Linear:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# --- WideResNet (TRADES / RobustBench `WideResNet`) ----------------------------------------------------


class WRNBlock(nn.Module):
    """RobustBench's WRN BasicBlock: pre-activation; where the shape changes the shortcut is a 1×1 conv of the
    pre-activated input (`convShortcut`)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = _conv(cin, cout, 3, stride, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = _conv(cout, cout, 3, 1, 1)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else _conv(cin, cout, 1, stride)

    def forward(self, x: Tensor) -> Tensor:
        a = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(a))))
        return out + (x if self.convShortcut is None else self.convShortcut(a))


class _Group(nn.Module):
    """RobustBench's `NetworkBlock`: its blocks under `.layer`."""

    def __init__(self, n: int, cin: int, cout: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            *(WRNBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(_Head):
    def __init__(self, depth: int = 28, width: int = 10, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        n, ch = _wrn_blocks(depth, width)
        self.conv1 = _conv(in_channels, ch[0], 3, 1, 1)
        self.block1 = _Group(n, ch[0], ch[1], 1)
        self.block2 = _Group(n, ch[1], ch[2], 2)
        self.block3 = _Group(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return F.avg_pool2d(self.relu(self.bn1(out)), 8).flatten(1)

    def classifier(self) -> nn.Linear:
        return self.fc


# --- DeepMind WideResNet / PreActResNet (Gowal et al., Rebuffi et al.) -----------------------------------


def _same_pad(x: Tensor, stride: int) -> Tensor:
    """TensorFlow's `SAME` padding for a 3×3 conv, as the DeepMind models pad by hand."""
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


class _Normalised(_Head):
    """In-model normalisation with `mean` / `std` buffers of shape (C, 1, 1), as the DeepMind checkpoints hold."""

    mean: Tensor
    std: Tensor

    def __init__(self, in_channels: int, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        if len(mean) != in_channels or len(std) != in_channels:
            raise RobustlabError(f"mean {mean} / std {std} must have {in_channels} entries (one per channel).")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(in_channels, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(in_channels, 1, 1))

    def normalise(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class DMBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(cin)
        self.relu_0 = act()
        self.conv_0 = _conv(cin, cout, 3, stride)
        self.batchnorm_1 = nn.BatchNorm2d(cout)
        self.relu_1 = act()
        self.conv_1 = _conv(cout, cout, 3, 1, 1)
        self.shortcut = _conv(cin, cout, 1, stride) if cin != cout else None
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        a = self.relu_0(self.batchnorm_0(x))
        out = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(_same_pad(a, self.stride)))))
        return out + (x if self.shortcut is None else self.shortcut(a))


class _DMGroup(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.block = nn.Sequential(
            *(DMBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, act) for i in range(n))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DMWideResNet(_Normalised):
    def __init__(
        self,
        depth: int = 28,
        width: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "swish",
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
    ):
        super().__init__(in_channels, mean, std)
        n, ch = _wrn_blocks(depth, width)
        act = _activation(activation)
        self.init_conv = _conv(in_channels, ch[0], 3, 1, 1)
        self.layer = nn.Sequential(*(_DMGroup(n, ch[i], ch[i + 1], (1, 2, 2)[i], act) for i in range(3)))
        self.batchnorm = nn.BatchNorm2d(ch[3])
        self.relu = act()
        self.logits = nn.Linear(ch[3], num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        out = self.layer(self.init_conv(self.normalise(x)))
        return F.avg_pool2d(self.relu(self.batchnorm(out)), 8).flatten(1)

    def classifier(self) -> nn.Linear:
        return self.logits


class DMPreActBlock(nn.Module):
    """The DeepMind pre-activation block: its projection shortcut is a 3×3 conv of the padded raw input."""

    def __init__(self, cin: int, cout: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.stride = stride
        self.batchnorm_0 = nn.BatchNorm2d(cin)
        self.relu_0 = act()
        self.conv_2d_1 = _conv(cin, cout, 3, stride)
        self.batchnorm_1 = nn.BatchNorm2d(cout)
        self.relu_1 = act()
        self.conv_2d_2 = _conv(cout, cout, 3, 1, 1)
        self.shortcut = _conv(cin, cout, 3, stride) if stride != 1 or cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        a = self.relu_0(self.batchnorm_0(x))
        skip = x if self.shortcut is None else self.shortcut(_same_pad(x, self.stride))
        out = self.conv_2d_2(self.relu_1(self.batchnorm_1(self.conv_2d_1(_same_pad(a, self.stride)))))
        return out + skip


class DMPreActResNet(_Normalised):
    def __init__(
        self,
        depth: int = 18,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "swish",
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
    ):
        super().__init__(in_channels, mean, std)
        blocks = _resnet_blocks(depth, (18, 34))
        act = _activation(activation)
        self.conv_2d = _conv(in_channels, 64, 3, 1, 1)
        widths = [64, 128, 256, 512]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            cin = widths[max(i - 1, 0)]
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(
                *(DMPreActBlock(cin if j == 0 else w, w, stride if j == 0 else 1, act) for j in range(n))
            )
            self.add_module(f"layer_{i}", layer)
        self.batchnorm = nn.BatchNorm2d(512)
        self.relu = act()
        self.logits = nn.Linear(512, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        out = self.conv_2d(self.normalise(x))
        for i in range(4):
            out = getattr(self, f"layer_{i}")(out)
        return F.avg_pool2d(self.relu(self.batchnorm(out)), 4).flatten(1)

    def classifier(self) -> nn.Linear:
        return self.logits


# --- ResNet / PreActResNet (RobustBench `resnet.py`) ---------------------------------------------------


def _resnet_blocks(depth: int, allowed: tuple[int, ...]) -> tuple[int, ...]:
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
    if depth not in allowed:
        raise RobustlabError(f"depth={depth}; allowed: {', '.join(map(str, allowed))}.")
    return blocks[depth]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv(cin, planes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(cin, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv(cin, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, planes * self.expansion, 1)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _projection(cin, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _projection(cin: int, cout: int, stride: int) -> nn.Sequential:
    """An empty Sequential (identity) or 1×1 conv + BN, under the names `shortcut.0` / `shortcut.1`."""
    if stride == 1 and cin == cout:
        return nn.Sequential()
    return nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv(cin, planes, 3, stride, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, 1, 1)
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(_conv(cin, planes, 1, stride))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(x) if hasattr(self, "shortcut") else x
        return self.conv2(F.relu(self.bn2(self.conv1(out)))) + skip


class ResNet(_Head):
    """RobustBench's `ResNet` (stem conv-BN-ReLU) or, with `preact`, its `PreActResNet` (plain stem conv)."""

    def __init__(
        self, block: type[nn.Module], blocks: tuple[int, ...], num_classes: int, in_channels: int, preact: bool
    ):
        super().__init__()
        self.preact = preact
        self.conv1 = _conv(in_channels, 64, 3, 1, 1)
        if not preact:
            self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        expansion = int(getattr(block, "expansion", 1))
        for i, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512))):
            layers = []
            for j in range(n):
                layers.append(block(cin, planes, (1 if i == 0 else 2) if j == 0 else 1))
                cin = planes * expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.linear = nn.Linear(512 * expansion, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        out = self.conv1(x) if self.preact else F.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            out = getattr(self, f"layer{i}")(out)
        return F.avg_pool2d(out, 4).flatten(1)

    def classifier(self) -> nn.Linear:
        return self.linear


# --- the registry ------------------------------------------------------------------------------------


@ROBUSTBENCH.register("wrn")
def wrn(depth: int, width: int, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """RobustBench `WideResNet` (TRADES' WRN): ReLU, no in-model normalisation; `wrn-28-10`, `wrn-34-10`."""
    return WideResNet(depth, width, num_classes, in_channels)


@ROBUSTBENCH.register("dm-wrn")
def dm_wrn(depth: int, width: int, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """RobustBench `DMWideResNet` with Swish and mean/std buffers (Gowal et al., Rebuffi et al.); `dm-wrn-70-16`."""
    return DMWideResNet(depth, width, num_classes, in_channels)


@ROBUSTBENCH.register("preact-resnet")
def preact_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """RobustBench `PreActResNet(PreActBlock, [2, 2, 2, 2])`: `preact-resnet-18`."""
    return ResNet(PreActBlock, _resnet_blocks(depth, (18, 34)), num_classes, in_channels, preact=True)


@ROBUSTBENCH.register("dm-preact-resnet")
def dm_preact_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """RobustBench `DMPreActResNet` with Swish and mean/std buffers: `dm-preact-resnet-18`."""
    return DMPreActResNet(depth, num_classes, in_channels)


@ROBUSTBENCH.register("resnet")
def resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """RobustBench `ResNet`: `resnet-18` (BasicBlock), `resnet-50` (Bottleneck)."""
    block = Bottleneck if depth >= 50 else BasicBlock
    return ResNet(block, _resnet_blocks(depth, (18, 34, 50, 101, 152)), num_classes, in_channels, preact=False)


def robustbench_model(name: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """`wrn-28-10` / `dm-wrn-70-16` / `preact-resnet-18` / `resnet-50` ... -> the module (random weights)."""
    m = re.fullmatch(r"([a-z-]+?)-(\d+)(?:-(\d+))?", name.strip().lower())
    family = m.group(1) if m else ""
    if not m or family not in ROBUSTBENCH:
        raise RobustlabError(
            f"robustbench:{name}: unknown architecture; allowed: FAMILY-DEPTH[-WIDTH] with FAMILY one of "
            f"{', '.join(ROBUSTBENCH.names())}, e.g. robustbench:wrn-28-10, robustbench:dm-wrn-70-16, "
            "robustbench:preact-resnet-18, robustbench:resnet-50."
        )
    wide = "width" in ROBUSTBENCH.options(family)
    if wide != (m.group(3) is not None):
        form = f"{family}-DEPTH-WIDTH" if wide else f"{family}-DEPTH"
        raise RobustlabError(
            f"robustbench:{name}: write {form}, e.g. robustbench:{family}-{'28-10' if wide else '18'}."
        )
    sizes = {"depth": int(m.group(2)), **({"width": int(m.group(3))} if wide else {})}
    return ROBUSTBENCH.get(family)(**sizes, num_classes=num_classes, in_channels=in_channels)
