"""Training a VQ autoencoder on one of our data sets, and measuring it.

Objective (per batch): ||x̂ − x||² (mean over pixels, [0, 1] scale) + L_vq (codebook + β·commitment,
see quantizer.py). Adam, cosine learning-rate decay. No perceptual or adversarial ("GAN") loss: the
public VQGANs add those for natural images; on our small data sets plain MSE is enough.

Dead-code restarts (`restart_dead`, on by default): after each epoch every code that no training
vector chose during that epoch is moved onto a random encoder output of that epoch, so the
codebook stays in use (without it a digits VQ typically ends with most codes dead).

Measured on a split: reconstruction PSNR (mean over images of 10·log10(1 / MSE)), codebook
perplexity exp(H(code frequencies)), dead codes (never chosen on that split), usage = 1 − dead/K.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from ..config import Strict
from ..data import Split, batches, num_batches
from ..ui import progress_bar
from .model import VQArch, VQModel
from .quantizer import usage


class VQTrainConfig(Strict):
    """Architecture and schedule of a VQ autoencoder trained by robustlab (defaults: the 8×8 digits model).

    `ch`, `ch_mult`, `num_res_blocks`, `attn_resolutions`, `z_channels`, `num_groups` follow taming's
    ddconfig; `codebook_size` codes of size `code_dim`; `ch_mult` of length L gives latents of side
    H / 2^(L−1).
    """

    codebook_size: int = Field(128, ge=2)
    code_dim: int = Field(8, ge=1)
    ch: int = Field(16, ge=1)
    ch_mult: tuple[int, ...] = (1, 2)
    num_res_blocks: int = Field(1, ge=1)
    attn_resolutions: tuple[int, ...] = ()
    z_channels: int = Field(16, ge=1)
    num_groups: int = Field(4, ge=1)
    beta: float = Field(0.25, ge=0)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    restart_dead: bool = True
    seed: int = 0

    def arch(self, in_channels: int, resolution: int) -> VQArch:
        return VQArch(
            ch=self.ch,
            ch_mult=self.ch_mult,
            num_res_blocks=self.num_res_blocks,
            attn_resolutions=self.attn_resolutions,
            z_channels=self.z_channels,
            resolution=resolution,
            in_channels=in_channels,
            out_ch=in_channels,
            n_embed=self.codebook_size,
            embed_dim=self.code_dim,
            num_groups=self.num_groups,
            beta=self.beta,
        )


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1] (N,); capped at 100 dB for identical images."""
    mse = (x - ref).flatten(1).pow(2).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp(max=100.0)


@torch.no_grad()
def evaluate_vq(vq: VQModel, split: Split, batch_size: int = 256) -> dict[str, float]:
    """PSNR of Q(x) against x, and codebook usage, on `split` (the model is left in its mode)."""
    was = vq.training
    vq.eval()
    dev = next(vq.parameters()).device
    values, codes = [], []
    for x, _ in batches(split, batch_size, device=dev):
        recon, q = vq(x)
        values.append(psnr((recon.clamp(-1, 1) + 1) / 2, x))
        codes.append(q.indices.flatten())
    vq.train(was)
    out = {"psnr": float(torch.cat(values).mean())}
    out.update(usage(torch.cat(codes), vq.arch.n_embed))
    return out


def train_vq(
    train: Split, val: Split, cfg: VQTrainConfig, *, device: torch.device | str = "cpu", quiet: bool = False
) -> tuple[VQModel, dict[str, Any]]:
    """Train a VQ autoencoder on `train` (images N×C×H×W in [0, 1]); returns (model in eval mode, metrics
    measured on `val`, plus the training time and the number of dead-code restarts)."""
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    vq = VQModel(cfg.arch(int(train.x.shape[1]), int(train.x.shape[-1]))).to(device)
    opt = torch.optim.Adam(vq.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = train.to(device)
    steps = num_batches(len(data), cfg.batch_size)
    total, restarts, t0 = cfg.epochs * steps, 0, time.perf_counter()
    vq.train()
    with progress_bar(disable=quiet) as bar:
        task = bar.add_task("vq train", total=total, info="")
        for epoch in range(cfg.epochs):
            counts = torch.zeros(cfg.codebook_size, dtype=torch.long, device=device)
            seen = []
            for i, (x, _) in enumerate(batches(data, cfg.batch_size, shuffle=True, generator=gen)):
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch * steps + i) / total))
                recon, q = vq(x)
                rec = F.mse_loss((recon + 1) / 2, x)
                loss = rec + q.loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                counts += torch.bincount(q.indices.flatten(), minlength=cfg.codebook_size)
                seen.append(q.z_flat.detach())
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs}  mse {rec.item():.4f}")
            if cfg.restart_dead and epoch < cfg.epochs - 1:
                restarts += vq.quantize.restart(counts == 0, torch.cat(seen), gen)
    vq.eval()
    metrics: dict[str, Any] = evaluate_vq(vq, val)
    metrics.update(train_seconds=time.perf_counter() - t0, restarted_codes=restarts, train_samples=len(train))
    return vq, metrics
