"""Models robustlab did not build: any `nn.Module` mapping images to logits, kept to the model contract.

`OutsideModel(module, mean, std, feature_layer)` puts the module's normalisation in front of it as robustlab's
own `Normalize` layer, so attacks and analyses stay in pixel space [0, 1]; `forward_features` is the module's
own `forward_features` when it has one, else the output of the layer named `feature_layer`, flattened (read
through a forward hook). `build_outside("FILE.py:FACTORY")` imports a factory from a Python file and calls it;
`build_outside("robustbench:NAME")` builds one of RobustBench's architectures (models/robustbench.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch import nn

from ..errors import RobustlabError, closest, did_you_mean
from .base import Normalize
from .robustbench import robustbench_model


class OutsideModel(nn.Module):
    """`module` behind its normalisation (`mean`/`std`, none when None), with the model contract's
    `forward_features` (see the module doc)."""

    def __init__(
        self,
        module: nn.Module,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        *,
        feature_layer: str | None = None,
        in_channels: int | None = None,
        num_classes: int | None = None,
        name: str = "model",
    ):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise RobustlabError(
                f"{name}: got {type(module).__name__}; allowed: a torch.nn.Module mapping images to logits."
            )
        if (mean is None) != (std is None):
            raise RobustlabError(f"{name}: give both mean and std, or neither (got mean={mean}, std={std}).")
        if mean is not None and std is not None and in_channels is not None:
            for key, value in (("mean", mean), ("std", std)):
                if len(value) != in_channels:
                    raise RobustlabError(
                        f"{name}: {key}={tuple(value)} has {len(value)} values; allowed: one per image channel "
                        f"({in_channels})."
                    )
        self.normalize: nn.Module = (
            Normalize(tuple(mean), tuple(std)) if mean is not None and std is not None else nn.Identity()
        )
        self.module = module
        self.name = name
        self.num_classes = num_classes  # the data's class count, when known (attacks check labels against it)
        if feature_layer is not None:
            layers = dict(module.named_modules())
            if feature_layer not in layers or not feature_layer:
                hint = did_you_mean(closest(feature_layer, layers))
                raise RobustlabError(
                    f"{name}: feature layer {feature_layer!r} does not exist.{hint} Layers: {layer_list(module)}."
                )
        self.feature_layer = feature_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self.normalize(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The representation N×D: the layer `feature_layer`'s output, else the module's `forward_features`."""
        if self.feature_layer is None:
            own = getattr(self.module, "forward_features", None)
            if own is None:
                raise RobustlabError(
                    f"{self.name} has no forward_features; name the layer to read the representation from with "
                    f"--feature-layer (feature_layer=...). Layers: {layer_list(self.module)}."
                )
            return own(self.normalize(x)).flatten(1)
        captured: list[torch.Tensor] = []
        layer = dict(self.module.named_modules())[self.feature_layer]
        handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self(x)
        finally:
            handle.remove()
        return captured[-1].flatten(1)

    def forward_head(self, z: torch.Tensor) -> torch.Tensor:
        """Logits from `forward_features`' output: the module's own `forward_head`, when it has one."""
        own = getattr(self.module, "forward_head", None)
        if own is None or self.feature_layer is not None:
            raise RobustlabError(
                f"{self.name}: no forward_head from its representation to the logits (an analysis that needs one, "
                "e.g. feature_contribution, works on models with forward_features and forward_head)."
            )
        return own(z)


def layer_list(module: nn.Module, limit: int = 40) -> str:
    names = [n for n, _ in module.named_modules() if n]
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "") or "(none)"


def build_outside(spec: str, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """The module of `spec`: "FILE.py:FACTORY" (FACTORY() is called with no arguments) or "robustbench:NAME"."""
    if spec.startswith("robustbench:"):
        return robustbench_model(spec.split(":", 1)[1], num_classes, in_channels)
    file, sep, factory = spec.rpartition(":")
    if not sep or not file.endswith(".py") or not factory.isidentifier():
        raise RobustlabError(
            f"--model {spec!r}; allowed: FILE.py:FACTORY (a function or class in FILE.py that returns the "
            "nn.Module) or robustbench:NAME (e.g. robustbench:wrn-28-10)."
        )
    path = Path(file).expanduser()
    if not path.is_file():
        raise RobustlabError(f"--model {spec!r}: no such file {path}.")
    name = f"robustlab_outside_{abs(hash(str(path.resolve())))}"
    loader = importlib.util.spec_from_file_location(name, path)
    assert loader is not None and loader.loader is not None
    mod = importlib.util.module_from_spec(loader)
    sys.modules[name] = mod  # dataclasses and pickling look a module up by name
    loader.loader.exec_module(mod)
    fn = getattr(mod, factory, None)
    if not callable(fn):
        found = [k for k, v in vars(mod).items() if callable(v) and not k.startswith("_")]
        raise RobustlabError(
            f"--model {spec!r}: {path} defines no function or class {factory!r}.{did_you_mean(closest(factory, found))}"
        )
    module = fn()
    if not isinstance(module, nn.Module):
        raise RobustlabError(
            f"--model {spec!r}: {factory}() returned {type(module).__name__}; allowed: a torch.nn.Module mapping "
            "images to logits."
        )
    return module
