"""DAT — Discrete Adversarial Training (Mao et al., NeurIPS 2022), as the official code trains it
(easyrobust examples/imageclassification/imagenet/dat/main.py):

    L(θ) = CE( f(x), ỹ ) + CE( f(x_adv), ỹ )                               (DAT objective, weights 1:1)
    x_adv = Q( Proj_ε( Q(x) + α·∇/‖∇‖₂ ) )                                  (discrete adversarial example)

Paper form: min_θ E[ L(f(x), y) + max_δ L(f(Q(x + δ)), y) ]  (`perturb_base: x`). Q is a frozen
vector-quantised autoencoder (robustlab.vq), the attack is attacks/discrete.py: ℓ2, ε = α = 0.1,
one step, random start with probability 0.8, model in train mode. ỹ is the label, or the
mixup/cutmix soft target (the same target drives the attack) when mixing is on.

The discretiser (`vq` option):
- a path: a robustlab VQ checkpoint (`robustlab vq train`) or a taming-transformers .ckpt
  (`vqgan_config` names its architecture; "auto" recognises the two public ones);
- a mapping of `VQTrainConfig` options (default: the digits VQ): trained on the run's training split
  when training starts and kept in the run directory as vq.safetensors + vq.json (reused on resume).
It is not part of the method's state dict and gets no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from ..attacks.discrete import DiscreteAdversarial
from ..data.mixing import mix_batch, soft_targets
from ..errors import RobustlabError
from ..threat import ThreatModel
from ..vq import VQModel, VQTrainConfig, load_vq, save_vq, train_vq
from ..vq.io import VQ_FILE, freeze
from .base import Method, accuracy
from .registry import METHODS


@METHODS.register("dat")
class DAT(Method):
    name = "dat"
    needs_threat = False

    def __init__(
        self,
        threat=None,
        vq: str | VQTrainConfig = VQTrainConfig(),  # noqa: B008  (read only; `robustlab list dat` shows it)
        vqgan_config: str = "auto",
        attack_eps: float = 0.1,
        attack_step: float = 0.1,
        attack_steps: int = 1,
        start_prob: float = 0.8,
        perturb_base: Literal["Qx", "x"] = "Qx",
        attack_mode: Literal["eval", "train"] = "train",
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.0,
    ):
        super().__init__(threat)
        self.vq_source, self.vqgan_config = vq, vqgan_config
        self.mixing = {
            "mixup_alpha": mixup_alpha,
            "cutmix_alpha": cutmix_alpha,
            "prob": mix_prob,
            "switch_prob": switch_prob,
            "smoothing": label_smoothing,
        }
        # Q is kept as the frozen VQ's bound `reconstruct`, set by setup() / use_discretiser(): a VQModel attribute
        # would be registered as a submodule by nn.Module, and so land in state_dict(), the checkpoint and the optimizer
        self.vq_reconstruct: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.train_attack = DiscreteAdversarial(
            ThreatModel("l2", attack_eps),
            self.discretise,
            steps=attack_steps,
            step=attack_step,
            start_prob=start_prob,
            perturb_base=perturb_base,
            mode=attack_mode,
        )

    def describe(self) -> str:
        return f"dat: CE(x) + CE(x_adv), {self.train_attack!r}"

    @torch.no_grad()
    def discretise(self, x: torch.Tensor) -> torch.Tensor:
        """Q(x): VQ reconstruction in [0, 1], same shape as x."""
        if self.vq_reconstruct is None:
            raise RobustlabError("dat: the VQ discretiser is not loaded; Method.setup(trainer) loads or trains it.")
        return self.vq_reconstruct(x)

    def setup(self, trainer) -> None:
        """Load the VQ named by `vq`, or train one on the training split (kept in the run directory)."""
        ds = trainer.dataset
        vq: VQModel | None
        if isinstance(self.vq_source, str):
            vq, _ = load_vq(self.vq_source, self.vqgan_config)
        else:  # in a distributed run rank 0 trains (or finds) the VQ and the other ranks load it
            vq = self._train_or_reuse(trainer, self.vq_source) if trainer.world.is_main else None
            trainer.world.barrier()
            if vq is None:
                vq, _ = load_vq(trainer.run_dir / VQ_FILE)
        a = vq.arch
        if a.in_channels != ds.in_channels or ds.input_size % a.factor:
            raise RobustlabError(
                f"dat: the VQ model takes {a.in_channels}-channel images with sides divisible by {a.factor}; "
                f"{ds.name} has {ds.in_channels}×{ds.input_size}×{ds.input_size} images."
            )
        self.use_discretiser(vq.to(trainer.device))

    def use_discretiser(self, vq: VQModel) -> None:
        """Use the VQ model as Q, frozen (it stays out of state_dict() and the optimizer)."""
        self.vq_reconstruct = freeze(vq).reconstruct

    def _train_or_reuse(self, trainer, cfg: VQTrainConfig) -> VQModel:
        stem = trainer.run_dir / VQ_FILE
        settings = cfg.model_dump(mode="json")
        if stem.with_suffix(".json").exists():
            vq, meta = load_vq(stem)
            if meta.get("train_config") == settings:
                return vq
        with torch.random.fork_rng(devices=[]):  # the VQ's own seed; the trainer's random state is left alone
            vq, metrics = train_vq(
                trainer.dataset.train, trainer.dataset.val, cfg, device=trainer.device, quiet=trainer.quiet
            )
        save_vq(stem, vq, {"train_config": settings, "dataset": trainer.dataset.name, "metrics": metrics})
        if not trainer.quiet:
            from ..ui import console

            console.print(
                f"dat: trained the VQ discretiser ({metrics['train_seconds']:.0f} s): val PSNR "
                f"{metrics['psnr']:.1f} dB, "
                f"perplexity {metrics['perplexity']:.0f}, {metrics['dead_codes']} dead of {vq.arch.n_embed} codes "
                f"-> {stem}.safetensors"
            )
        return vq

    def loss(self, model, x, y, ctx):
        target = y
        if self.mixing["mixup_alpha"] > 0 or self.mixing["cutmix_alpha"] > 0:
            x, target = mix_batch(x, y, model.num_classes, ctx.generator, **self.mixing)
        elif self.mixing["smoothing"] > 0:
            target = soft_targets(y, model.num_classes, self.mixing["smoothing"])
        x_adv = self.adversarial(model, x, target, ctx)
        logits = model(x)
        clean = F.cross_entropy(logits, target)
        logits_adv = model(x_adv)
        adv = F.cross_entropy(logits_adv, target)
        hard = target.argmax(1) if target.dim() == 2 else target
        return clean + adv, {
            "loss": (clean + adv).detach(),
            "ce": clean.detach(),
            "ce_adv": adv.detach(),
            "acc": accuracy(logits.detach(), hard),
            "adv_acc": accuracy(logits_adv.detach(), hard),
        }
