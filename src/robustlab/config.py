"""YAML configs, validated with pydantic; `--set key=value` overrides.

A *run* config says what to train and how: dataset, model, method, threat model, training and
evaluation settings. A *study* config holds the shared settings of several runs plus the list of
runs; each run's entries are merged over the shared ones. Components (dataset, model, method,
callbacks) are written as a name or as {name: ..., option: value, ...}.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .data.registry import default_batch_size
from .errors import RobustlabError
from .threat import ThreatModel


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(Strict):
    """A registry name plus its keyword options."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @classmethod
    def of(cls, value: Any) -> Component:
        return value if isinstance(value, Component) else cls.model_validate(_component_dict(value))


def _component_dict(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleConfig(Strict):
    """Learning-rate schedule, evaluated per step.

    piecewise: lr × gamma^(number of `milestones` (epochs) passed); cosine: half cosine to 0;
    onecycle: linear warm-up from lr/25 to lr over `pct_start` of training, then cosine to lr/1e4;
    constant. `warmup_epochs` adds a linear warm-up to piecewise / cosine / constant.
    """

    name: Literal["constant", "piecewise", "cosine", "onecycle"] = "cosine"
    milestones: list[float] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: float = Field(0.0, ge=0)
    pct_start: float = Field(0.3, gt=0, lt=1)


class SelectConfig(Strict):
    """Model selection on the validation split (never the test split).

    by: robust (PGD accuracy, ties broken by clean, among checkpoints with clean accuracy ≥ `min_clean`),
    clean, last, or auto (robust for methods that train against an attack, clean for standard training).
    """

    by: Literal["auto", "robust", "clean", "last"] = "auto"
    # robust selection considers only checkpoints with at least this clean validation accuracy (default
    # 2/K, twice chance): a collapsed model predicting one class is "robust" on that class's points
    min_clean: float | None = Field(None, ge=0, le=1)
    attack: str = "pgd-10"
    every: int = Field(1, ge=1)
    max_samples: int | None = Field(None, ge=1)


class AugmentConfig(Strict):
    crop_padding: int = Field(0, ge=0)
    flip: bool = False
    pad_mode: Literal["constant", "reflect", "replicate", "edge"] = "constant"


class TrainConfig(Strict):
    epochs: int = Field(30, ge=1)
    batch_size: int | None = Field(None, ge=1)  # None: the dataset's default (data.registry.default_batch_size)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    augment: Literal["default", "none"] | AugmentConfig = "default"
    grad_clip: float | None = Field(None, gt=0)
    select: SelectConfig = Field(default_factory=SelectConfig)
    seed: int = 0
    ddp_find_unused: bool = (
        False  # DistributedDataParallel(find_unused_parameters=...), for methods that skip parameters
    )
    # autocast of each training step (the method's forward passes and its training attack); input gradients
    # stay float32 (the attack's iterate is a float32 leaf). fp16 needs CUDA and uses a gradient scaler.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False  # NHWC memory layout for convolutions (helps on recent GPUs)
    compile: bool = False  # torch.compile the model's body, neck and head in place


class FlagConfig(Strict):
    """Sanity flags (signs of gradient masking) computed with every evaluation; docs/evaluation.md.

    The cheap checks run on the first `max_samples` points. Thresholds are robustlab's choices (no
    paper fixes them): a flag is raised when the measured value exceeds its threshold.
    """

    enabled: bool = True
    max_samples: int = Field(200, ge=1)
    probe_steps: int = Field(20, ge=1)  # APGD-CE iterations of the accuracy-vs-eps probes
    eps_factors: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])  # probed eps multiples (+ unbounded)
    large_eps_acc: float = Field(0.05, ge=0, le=1)  # accuracy allowed at the largest eps factor
    unbounded_acc: float = Field(0.01, ge=0, le=1)  # accuracy allowed at unbounded eps
    monotone_tol: float = Field(0.02, ge=0, le=1)  # allowed rise of accuracy with eps (sampling noise)
    single_step_share: float = Field(0.005, ge=0, le=1)  # share of points FGSM breaks and no iterative attack does
    square_share: float = Field(0.01, ge=0, le=1)  # share of points Square breaks and no white-box attack does
    square_queries: int = Field(1000, ge=1)  # Square budget when the suite has no Square of its own
    zero_grad_share: float = Field(0.01, ge=0, le=1)  # share of points with a zero or non-finite input gradient
    logits_tol: float = Field(1e-4, ge=0)  # relative logit change between two identical forward passes

    @field_validator("eps_factors")
    @classmethod
    def _factors(cls, v: list[float]) -> list[float]:
        if not v or any(f <= 0 for f in v):
            raise ValueError("eps_factors must be a non-empty list of numbers > 0")
        return sorted(v)


