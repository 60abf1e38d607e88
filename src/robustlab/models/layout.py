"""The memory layout an attack runs a model in.

On a CPU, convolutions and max pooling of channels-last (NHWC) tensors run much faster than of
channels-first ones for the small maps of our data sets: AutoAttack on the digits study's PGD-AT model
took half the time with the model's convolution weights in channels_last (a convolution with a
channels-last weight writes a channels-last output, so the whole body follows; the input stays as it is).
Weight gradients are not involved — the attack freezes them — which is where channels_last loses on a
CPU, so training keeps its own `train.channels_last` setting; `attack.run` (evaluation, validation) switches,
`attack(...)` (the training attack of a method) does not, so a run trains exactly as before.

`attack_layout(model, x)` switches the layout for the duration of an attack only, and only where it
cannot change the result: every 4-D parameter on the CPU, and the model's logits on the first rows of x
the same in both layouts (a model that reshapes with `.view` fails in channels_last and keeps its layout).
The original weight tensors are put back afterwards, so the model is exactly what it was.
`ROBUSTLAB_CHANNELS_LAST=0` turns this off (the benchmarks use it to show what the layout contributes).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

_PROBE_ROWS = 8
# model -> {(input shape, weight dtype): whether channels_last gives the same logits}
_AGREES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, bool]] = weakref.WeakKeyDictionary()


def _to_swap(model: nn.Module) -> list[nn.Parameter]:
    """The 4-D parameters not yet channels_last, if the switch is on and all of them live on the CPU."""
    if os.environ.get("ROBUSTLAB_CHANNELS_LAST", "1") == "0":
        return []
    weights = [p for p in model.parameters() if p.dim() == 4]
    if any(p.device.type != "cpu" for p in weights):
        return []  # measured on CPUs only; GPU users choose with train.channels_last
    return [p for p in weights if not p.is_contiguous(memory_format=torch.channels_last)]


def _swap(params: list[nn.Parameter], tensors: list[torch.Tensor]) -> None:
    for p, t in zip(params, tensors):
        p.data = t


def _agrees(model: nn.Module, x: torch.Tensor, params: list[nn.Parameter]) -> bool:
    """Whether the model, in eval mode, is deterministic on x's first rows and gives the same logits there with
    `params` in channels_last; any failure counts as no. The global random state is left as it was."""
    key = (tuple(x.shape[1:]), params[0].dtype)
    known = _AGREES.setdefault(model, {})
    if key not in known:
        rows = x[:_PROBE_ROWS].detach()
        original = [p.data for p in params]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                ref, again = model(rows), model(rows)  # a randomised model differs between two passes
                _swap(params, [t.contiguous(memory_format=torch.channels_last) for t in original])
                out = model(rows)
            atol = 1e-5 * max(1.0, float(ref.abs().max()))
            known[key] = all(
                t.shape == ref.shape and torch.allclose(t.float(), ref.float(), rtol=1e-4, atol=atol)
                for t in (again, out)
            )
        except Exception:  # a model that cannot run channels_last keeps its layout
            known[key] = False
        finally:
            _swap(params, original)
            model.train(was_training)
    return known[key]


@contextmanager
def attack_layout(model: nn.Module, x: torch.Tensor, enabled: bool = True) -> Iterator[bool]:
    """Inside: the model's 4-D weights in channels_last when `enabled` and that is safe and faster (see the
    module's text); yields whether it switched. The original tensors are put back on the way out, exceptions
    included."""
    params = _to_swap(model) if enabled else []
    if not params or x.dim() != 4 or x.shape[0] == 0 or not _agrees(model, x, params):
        yield False
        return
    original = [p.data for p in params]
    _swap(params, [t.contiguous(memory_format=torch.channels_last) for t in original])
    try:
        yield True
    finally:
        _swap(params, original)
