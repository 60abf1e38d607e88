"""Name -> factory registries with validated keyword arguments.

Every registry (models, methods, datasets, attacks, analyses, callbacks, report sections) is a
`Registry`. `create(name, **kwargs)` validates the keyword arguments against the factory's signature
with pydantic, so a YAML config with a mistyped key or a wrongly typed value gets an error that names
the key and lists the allowed ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import pydantic

from .errors import RobustlabError, unknown_name

E = TypeVar("E")


def _describe_validation_error(where: str, err: pydantic.ValidationError, allowed: list[str]) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(arguments)"
        if e["type"] == "extra_forbidden":
            import difflib

            close = difflib.get_close_matches(loc, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            parts.append(f"unknown option {loc!r}{hint}")
        elif e["type"] == "missing":
            parts.append(f"missing required option {loc!r}")
        else:
            parts.append(f"option {loc!r}={e.get('input')!r}: {e['msg']}")
    return f"{where}: " + "; ".join(parts) + f". Allowed options: {', '.join(allowed) or '(none)'}."


def validate_kwargs(
    where: str, fn: Callable[..., Any], kwargs: dict[str, Any], skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Validate and coerce `kwargs` against `fn`'s keyword parameters (those not in `skip`)."""
    sig = inspect.signature(fn, eval_str=True)
    fields: dict[str, Any] = {}
    for name, p in sig.parameters.items():
        if name in skip or name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = p.annotation if p.annotation is not inspect.Parameter.empty else Any
        default = p.default if p.default is not inspect.Parameter.empty else ...
        fields[name] = (annotation, default)
    model = pydantic.create_model(
        f"{where}Options",
        __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True),
        **fields,
    )
    try:
        validated = model(**kwargs)
    except pydantic.ValidationError as err:
        raise RobustlabError(_describe_validation_error(where, err, sorted(fields))) from None
    return {k: getattr(validated, k) for k in kwargs}


class Registry(Generic[E]):
    """A named collection of entries: factories (a class or function that `create` calls with validated options), or
    plain objects (a corruption with its parameter tables). `Registry[E]` holds entries of type E.

    Entries register with `@REGISTRY.register(name)` in the modules of the registry's own package (its
    `__init__` imports them all), or, for an extension point that a higher layer fills (training
    callbacks written by the analyses), in the packages named in `plugins`: those are imported the first
    time the registry is asked for a name, so the lower layer never imports the higher one.
    """

    def __init__(self, kind: str, plugins: tuple[str, ...] = ()):
        self.kind = kind
        self._factories: dict[str, E] = {}
        self._plugins = plugins

    def _load_plugins(self) -> None:
        if self._plugins:
            import importlib

            plugins, self._plugins = self._plugins, ()
            for package in plugins:
                importlib.import_module(package)

    def register(self, name: str) -> Callable[[E], E]:
        def deco(factory: E) -> E:
            if name in self._factories:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._factories[name] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._factories

    def get(self, name: str) -> E:
        self._load_plugins()
        if not isinstance(name, str) or name not in self._factories:
            raise unknown_name(self.kind, name, self._factories)
        return self._factories[name]

    def create(self, name: str, *args: Any, skip: tuple[str, ...] = (), **kwargs: Any) -> Any:
        """Build `name` with positional `args` (not validated) and validated keyword `kwargs`.

        `skip` names keyword parameters that are passed programmatically rather than from a config
        (they are neither validated nor listed as allowed options).
        """
        factory: Any = self.get(name)
        programmatic = {k: kwargs.pop(k) for k in skip if k in kwargs}
        target = factory.__init__ if inspect.isclass(factory) else factory
        clean = validate_kwargs(
            f"{self.kind} {name!r}", target, kwargs, skip=skip + _positional_names(target, len(args))
        )
        return factory(*args, **clean, **programmatic)

    def options(self, name: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """The configurable keyword options of `name` with their defaults (for --help and docs)."""
        factory: Any = self.get(name)
        target = factory.__init__ if inspect.isclass(factory) else factory
        out = {}
        for pname, p in inspect.signature(target).parameters.items():
            if pname == "self" or pname in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[pname] = None if p.default is inspect.Parameter.empty else p.default
        return out


def _positional_names(fn: Callable[..., Any], n: int) -> tuple[str, ...]:
    params = [p for name, p in inspect.signature(fn).parameters.items() if name != "self"]
    return tuple(p.name for p in params[:n])


def check_range(
    name: str, value: float, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False
) -> None:
    """Raise a RobustlabError unless lo <= value <= hi (lo < value with lo_open)."""
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and value > hi
    if bad_lo or bad_hi:
        lo_s = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
        hi_s = "" if hi is None else f"<= {hi}"
        allowed = " and ".join(s for s in (lo_s, hi_s) if s)
        raise RobustlabError(f"{name}={value!r} is out of range; allowed: {allowed}.")


def import_submodules(package: str, path: list[str]) -> None:
    """Import every module of a package so that its registrations run (one file per entry, no list to edit).

    Modules keep heavy optional imports inside functions, so this stays cheap.
    """
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
