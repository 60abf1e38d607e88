"""A VQGAN autoencoder with the layout of taming-transformers (Esser et al. 2021), written from its
published description and configs, so that the public checkpoints' state dicts map onto it key for key.

    x ∈ [0,1] ─► 2x−1 ─► Encoder ─► quant_conv ─► VectorQuantizer ─► post_quant_conv ─► Decoder ─► x̂ ∈ [−1,1]

Encoder: conv_in, then per resolution level `num_res_blocks` ResNet blocks (GroupNorm–swish–conv ×2,
1×1 `nin_shortcut` when the width changes), self-attention blocks at the resolutions listed in
`attn_resolutions`, a stride-2 conv down-sampling between levels; a middle block (ResNet, attention,
ResNet); GroupNorm–swish–conv_out. The decoder mirrors it with `num_res_blocks + 1` blocks per level
and nearest-neighbour ×2 up-sampling followed by a conv.

`Q(x) = (clamp(decode(quantize(encode(2x − 1))), −1, 1) + 1) / 2` is DAT's discretiser
(`VQModel.reconstruct`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RobustlabError
from .quantizer import Quantized, VectorQuantizer


@dataclass(frozen=True)
class VQArch:
    """The architecture: taming's `ddconfig` plus the codebook (`n_embed` codes of size `embed_dim`).

    `num_groups` is the GroupNorm group count (taming fixes it at 32; smaller models need fewer).
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (32,)
    z_channels: int = 4
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    dropout: float = 0.0
    n_embed: int = 16384
    embed_dim: int = 4
    num_groups: int = 32
    beta: float = 0.25

    def __post_init__(self) -> None:
        widths = [self.ch * m for m in self.ch_mult] + [self.ch]
        if any(w % self.num_groups for w in widths):
            raise RobustlabError(
                f"VQ architecture: every width {sorted(set(widths))} must be divisible by num_groups={self.num_groups}."
            )
        if self.resolution % self.factor:
            raise RobustlabError(
                f"VQ architecture: resolution {self.resolution} is not divisible by the down-sampling factor "
                f"{self.factor}."
            )

    @property
    def factor(self) -> int:
        """Spatial down-sampling factor of the latent grid (f8, f16, ...)."""
        return 2 ** (len(self.ch_mult) - 1)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> VQArch:
        d = dict(d)
        for k in ("ch_mult", "attn_resolutions"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


# The two public taming-transformers models DAT uses (ddconfig of their released config files).
PUBLISHED: dict[str, VQArch] = {
    # DAT's discretiser (easyrobust dat/main.py): OpenImages, f = 8, 16384 codes of size 4
    "vqgan_openimages_f8_16384": VQArch(
        ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(32,), z_channels=4, n_embed=16384, embed_dim=4
    ),
    # the earlier easyrobust VQGAN augmentation: ImageNet, f = 16, 16384 codes of size 256
    "vqgan_imagenet_f16_16384": VQArch(
        ch=128,
        ch_mult=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(16,),
        z_channels=256,
        n_embed=16384,
        embed_dim=256,
    ),
}


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = group_norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the h·w positions, with 1×1 convs for q, k, v and the output."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        t = self.norm(x)
        q, k, v = (m(t).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))  # N×hw×C
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √C) v
        return x + self.proj_out(out.transpose(1, 2).reshape(n, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3×3 conv after padding one row/column at the bottom/right."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(cin: int, cout: int, n_blocks: int, attention: bool, a: VQArch) -> nn.Module:
    """One resolution level: `n_blocks` ResNet blocks (cin -> cout), each followed by attention if asked."""
    level = nn.Module()
    level.block = nn.ModuleList(
        ResnetBlock(cin if i == 0 else cout, cout, a.num_groups, a.dropout) for i in range(n_blocks)
    )
    level.attn = nn.ModuleList(AttnBlock(cout, a.num_groups) for _ in range(n_blocks if attention else 0))
    return level


def _run_level(level: Any, h: torch.Tensor) -> torch.Tensor:  # Any: the level's parts are set as attributes
    for j, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[j](h)
    for resample in ("downsample", "upsample"):
        if hasattr(level, resample):
            h = getattr(level, resample)(h)
    return h


def _middle(channels: int, a: VQArch) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, a.num_groups, a.dropout)
    mid.attn_1 = AttnBlock(channels, a.num_groups)
    mid.block_2 = ResnetBlock(channels, channels, a.num_groups, a.dropout)
    return mid


def _run_middle(mid: Any, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


class Encoder(nn.Module):
    def __init__(self, a: VQArch):
        super().__init__()
        self.conv_in = nn.Conv2d(a.in_channels, a.ch, 3, padding=1)
        self.down = nn.ModuleList()
        res, cin = a.resolution, a.ch
        for i, mult in enumerate(a.ch_mult):
            level = _level(cin, a.ch * mult, a.num_res_blocks, res in a.attn_resolutions, a)
            cin = a.ch * mult
            if i != len(a.ch_mult) - 1:
                level.downsample = Downsample(cin)
                res //= 2
            self.down.append(level)
        self.mid = _middle(cin, a)
        self.norm_out = group_norm(cin, a.num_groups)
        self.conv_out = nn.Conv2d(cin, a.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_level(level, h)
        return self.conv_out(swish(self.norm_out(_run_middle(self.mid, h))))


class Decoder(nn.Module):
    def __init__(self, a: VQArch):
        super().__init__()
        cin = a.ch * a.ch_mult[-1]
        res = a.resolution // a.factor
        self.conv_in = nn.Conv2d(a.z_channels, cin, 3, padding=1)
        self.mid = _middle(cin, a)
        levels: list[nn.Module] = []
        for i in reversed(range(len(a.ch_mult))):
            level = _level(cin, a.ch * a.ch_mult[i], a.num_res_blocks + 1, res in a.attn_resolutions, a)
            cin = a.ch * a.ch_mult[i]
            if i != 0:
                level.upsample = Upsample(cin)
                res *= 2
            levels.insert(0, level)  # up[i] is level i, as in the checkpoints
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(cin, a.num_groups)
        self.conv_out = nn.Conv2d(cin, a.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_middle(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            h = _run_level(level, h)
        return self.conv_out(swish(self.norm_out(h)))


class VQModel(nn.Module):
    """Encoder, codebook and decoder; images in [0, 1] (N×C×H×W), latents N×embed_dim×(H/f)×(W/f)."""

    def __init__(self, arch: VQArch):
        super().__init__()
        self.arch = arch
        self.encoder = Encoder(arch)
        self.decoder = Decoder(arch)
        self.quantize = VectorQuantizer(arch.n_embed, arch.embed_dim, arch.beta)
        self.quant_conv = nn.Conv2d(arch.z_channels, arch.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(arch.embed_dim, arch.z_channels, 1)

    def _check(self, x: torch.Tensor) -> None:
        a = self.arch
        if x.dim() != 4 or x.shape[1] != a.in_channels or x.shape[-1] % a.factor or x.shape[-2] % a.factor:
            raise RobustlabError(
                f"VQ model: expected images N×{a.in_channels}×H×W with H, W divisible by {a.factor}; got "
                f"{tuple(x.shape)}."
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latents z_e (N×embed_dim×h×w) of images x in [0, 1]."""
        self._check(x)
        return self.quant_conv(self.encoder(2 * x - 1))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1] space (not clamped) from quantised latents."""
        return self.decoder(self.post_quant_conv(z_q))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] decoded from a code-index map N×h×w."""
        return (self.decode(self.quantize.lookup(indices)).clamp(-1, 1) + 1) / 2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        """(reconstruction in [−1, 1] space, quantiser output): the training pass."""
        q = self.quantize(self.encode(x))
        return self.decode(q.z_q), q

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """DAT's discretiser Q(x) in [0, 1] (same shape as x). Call it under torch.no_grad() when frozen."""
        recon, _ = self(x)
        return (recon.clamp(-1, 1) + 1) / 2
