"""Exact input Fisher information of a softmax classifier, and the Fisher attack (`fisher`).

For logits z(x) ∈ R^K with Jacobian J = ∂z/∂x ∈ R^{K×n} (x the [0, 1] pixels; normalisation is inside
the model) and p = softmax(z), the Fisher information of p(·|x) with respect to x is

    F(x) = Σ_k p_k ∇log p_k ∇log p_kᵀ = Jᵀ A J,   A = diag(p) − p pᵀ          (Shi et al., arXiv 1906.02494, §3.2)

A is PSD with A·1 = 0, so rank F ≤ K − 1. With s = √p, A = B Bᵀ for B = diag(s)(I − s sᵀ), hence with the
K×K Gram matrix G = J Jᵀ and M = Bᵀ G B (symmetric PSD, same non-zero spectrum as F):

    tr F = tr M,   ‖F‖_F = ‖M‖_F,   ‖F‖_2 = λ_max(M),   leading eigenvector u ∝ Jᵀ B w  (M w = λ_max w).

So the spectral norm the paper calls infeasible costs K backward passes and a K×K eigen-problem per
sample (float64). The n×n matrix is never formed.

The Fisher attack (Zhao et al. 2019, the adversarial measure of Shi et al. Eq. 6–8) is one l2 step of
length ε along ±u, the sign chosen per sample to give the larger KL(p(x) ‖ p(x + δ)); for small ε that
KL is ½ ε² λ_max(F(x)) + O(ε³).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RobustlabError
from ..threat import ThreatModel
from . import losses
from .base import Attack, AttackMode, attacked_model, check_logits, model_untouched
from .registry import ATTACKS


def logit_jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits N×K, J N×K×n): the Jacobian of each sample's logits w.r.t. its own flattened input.

    One forward and K backward passes (one per class, each batched over the samples). The model runs in
    eval mode whatever mode it is in (BatchNorm in train mode would couple the samples of the batch and
    update its running statistics) and is left as it was; parameter `.grad` is not touched.
    """
    with model_untouched(attacked_model(model), "eval"):
        xr = x.detach().requires_grad_(True)
        logits = model(xr)
        k = logits.shape[1]
        rows = [torch.autograd.grad(logits[:, c].sum(), xr, retain_graph=c < k - 1)[0].flatten(1) for c in range(k)]
    return logits.detach(), torch.stack(rows, 1)


def fisher_factor(logits: torch.Tensor) -> torch.Tensor:
    """B = diag(√p)(I − √p √pᵀ) (N×K×K, float64) with B Bᵀ = diag(p) − p pᵀ for p = softmax(logits)."""
    s = F.softmax(logits.double(), 1).sqrt()
    eye = torch.eye(s.shape[1], dtype=s.dtype, device=s.device)
    return s.unsqueeze(2) * (eye - s.unsqueeze(2) * s.unsqueeze(1))


@dataclass
class InputFisher:
    """Per-sample summaries of F(x) (float64, shape N unless noted).

    `eigenvalues` N×K (ascending; the non-zero spectrum of F, at least one is 0), `direction` the unit
    leading eigenvector u (same shape and dtype as x) or None when not requested.
    """

    logits: torch.Tensor
    eigenvalues: torch.Tensor
    direction: torch.Tensor | None

    @property
    def trace(self) -> torch.Tensor:
        return self.eigenvalues.sum(1)

    @property
    def frobenius(self) -> torch.Tensor:
        return self.eigenvalues.square().sum(1).sqrt()

    @property
    def spectral(self) -> torch.Tensor:
        return self.eigenvalues[:, -1]


def input_fisher(model: nn.Module, x: torch.Tensor, *, direction: bool = True) -> InputFisher:
    """Exact spectrum (and optionally the leading eigenvector) of F(x) for a batch x (N×C×H×W).

    Cost: one forward + K backward passes, an N×K×K Gram matrix and N symmetric K×K eigen-problems.
    Per sample whatever the model's mode: it runs in eval mode (see `logit_jacobian`).
    """
    logits, jac = logit_jacobian(model, x)
    b = fisher_factor(logits)
    gram = torch.bmm(jac.double(), jac.double().transpose(1, 2))  # G = J Jᵀ, N×K×K
    m = b.transpose(1, 2) @ gram @ b
    evals, evecs = torch.linalg.eigh(0.5 * (m + m.transpose(1, 2)))
    evals = evals.clamp_min(0.0)  # M is PSD; round-off can leave -1e-17
    u = None
    if direction:
        coef = (b @ evecs[:, :, -1:]).squeeze(2).to(jac.dtype)  # B w, N×K
        u = torch.einsum("nk,nkd->nd", coef, jac)
        u = (u / u.norm(dim=1, keepdim=True).clamp_min(1e-30)).view_as(x)
    return InputFisher(logits, evals, u)


def fisher_step(
    model: nn.Module,
    x: torch.Tensor,
    direction: torch.Tensor,
    eps: float,
    clean_log_probs: torch.Tensor,
    *,
    clip: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x ± eps·direction, per sample the sign with the larger KL(p(x) ‖ p(x')), clipped to [0, 1] when `clip`.

    Returns (x' N×C×H×W, its logits N×K, the KL (N,) in float64: computed from float64 log-softmax so
    that the ~ε² values of small steps are not lost to float32 round-off). The model runs in eval mode and
    is left as it was, as in `logit_jacobian`.
    """
    with model_untouched(attacked_model(model), "eval"), torch.no_grad():
        cands = [x + sign * eps * direction for sign in (1.0, -1.0)]
        if clip:
            cands = [c.clamp(0.0, 1.0) for c in cands]
        logits = [model(c) for c in cands]
        kls = [losses.kl_to_reference(z.double(), clean_log_probs.double()) for z in logits]
        plus = kls[0] >= kls[1]
        shape = (-1,) + (1,) * (x.dim() - 1)
        return (
            torch.where(plus.view(shape), cands[0], cands[1]),
            torch.where(plus[:, None], logits[0], logits[1]),
            torch.maximum(kls[0], kls[1]),
        )


@ATTACKS.register("fisher")
class FisherAttack(Attack):
    """One l2 step of length eps along the leading eigenvector of F(x), the sign that gives the larger
    KL(p(x) ‖ p(x+δ)); the result is clipped to [0, 1] (clipping can only shorten δ). l2 only."""

    name = "fisher"

    def __init__(
        self, threat: ThreatModel, *, seed: int = 0, mode: AttackMode = "eval", num_classes: int | None = None
    ):
        super().__init__(threat, seed=seed, mode=mode, num_classes=num_classes)
        if self.threat.norm != "l2":
            raise RobustlabError(
                f"{self.name}: the Fisher attack is an l2 attack; got threat model {self.threat}. Use e.g. l2:0.5."
            )
        if self.threat.eps <= 0:
            raise RobustlabError(f"{self.name}: eps={self.threat.eps} must be > 0 for an attack.")
        if mode != "eval":
            raise RobustlabError(
                f"{self.name}: mode={mode!r}; the per-sample Fisher needs eval mode (BatchNorm in train "
                "mode couples the samples of a batch). Allowed: eval."
            )

    def _run(self, model, x, y, generator, num_classes, need_success):
        fisher = input_fisher(model, x)
        check_logits(self.name, fisher.logits, x.shape[0], num_classes)
        assert fisher.direction is not None
        x_adv, logits, _ = fisher_step(model, x, fisher.direction, self.threat.eps, F.log_softmax(fisher.logits, 1))
        return x_adv, logits.argmax(1) != y