class ExtraSuite(Strict):
    """A further suite evaluated beside the main one, saved as eval_<name>.json (name: the suite's name)."""

    suite: str | list[str | dict[str, Any]]
    name: str | None = None
    max_samples: int | None = Field(None, ge=1)  # None: the same points as the main suite

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if isinstance(self.suite, str):
            return self.suite
        raise ValueError("an extra suite written as a list of attacks needs a `name`")


class EvalConfig(Strict):
    """Evaluation: an attack suite (a registered name or a list of attack specs) on a split.

    `extra_suites` are evaluated beside it on the first `max_samples` points of the same split
    (e.g. AutoAttack on fewer points than the paper protocol); `flags` are the sanity checks.
    """

    suite: str | list[str | dict[str, Any]] = "paper"
    extra_suites: list[ExtraSuite] = Field(default_factory=list)
    step: float | None = Field(None, gt=0)
    step_ratio: float = Field(0.25, gt=0)
    batch_size: int = Field(500, ge=1)
    max_samples: int | None = Field(None, ge=1)
    split: Literal["test", "val"] = "test"
    seed: int = 0
    flags: FlagConfig = Field(default_factory=FlagConfig)
    # autocast of the model's forward passes during evaluation (CUDA speed); fp32 by default, since lower
    # precision can blunt the attacks' gradients and so overstate robustness
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    @field_validator("extra_suites", mode="before")
    @classmethod
    def _extra(cls, v: Any) -> Any:
        return [{"suite": e} if isinstance(e, str) else e for e in v] if isinstance(v, list) else v

    @field_validator("extra_suites")
    @classmethod
    def _extra_names(cls, v: list[ExtraSuite]) -> list[ExtraSuite]:
        labels = [e.label for e in v]
        if len(set(labels)) != len(labels):
            raise ValueError(f"two extra suites share the name {labels}; give each a unique `name`")
        return v


class RunConfig(Strict):
    dataset: Component = Field(default_factory=lambda: Component(name="digits"))
    model: Component = Field(default_factory=lambda: Component(name="small_cnn"))
    method: Component = Field(default_factory=lambda: Component(name="standard"))
    threat: str = "linf:8/255"
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    callbacks: list[Component] = Field(default_factory=list)
    device: str = "auto"

    _component = field_validator("dataset", "model", "method", mode="before")(lambda v: _component_dict(v))

    @field_validator("callbacks", mode="before")
    @classmethod
    def _callbacks(cls, v: Any) -> Any:
        return [_component_dict(c) for c in v] if isinstance(v, list) else v

    @field_validator("threat")
    @classmethod
    def _threat(cls, v: str) -> str:
        ThreatModel.parse(v)
        return v

    @model_validator(mode="after")
    def _batch_size(self) -> RunConfig:
        if self.train.batch_size is None:
            self.train.batch_size = default_batch_size(self.dataset.name)
        return self

    @property
    def threat_model(self) -> ThreatModel:
        return ThreatModel.parse(self.threat)

    def fingerprint(self) -> str:
        """A hash of everything that changes training (not evaluation settings or the device)."""
        return hashlib.sha256(json.dumps(self._training_fields(), sort_keys=True).encode()).hexdigest()[:16]

    def training_differences(self, other: RunConfig) -> list[str]:
        """The dotted keys whose values differ between the two configs in what changes training."""
        return _differences(self._training_fields(), other._training_fields())

    def _training_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"eval", "device"})


