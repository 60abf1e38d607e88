"""Critics T(x, z) for the MI bounds: every critic returns the full score tensor u (N×N×L) with
u[i, j, l] = T(x_j, z_i)_l, so the bounds in `bounds.py` can draw positives and negatives from it.

- `local_global`: the separable Deep InfoMax critic of the Zhu et al. code,
  T(x, z)_l = <φ_l(x), ψ(z)>. φ ("local") is two strided convs on the image followed by DIM's 1×1
  residual projection to `hidden` units and a LayerNorm; ψ ("global") is the same residual
  projection applied to z. One score per spatial location l of φ's map.
- `concat`: an MLP on the concatenation [x; z] (flattened x), evaluated on all N×N pairs; L = 1.

Both critics detach x, as the official code does: the inputs' gradient (the attack's signal) flows
only through the representation z = g(x), although the critic still sees the perturbed x.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import RobustlabError
from ..models.base import Normalize
from ..registry import check_range, validate_kwargs
from .registry import CRITICS


class ResidualProjection(nn.Module):
    """DIM's 1×1 residual block on the last axis: LayerNorm(W₂·ReLU(BN(W₁h)) + b₂ + S·h).

    S (no bias) starts near the identity when n_out ≥ n_in (uniform ±0.01 plus ones on the diagonal),
    as in the official code. Input (..., n_in) -> output (..., n_out).
    """

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.block = nn.Sequential(
            nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.ReLU(), nn.Linear(n_out, n_out)
        )
        self.shortcut = nn.Linear(n_in, n_out, bias=False)
        if n_out >= n_in:
            with torch.no_grad():
                self.shortcut.weight.uniform_(-0.01, 0.01)
                self.shortcut.weight.fill_diagonal_(1.0)
        self.norm = nn.LayerNorm(n_out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        flat = h.reshape(-1, self.n_in)
        return self.norm(self.block(flat) + self.shortcut(flat)).reshape(*h.shape[:-1], self.n_out)


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


class LocalGlobalCritic(nn.Module):
    """T(x, z)_l = <φ_l(x), ψ(z)> (Deep InfoMax local–global, the Zhu et al. `Estimator` + `MI1x1ConvNet`).

    φ: Conv(C→w₁, 4×4, stride 2)+BN+ReLU -> Conv(w₁→w₂)+BN+ReLU -> residual projection to `hidden`.
    The second conv is 4×4 stride 2 (the code, for 28–32 px inputs: 7×7 or 8×8 locations) or, for
    inputs smaller than 16 px, 3×3 stride 1 ([inferred]: the code has no small-image case) so that 8×8
    digits keep 4×4 = 16 locations.

    `scale` multiplies the inner product. The code uses 1, but both vectors are LayerNorm-ed, so the
    scores of a fresh critic spread like N(0, hidden) and the DV bound starts tens of nats below zero;
    the default 1/√hidden ([inferred]) starts the scores at unit scale (the LayerNorm gains can still grow
    them). Measured on digits (untrained small_cnn features, hidden 128, 10 epochs, DV): test
    estimate 0.51 nats with scale 1, 3.03 nats with 1/√hidden.
    """

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        z_dim: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        hidden: int = 2048,
        width: tuple[int, int] = (64, 128),
        second_stride: int | None = None,
        scale: float | None = None,
    ):
        super().__init__()
        self.scale = scale if scale is not None else hidden**-0.5
        stride = second_stride if second_stride is not None else (2 if input_size >= 16 else 1)
        if stride not in (1, 2):
            raise RobustlabError(f"local_global critic: second_stride={stride!r}; allowed: 1 or 2.")
        kernel = 4 if stride == 2 else 3
        w1, w2 = width
        self.normalize = Normalize(mean, std)
        self.local = nn.Sequential(
            nn.Conv2d(in_channels, w1, 4, 2, 1, bias=False),
            nn.BatchNorm2d(w1),
            nn.ReLU(),
            nn.Conv2d(w1, w2, kernel, stride, 1, bias=False),
            nn.BatchNorm2d(w2),
            nn.ReLU(),
        )
        side = _conv_out(_conv_out(input_size, 4, 2, 1), kernel, stride, 1)
        if side < 1:
            raise RobustlabError(f"local_global critic: input_size={input_size} is too small for its two convolutions.")
        self.num_locations = side * side
        self.local_proj = ResidualProjection(w2, hidden)
        self.global_proj = ResidualProjection(z_dim, hidden)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x: N×C×H×W in [0, 1], z: N×D -> scores N×N×L."""
        fmap = self.local(self.normalize(x.detach()))
        phi = self.local_proj(fmap.flatten(2).transpose(1, 2))  # N×L×hidden
        psi = self.global_proj(z)  # N×hidden
        return torch.einsum("ih,jlh->ijl", psi, phi) * self.scale


class ConcatCritic(nn.Module):
    """T(x, z) = MLP([x; z]) on every pair: Linear -> ReLU (`depth` hidden layers of `hidden` units) -> Linear(1).

    The first layer is split into its x and z halves, so the N×N pairs cost one broadcast add.
    """

    num_locations = 1

    def __init__(self, x_dim: int, z_dim: int, *, hidden: int = 256, depth: int = 2):
        super().__init__()
        check_range("concat critic depth", depth, 1)
        self.x_in = nn.Linear(x_dim, hidden)
        self.z_in = nn.Linear(z_dim, hidden, bias=False)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 1))
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x: N×... (flattened), z: N×D -> scores N×N×1."""
        h = torch.relu(self.z_in(z)[:, None, :] + self.x_in(x.detach().flatten(1))[None, :, :])
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return self.out(h)


@CRITICS.register("local_global")
def local_global(
    x_shape,
    z_dim,
    mean,
    std,
    hidden: int = 2048,
    width: tuple[int, int] = (64, 128),
    second_stride: int | None = None,
    scale: float | None = None,
) -> LocalGlobalCritic:
    """The Deep InfoMax local–global critic for C×H×W images."""
    if len(x_shape) != 3:
        raise RobustlabError(
            f"the local_global critic needs images C×H×W; got inputs of shape {tuple(x_shape)} (use critic concat)."
        )
    c, h, _ = x_shape
    return LocalGlobalCritic(
        c,
        h,
        z_dim,
        mean or (0.0,) * c,
        std or (1.0,) * c,
        hidden=hidden,
        width=width,
        second_stride=second_stride,
        scale=scale,
    )


@CRITICS.register("concat")
def concat(x_shape, z_dim, mean, std, hidden: int = 256, depth: int = 2) -> ConcatCritic:
    """An MLP on [x; z] for inputs of any shape (x is flattened)."""
    return ConcatCritic(math.prod(x_shape), z_dim, hidden=hidden, depth=depth)


CRITIC_INPUTS = ("x_shape", "z_dim", "mean", "std")


def check_critic_options(name: str, options: dict) -> None:
    """Raise a RobustlabError naming any unknown or mistyped option of critic `name` (before any training)."""
    validate_kwargs(f"critic {name!r}", CRITICS.get(name), dict(options), skip=CRITIC_INPUTS)


def make_critic(
    name: str,
    x_shape: tuple[int, ...],
    z_dim: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    **options,
) -> nn.Module:
    """Critic `name` for inputs of shape `x_shape` (without the batch axis) and z of size `z_dim`."""
    return CRITICS.create(name, tuple(x_shape), int(z_dim), mean, std, **options)
