"""Threat models: an l_p ball of radius eps around an image in [0, 1] pixel space."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import torch

from .errors import RobustlabError

NORMS = ("linf", "l2")
Norm = Literal["linf", "l2"]


@dataclass(frozen=True)
class ThreatModel:
    """`norm` in {"linf", "l2"}; `eps` is the radius in [0, 1] pixel units."""

    norm: Norm
    eps: float

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise RobustlabError(f"unknown norm {self.norm!r}; allowed: {', '.join(NORMS)}.")
        if not isinstance(self.eps, (int, float)) or not math.isfinite(self.eps) or self.eps < 0:
            raise RobustlabError(f"eps={self.eps!r} must be a finite number >= 0.")
        if self.norm == "linf" and self.eps > 1:
            raise RobustlabError(
                f"linf eps={self.eps!r} is larger than the whole [0, 1] pixel range; "
                f"write it in pixel units as e.g. 'linf:8px' (= 8/255) or as a fraction 'linf:8/255'."
            )

    @classmethod
    def parse(cls, spec: str | ThreatModel) -> ThreatModel:
        """Parse "linf:8/255", "linf:8px" (= 8/255), "linf:0.3" or "l2:0.5"."""
        if isinstance(spec, ThreatModel):
            return spec
        m = re.fullmatch(r"\s*(\w+)\s*:\s*([0-9.eE+-]+)\s*(px|/\s*[0-9.]+)?\s*", str(spec))
        if not m:
            raise RobustlabError(
                f"cannot parse threat model {spec!r}; write NORM:EPS, e.g. 'linf:8/255', 'linf:8px' or 'l2:0.5'."
            )
        norm, num, suffix = m.group(1).lower(), m.group(2), m.group(3)
        try:
            eps = float(num)
        except ValueError:
            raise RobustlabError(f"eps {num!r} in threat model {spec!r} is not a number.") from None
        if suffix == "px":
            eps = eps / 255.0
        elif suffix:
            den = float(suffix.lstrip("/ "))
            if den <= 0:
                raise RobustlabError(f"denominator in threat model {spec!r} must be > 0.")
            eps = eps / den
        return cls(norm, eps)  # type: ignore[arg-type]

    def __str__(self) -> str:
        short = f"{self.eps:g}"
        if self.norm == "linf" and len(short) > 6:
            frac = Fraction(self.eps * 255).limit_denominator(8)
            if abs(float(frac) / 255 - self.eps) < 1e-9:
                return f"linf:{frac}/255" if frac.denominator == 1 else f"linf:{float(frac):g}/255"
        return f"{self.norm}:{short}"

    # --- geometry (per sample, over all dims but the first) ---

    def norms(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample norm of a batch of perturbations, shape (N,)."""
        flat = delta.flatten(1)
        return flat.abs().amax(1) if self.norm == "linf" else flat.norm(dim=1)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """Project a batch of perturbations onto the eps-ball."""
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        factor = (self.eps / n).clamp(max=1.0)
        return delta * per_sample(factor, delta)

    def contains(self, delta: torch.Tensor, atol: float = 1e-6) -> torch.Tensor:
        """Per-sample bool: is the perturbation inside the ball (up to atol)?"""
        return self.norms(delta) <= self.eps + atol

    def scaled(self, factor: float) -> ThreatModel:
        """The same norm with eps multiplied by `factor` (linf capped at 1)."""
        eps = self.eps * factor
        return ThreatModel(self.norm, min(eps, 1.0) if self.norm == "linf" else eps)


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector (N,) shaped to broadcast over a batch `like` (N×...): one value per image."""
    return v.view(-1, *([1] * (like.dim() - 1)))
