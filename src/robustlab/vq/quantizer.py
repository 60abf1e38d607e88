"""The codebook of a vector-quantised autoencoder (van den Oord et al. 2017, "VQ-VAE").

Each latent vector z_e (one per spatial position) is replaced by its nearest codebook entry
e_k, k = argmin_j ||z_e − e_j||². Training uses

    L_vq = ||sg[z_e] − e_k||²  +  β · ||z_e − sg[e_k]||²        (VQ-VAE Eq. 3: codebook + commitment)

and the straight-through estimator z_q = z_e + sg[e_k − z_e]: the forward value is e_k, the
gradient reaching z_e is the gradient at e_k. The parameter is named `embedding.weight` as in
taming-transformers, so public VQGAN checkpoints load into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Quantized:
    """`z_q` (N×D×h×w, straight-through), `indices` (N×h×w, long), `loss` (scalar L_vq), `z_e` flat (M×D)."""

    z_q: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    z_flat: torch.Tensor


class VectorQuantizer(nn.Module):
    """`num_codes` codes of dimension `dim`; β weights the commitment term."""

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.embedding = nn.Embedding(num_codes, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)

    def nearest(self, z_flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared Euclidean distance) for each row of z_flat (M×D) -> (M,)."""
        e = self.embedding.weight
        dist = z_flat.pow(2).sum(1, keepdim=True) - 2 * z_flat @ e.t() + e.pow(2).sum(1)[None, :]
        return dist.argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for an index map N×h×w -> N×D×h×w."""
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> Quantized:
        n, d, h, w = z.shape
        z_flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        idx = self.nearest(z_flat.detach())
        e = self.embedding.weight[idx]
        loss = F.mse_loss(e, z_flat.detach()) + self.beta * F.mse_loss(z_flat, e.detach())
        z_q = z_flat + (e - z_flat).detach()  # straight-through: value e, gradient passed to z_e unchanged
        return Quantized(z_q.view(n, h, w, d).permute(0, 3, 1, 2), idx.view(n, h, w), loss, z_flat)

    @torch.no_grad()
    def restart(self, dead: torch.Tensor, candidates: torch.Tensor, generator: torch.Generator) -> int:
        """Move the codes flagged in `dead` (num_codes,) bool onto randomly drawn rows of `candidates`
        (encoder outputs, M×D); returns how many were moved. Keeps every code in use (dead-code restart)."""
        k = int(dead.sum())
        if k == 0 or candidates.shape[0] == 0:
            return 0
        pick = torch.randint(0, candidates.shape[0], (k,), generator=generator, device=generator.device).to(
            candidates.device
        )
        self.embedding.weight[dead] = candidates[pick].to(self.embedding.weight.dtype)
        return k


def usage(indices: torch.Tensor, num_codes: int) -> dict[str, float]:
    """Codebook usage of an index tensor: perplexity exp(H(p)) of the code frequencies, the number of
    codes never used (`dead_codes`) and the share used (`usage`)."""
    counts = torch.bincount(indices.flatten(), minlength=num_codes).double()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    dead = int((counts == 0).sum())
    return {"perplexity": float(entropy.exp()), "dead_codes": dead, "usage": 1 - dead / num_codes}
