"""torch.distributed plumbing: one `World` object instead of global state.

`robustlab train` and `robustlab eval` run under `torchrun --nproc_per_node N -m robustlab ...`:
`World.from_env()` reads RANK / WORLD_SIZE / LOCAL_RANK, joins the process group (NCCL on CUDA,
Gloo on CPU) and picks the rank's device. A single process is a World of size 1 and every helper
below is then a no-op, so the same code path serves both.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import RobustlabError

TIMEOUT = datetime.timedelta(minutes=float(os.environ.get("ROBUSTLAB_DIST_TIMEOUT_MIN", "30")))


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`; a CUDA device on a machine without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise RobustlabError(f"device={name!r}; allowed: auto, cpu, cuda, cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RobustlabError(f"device={name!r} but CUDA is not available on this machine; use device=cpu or auto.")
    return dev


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls, device: str = "auto") -> tuple[World, torch.device]:
        """Join the process group torchrun set up (if any); returns (world, this rank's device)."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls(), resolve_device(device)
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RobustlabError(f"device={device!r} but CUDA is not available on this machine; use device=cpu.")
        dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
        return cls(rank, size, local), dev

    # -- collectives (no-ops for a single process)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_true(self, flag: bool, device: torch.device) -> bool:
        """True on every rank iff `flag` is true on every rank (so all ranks take the same branch)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item() > 0)

    def gather_cat(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's 1-d tensor (of possibly different lengths), on every rank, in rank order."""
        if not self.distributed:
            return [t]
        n = torch.tensor([t.numel()], device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(self.size)]
        dist.all_gather(sizes, n)
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, dtype=t.dtype, device=t.device)
        padded[: t.numel()] = t
        out = [torch.zeros_like(padded) for _ in range(self.size)]
        dist.all_gather(out, padded)
        return [o[: int(s.item())] for o, s in zip(out, sizes)]

    def average_gradients(self, params) -> None:
        """Average .grad over ranks, for trainable parts outside the DDP-wrapped model (a method's heads or
        critic, which it calls on features rather than through the model's forward)."""
        if not self.distributed:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.size)

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers to every rank (for the parts DDP does not own)."""
        if self.distributed:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def gather_objects(self, obj) -> list:
        """Every rank's small picklable object, on every rank (e.g. the keys of a result dict)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mine(self, index: int) -> bool:
        """Round-robin ownership: does this rank own item `index` (a batch, a shard)?"""
        return index % self.size == self.rank

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch (parts differ in size by at most one)."""
        return torch.tensor_split(x, self.size)[self.rank] if self.distributed else x


class _Parts(torch.nn.Module):
    """The model behind one forward: `forward(inp, part)` reaches its logits, features, head or spatial
    map, so every call a method makes goes through DDP."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model: Any = model  # the contract's methods are not typed on nn.Module

    def forward(self, inp: torch.Tensor, part: str = "logits") -> torch.Tensor:
        if part == "features":
            return self.model.forward_features(inp)
        if part == "head":
            return self.model.forward_head(inp)
        if part == "map":
            return self.model.forward_map(inp)
        return self.model(inp)


class DistributedModel(torch.nn.Module):
    """What a method sees in a distributed run: the model's interface, every call through DDP.

    Attacks reach the plain model through `.module` (see `unwrap`): they take no parameter gradients
    and must not trigger DDP's collectives."""

    def __init__(self, ddp: torch.nn.parallel.DistributedDataParallel, model: torch.nn.Module):
        super().__init__()
        self.ddp = ddp
        object.__setattr__(self, "module", model)  # not a submodule: the parameters are the DDP's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ddp(x, "logits")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.ddp(x, "features")

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        return self.ddp(z, "head")

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.ddp(x, "map")

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["module"], name)  # num_classes, feature_dim, arch, ...


def ddp_wrap(model: torch.nn.Module, device: torch.device, find_unused: bool = False) -> DistributedModel:
    """Wrap the model in DistributedDataParallel (parameters and buffers broadcast from rank 0)."""
    ids = [device.index] if device.type == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel(_Parts(model), device_ids=ids, find_unused_parameters=find_unused)
    return DistributedModel(ddp, model)


def shutdown() -> bool:
    """Leave the process group (all ranks together), so that no process aborts at exit with live
    communication threads; True when there was one to leave."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        return True
    return False


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside the wrappers that only distribute or compile it: DistributedDataParallel,
    `DistributedModel` and torch.compile's OptimizedModule. Any other module comes back as it is, even one
    that keeps its model in `.module`: a defence written as a wrapper (an input quantisation, say) must be
    attacked as the wrapper, not as the model inside it."""
    while True:
        if isinstance(model, (DistributedModel, torch.nn.parallel.DistributedDataParallel)):
            model = model.module
        elif _compiled(model):
            model = model._orig_mod  # type: ignore[assignment]  # torch types it as Tensor | Module
        else:
            return model


def _compiled(model: torch.nn.Module) -> bool:
    # torch.compile's wrapper class lives in torch._dynamo, which is slow to import: a model can only be
    # compiled once that module is loaded
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return eval_frame is not None and isinstance(model, eval_frame.OptimizedModule)