RUN_KEYS = tuple(RunConfig.model_fields)


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


class OutsideConfig(Strict):
    """A model robustlab did not train, listed in a study beside its runs (docs/own_model.md): evaluated with the
    study's dataset, threat model and eval settings, analysed and reported like a run."""

    label: str
    model: str  # FILE.py:FACTORY or robustbench:NAME
    weights: str | None = None  # .safetensors / .pt / .pth (never unpickled)
    mean: list[float] | None = None  # the normalisation the model expects (none when it normalises itself)
    std: list[float] | None = None
    feature_layer: str | None = None  # the representation, when the model has no forward_features
    role: str | None = None
    group: str = "main"


class StudyConfig(Strict):
    """Shared run settings + `runs` (each a partial run config with a `label` and optional `group`) + `outside`
    models (OutsideConfig) evaluated beside them."""

    model_config = ConfigDict(extra="forbid")
    name: str
    data_root: str | None = None
    base: dict[str, Any]
    runs: list[dict[str, Any]]
    outside: list[OutsideConfig] = Field(default_factory=list)
    sections: list[str | dict[str, Any]] = Field(default_factory=lambda: ["robustness", "training_curves"])  # type: ignore[arg-type]
    description: str = ""


# --- loading and overrides ---------------------------------------------------------------------


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise RobustlabError(f"config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RobustlabError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RobustlabError(f"{path}: a config must be a mapping of keys to values.")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """ "train.epochs=5" -> (["train", "epochs"], 5); the value is parsed as YAML."""
    if "=" not in text:
        raise RobustlabError(f"--set {text!r}: write KEY=VALUE, e.g. --set train.epochs=5.")
    key, value = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise RobustlabError(f"--set {text!r}: empty key.")
    if not value.strip():
        return path, None
    try:
        return path, yaml.safe_load(value)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise RobustlabError(
            f"--set {text!r}: the value is read as YAML and {value!r} is not valid YAML ({problem}); "
            f"quote strings and close brackets, e.g. --set 'train.optimizer.betas=[0.9, 0.99]'."
        ) from None


def set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        if isinstance(node, list):
            node = node[_index(node, part, path)]
            continue
        nxt = node.get(part)
        if isinstance(nxt, str) and part in ("dataset", "model", "method"):
            nxt = node[part] = {"name": nxt}  # a component written as a name gains options
        elif nxt is None:
            nxt = node[part] = {}
        node = nxt
    last = path[-1]
    if isinstance(node, list):
        node[_index(node, last, path)] = value
    else:
        node[last] = value


def _index(seq: list[Any], part: str, path: list[str]) -> int:
    try:
        i = int(part)
        seq[i]
        return i
    except (ValueError, IndexError):
        raise RobustlabError(f"--set {'.'.join(path)}: {part!r} is not an index of a list of {len(seq)}.") from None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into a copy of `base`; a component changing its name replaces the whole entry."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        b = out.get(k)
        if k in ("dataset", "model", "method"):
            b, v = _component_dict(b), _component_dict(v)
            if isinstance(b, dict) and isinstance(v, dict) and b.get("name") == v.get("name", b.get("name")):
                out[k] = deep_merge(b, v)
            else:
                out[k] = copy.deepcopy(v)
        elif isinstance(b, dict) and isinstance(v, dict):
            out[k] = deep_merge(b, v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def validation_message(where: str, err: pydantic.ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, e["loc"][:-1])
            close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"unknown key {loc!r}{hint} Allowed here: {', '.join(allowed)}.")
        else:
            lines.append(f"{loc}: {e['msg']} (got {e.get('input')!r}).")
    return f"{where}: " + " ".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    cur: Any = model
    for part in loc:
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        cur = next(
            (a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if cur is None:
            return []
    return sorted(getattr(cur, "model_fields", {}))


def make_run_config(data: dict[str, Any], where: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except pydantic.ValidationError as err:
        raise RobustlabError(validation_message(where, err, RunConfig)) from None


def load_study(path: str | Path, overrides: Sequence[str] = ()) -> StudyConfig:
    """Read a study YAML: top-level run keys are the shared base, `runs` the list, `--set` applied."""
    raw = load_yaml(path)
    run_overrides = []
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] in RUN_KEYS:
            run_overrides.append((keys, value))  # applied to every run after merging
        set_path(raw, keys, value)
    base = {k: raw.pop(k) for k in list(raw) if k in RUN_KEYS}
    raw.setdefault("name", Path(path).stem)
    raw["base"] = base
    raw.setdefault("runs", [{}])
    try:
        study = StudyConfig.model_validate(raw)
    except pydantic.ValidationError as err:
        allowed = sorted(set(StudyConfig.model_fields) - {"base"} | set(RUN_KEYS))
        msgs = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                msgs.append(f"unknown key {loc!r}{hint} Allowed at the top level: {', '.join(allowed)}.")
            else:
                msgs.append(f"{loc}: {e['msg']}.")
        raise RobustlabError(f"{path}: " + " ".join(msgs)) from None
    study._run_overrides = run_overrides  # type: ignore[attr-defined]
    return study


def study_runs(study: StudyConfig) -> list[tuple[str, str, RunConfig]]:
    """[(label, group, RunConfig)] with each run merged over the shared base and overrides applied."""
    out = []
    for i, (label, group, _, run) in enumerate(_study_entries(study)):
        merged = deep_merge(study.base, run)
        for keys, value in getattr(study, "_run_overrides", []):
            set_path(merged, keys, value)
        out.append((label, group, make_run_config(merged, f"study {study.name!r} run {i} ({label})")))
    return out


def study_roles(study: StudyConfig) -> dict[str, str]:
    """{label: role} of the runs and outside models that declare a `role` (the name report sections find a run by)."""
    roles = {label: role for label, _, role, _ in _study_entries(study) if role is not None}
    return roles | {o.label: o.role for o in study.outside if o.role is not None}


def outside_config(study: StudyConfig, outside: OutsideConfig) -> RunConfig:
    """The run config an outside model is evaluated with: the study's shared settings (dataset, threat model,
    eval), its `model` for the model's name and `outside` for the method's."""
    merged = deep_merge(study.base, {"model": outside.model, "method": "outside"})
    for keys, value in getattr(study, "_run_overrides", []):
        set_path(merged, keys, value)
    return make_run_config(merged, f"study {study.name!r} outside model {outside.label!r}")


def _study_entries(study: StudyConfig) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """(label, group, role, the run's own keys) per run. `label`, `group` and `role` are popped here, so
    they never enter a RunConfig or its fingerprint; a role names at most one run per group."""
    out: list[tuple[str, str, str | None, dict[str, Any]]] = []
    labels: set[str] = {o.label for o in study.outside}
    if len(labels) != len(study.outside):
        raise RobustlabError(f"study {study.name!r}: two outside models share a label; give each a unique `label`.")
    cast: dict[tuple[str, str], str] = {(o.group, o.role): o.label for o in study.outside if o.role is not None}
    for run in study.runs:
        run = dict(run)
        label = str(run.pop("label", "") or _default_label(run, study.base))
        group = str(run.pop("group", "main"))
        role = run.pop("role", None)
        if label in labels:
            raise RobustlabError(
                f"study {study.name!r}: two runs are labelled {label!r}; give each run a unique `label`."
            )
        labels.add(label)
        if role is not None:
            if not isinstance(role, str) or not role.isidentifier():
                raise RobustlabError(
                    f"study {study.name!r} run {label!r}: role={role!r}; allowed: a name such as "
                    "`pgd_at` (letters, digits, underscores)."
                )
            if (group, role) in cast:
                raise RobustlabError(
                    f"study {study.name!r}: runs {cast[group, role]!r} and {label!r} of group {group!r} both have "
                    f"role {role!r}; a role names one run per group."
                )
            cast[group, role] = label
        out.append((label, group, role, run))
    return out


def _default_label(run: dict[str, Any], base: dict[str, Any]) -> str:
    method = _component_dict(run.get("method", base.get("method", "standard")))
    return str(method.get("name", "run")) if isinstance(method, dict) else str(method)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)
