"""SCARL — Semantic Constraint Adversarial Robust Learning ("Robustness Exploration of Semantic Information
in Adversarial Training", ICLR 2023 submission, OpenReview SWUGykek_T).

The paper's displayed formulas are not legible in the text we have, so this follows the official code
(SkyKuang/SCARL; the loss terms are in defense/SCARL_module.py), without its bugs (a missing class in a
batch broke the structure term; see `structure_loss`).

With h = model.forward_features, t_c the frozen word vector of class c (K×D_w, `robustlab.semantic`),
g_img, g_txt the projection heads (Linear -> BN1d -> ReLU -> Linear, `proj_hidden` -> `proj_dim`):

    v_i = normalize(g_img(h(x_adv_i)))          u_i = normalize(g_txt(t_{y_i}))

    L = CE(f(x_adv), y) + β · KL(f(x) ‖ f(x_adv)) + α_MI · L_MI(v, u, y) + λ_geo · w(e) · L_geo      (total loss)

    x_adv: TRADES-KL PGD from x + 0.001·N(0, I), model in eval mode
    w(e) = exp(−r (1 − e/E)²), r = 5, e the 0-based epoch of E                                     (ramp)

L_MI is the semantic mutual-information surrogate (`mi_scarl_code`, the code's binary contrastive
form, default; or `mi_infonce`); L_geo the RKD distance + angle structure loss between the per-class
means of v (student) and a momentum bank M of per-class text features (teacher):

    M[c] <- (1 − m(e)) · mean_{i: y_i = c} u_i + m(e) · M[c],   m(e) = w(e)                       (bank update)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RobustlabError
from .base import Method, TrainAttack, accuracy, train_attack_options
from .registry import METHODS
from .trades import trades_kl


def ramp(epoch: int, num_epochs: int, rate: float = 5.0) -> float:
    """w(e) = exp(−rate · (1 − e/E)²): ≈ 0.0067 at e = 0 (rate 5), 1 at e = E."""
    return math.exp(-rate * (1.0 - epoch / max(1, num_epochs)) ** 2)


def projection_head(in_features: int, hidden: int, out: int) -> nn.Sequential:
    """SCARL's head: Linear(in, hidden) -> BN1d -> ReLU -> Linear(hidden, out)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out)
    )


def class_means(z: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class means of z (B×d) -> (K×d, zero rows for absent classes; present mask (K,) bool)."""
    counts = torch.bincount(y, minlength=num_classes)
    sums = torch.zeros(num_classes, z.shape[1], dtype=z.dtype, device=z.device).index_add(0, y, z)
    return sums / counts.clamp_min(1).unsqueeze(1).to(z.dtype), counts > 0


def mi_scarl_code(
    v: torch.Tensor, u: torch.Tensor, y: torch.Tensor, temperature: float = 0.5, c: float = 0.01
) -> torch.Tensor:
    """The official code's MI surrogate for unit vectors v, u (B×d), labels y (B,):

        S_ij = exp(cos(v_i, u_j)/τ),  n_ij = 1[y_i ≠ y_j]
        L_MI = mean_{i≠j} log(1 + n_ij S_ij / c)   +   mean_i log(1 + c / S_ii)

    The first part (the code's `loss_pos`) pushes v_i from the text features of other classes; same-class
    pairs add 0 but count in the mean over B(B−1) pairs, as in the code. The second (`loss_neg`) pulls
    v_i towards its own class's text feature.
    """
    sim = v @ u.T / temperature
    b = y.shape[0]
    off_diagonal = ~torch.eye(b, dtype=torch.bool, device=v.device)
    different = (y[:, None] != y[None, :]) & off_diagonal
    push = (
        torch.where(different, torch.log1p(sim.exp() / c), torch.zeros_like(sim))[off_diagonal].mean()
        if b > 1
        else sim.new_zeros(())
    )
    pull = torch.log1p(c * torch.exp(-sim.diagonal())).mean()
    return push + pull


def mi_infonce(v: torch.Tensor, u: torch.Tensor, y: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """InfoNCE over the classes present in the batch. [inferred] The paper calls its MI term "a differentiable
    lower bound" without a legible form; InfoNCE is the standard such bound:

        L_MI = − mean_i log( exp(cos(v_i, ū_{y_i})/τ) / Σ_{c present} exp(cos(v_i, ū_c)/τ) ),

    ū_c = the text feature of class c (every u_i of class c is the same vector); I(V; T) ≥ log(#present) − L_MI.
    """
    num_classes = int(y.max()) + 1
    text, present = class_means(u, y, num_classes)
    logits = (v @ F.normalize(text, dim=1).T / temperature).masked_fill(~present, float("-inf"))
    return F.cross_entropy(logits, y)


def _relative_distances(z: torch.Tensor) -> torch.Tensor:
    """k×k Euclidean distances of the rows of z, divided by their mean over the k(k−1) off-diagonal pairs."""
    k = z.shape[0]
    d = (z[:, None] - z[None]).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    d = d * ~torch.eye(k, dtype=torch.bool, device=z.device)
    return d / (d.sum() / (k * (k - 1))).clamp_min(1e-12)


def _angles(z: torch.Tensor) -> torch.Tensor:
    """k×k×k cosines  a_ijk = < (z_j − z_i)/‖·‖, (z_k − z_i)/‖·‖ >  (the angle at vertex i)."""
    e = F.normalize(z[None] - z[:, None], dim=2)
    return e @ e.transpose(1, 2)


def structure_loss(
    student: torch.Tensor, teacher: torch.Tensor, distance_weight: float = 2.0, angle_weight: float = 3.0
) -> torch.Tensor:
    """RKD (Park et al. 2019) between k class nodes (k×d each, the same classes in the same order):

        L_geo = w_d · SmoothL1(d̂_student, d̂_teacher) + w_a · SmoothL1(a_student, a_teacher)

    d̂ = distances over their mean, a = the angle cosines. Zero when the two node sets have the same shape
    up to scale, rotation and translation. Fewer than 2 nodes -> 0 (no structure to match).
    """
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"student has {student.shape[0]} nodes, teacher {teacher.shape[0]}: index both by the present classes"
        )
    if student.shape[0] < 2:
        return student.sum() * 0.0
    ld = F.smooth_l1_loss(_relative_distances(student), _relative_distances(teacher))
    la = F.smooth_l1_loss(_angles(student), _angles(teacher)) if student.shape[0] > 2 else student.new_zeros(())
    return distance_weight * ld + angle_weight * la


@METHODS.register("scarl")
class SCARL(Method):
    """SCARL; `vectors` names the class word vectors (minilm | glove:PATH | file:PATH, see robustlab.semantic)."""

    name = "scarl"

    @train_attack_options(TrainAttack(start="normal"))
    def __init__(
        self,
        threat,
        vectors: str = "minilm",
        beta: float = 6.0,
        mi_weight: float = 1.0,
        mi_form: Literal["scarl_code", "infonce"] = "scarl_code",
        temperature: float = 0.5,
        mi_c: float = 0.01,
        structure_weight: float = 1.0,
        distance_weight: float = 2.0,
        angle_weight: float = 3.0,
        ramp_rate: float = 5.0,
        proj_dim: int = 64,
        proj_hidden: int = 64,
        *,
        attack: TrainAttack,
    ):
        super().__init__(threat)
        if temperature <= 0 or mi_c <= 0 or proj_dim < 1 or proj_hidden < 1:
            raise RobustlabError(
                f"scarl: temperature={temperature}, mi_c={mi_c} must be > 0 and proj_dim={proj_dim}, "
                f"proj_hidden={proj_hidden} >= 1."
            )
        self.vectors, self.beta, self.mi_weight, self.mi_form = vectors, beta, mi_weight, mi_form
        self.temperature, self.mi_c, self.ramp_rate = temperature, mi_c, ramp_rate
        self.structure_weight, self.distance_weight, self.angle_weight = structure_weight, distance_weight, angle_weight
        self.proj_hidden, self.proj_dim = proj_hidden, proj_dim
        self.image_head: nn.Module | None = None  # built in build_parts, once the widths are known
        self.text_head: nn.Module | None = None
        self.register_buffer("bank", torch.empty(0, proj_dim))  # K×proj_dim teacher nodes
        self.register_buffer("words", torch.empty(0), persistent=False)  # K×D_w frozen class vectors
        self.train_attack = attack.pgd(self.attack_threat, loss="kl")

    def build_parts(self, model, dataset) -> None:
        """Load the class word vectors and build the heads and the bank for the model's feature width.

        The Trainer calls this before it builds the optimizer, with the run's seed; a resumed run then
        loads the trained heads and bank from its state."""
        self.words = self._load_vectors(list(dataset.class_names))
        self.image_head = projection_head(model.feature_dim, self.proj_hidden, self.proj_dim)
        self.text_head = projection_head(self.words.shape[1], self.proj_hidden, self.proj_dim)
        bound = 1.0 / math.sqrt(self.proj_dim / 3.0)  # the code's uniform init of the bank, ±1/sqrt(d/3)
        self.bank = (torch.rand(len(dataset.class_names), self.proj_dim) * 2 - 1) * bound

    def _load_vectors(self, class_names: list[str]) -> torch.Tensor:
        from ..semantic import class_vectors

        return class_vectors(self.vectors, class_names)

    def mutual_information(self, v: torch.Tensor, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.mi_form == "infonce":
            return mi_infonce(v, u, y, self.temperature)
        return mi_scarl_code(v, u, y, self.temperature, self.mi_c)

    def loss(self, model, x, y, ctx):
        if self.image_head is None:
            raise RobustlabError("scarl: the heads are built by build_parts(model, dataset), which the Trainer calls.")
        x_adv = self.adversarial(model, x, y, ctx)
        logits = model(x)
        h_adv = model.forward_features(x_adv)
        logits_adv = model.forward_head(h_adv)
        # the projected, normalised adversarial visual features and class text features
        v = F.normalize(self.image_head(h_adv), dim=1)
        u = F.normalize(self.text_head(self.words[y]), dim=1)
        adv_ce = F.cross_entropy(logits_adv, y)
        robust = trades_kl(logits, logits_adv)
        mi = self.mutual_information(v, u, y)
        # structure term on the classes present in this batch (student: class means of v; teacher: the bank)
        w = ramp(ctx.epoch, ctx.num_epochs, self.ramp_rate)
        student, present = class_means(v, y, self.bank.shape[0])
        geo = structure_loss(student[present], self.bank[present], self.distance_weight, self.angle_weight)
        loss = adv_ce + self.beta * robust + self.mi_weight * mi + self.structure_weight * w * geo
        with torch.no_grad():  # bank update, momentum m(e) = w(e)
            text_means, _ = class_means(u, y, self.bank.shape[0])
            self.bank[present] = (1 - w) * text_means[present] + w * self.bank[present]
        return loss, {
            "loss": loss.detach(),
            "adv_ce": adv_ce.detach(),
            "kl": robust.detach(),
            "mi": mi.detach(),
            "geo": geo.detach(),
            "acc": accuracy(logits.detach(), y),
            "adv_acc": accuracy(logits_adv.detach(), y),
        }
