"""The `robustlab` command: train | eval | sweep | study | analyze | vq | list."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import RobustlabError, TrainingDiverged, did_you_mean
from .rundir import RunLock, write_text_atomic

if TYPE_CHECKING:
    import torch

    from .data import ImageDataset, Split

EPILOG_TRAIN = """examples:
  robustlab train --dataset digits --model small_cnn --method pgd_at --threat linf:0.2 --epochs 20
  robustlab train --config configs/digits.yaml --run trades --set train.epochs=5
  robustlab train --config run.yaml --out runs/mine --resume      # continue after a crash or kill
"""

EPILOG_VQ = """examples:
  robustlab vq train --dataset digits                        # the digits discretiser DAT uses by default
  robustlab vq train --dataset cifar10 --set ch=64 --set ch_mult=[1,2,2] --set codebook_size=1024 --out runs/vq/cifar10
  robustlab vq eval runs/vq/digits --dataset digits
  robustlab vq eval ~/weights/vqgan_openimages_f8_16384.ckpt --dataset imagefolder --n 64
"""

EPILOG_EVAL = """examples:
  robustlab eval runs/digits/pgd_at                      # the run's eval suite (default: paper protocol)
  robustlab eval runs/digits/pgd_at --suite autoattack   # AutoAttack standard -> eval_autoattack.json
  robustlab eval runs/digits/pgd_at --suite quick --n 200
  robustlab eval runs/digits/pgd_at/model.safetensors --threat linf:0.3 --suite pgd-20,cw-20
  robustlab eval --model my_model.py:make --weights w.pt --dataset cifar10 --mean 0.49 0.48 0.45 \\
      --std 0.25 0.24 0.26 --threat linf:8/255          # your own model -> runs/outside/my_model-make/
  robustlab eval --model robustbench:dm-wrn-28-10 --weights Gowal2020.pt --dataset cifar10 \\
      --threat linf:8/255 --suite autoattack            # a RobustBench checkpoint (docs/own_model.md)

Results go to eval.json in --out; in the run directory (the default) only the run's own suite writes
eval.json, any other suite eval_<suite>.json (eval_custom.json for a list of attacks). An interrupted
evaluation resumes from <out>/<stem>_state.json when the same command is run again. Sanity flags (signs of gradient
masking) are computed at the end and printed with a one-line explanation each.
"""

EPILOG_SWEEP = """examples:
  robustlab sweep runs/digits/pgd_at runs/digits/standard             # eps = 0.25..2 x the training eps
  robustlab sweep runs/digits/pgd_at --eps 0.05,0.1,0.2,0.3,0.4 --suite autoattack --n 100
  robustlab sweep runs/c10/pgd_at --model my_model.py:make --weights w.pt --dataset cifar10 --threat linf:8/255
"""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count of points, epochs, processes; a batch size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; allowed: an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range; allowed: an integer >= 1")
    return value


def _eval_data(p: argparse.ArgumentParser) -> None:
    """The data options `eval` and `sweep` share: which points, in which batches, with which attack seed."""
    p.add_argument("--max-samples", "--n", dest="n", type=positive_int, help="use the first N points of the split only")
    p.add_argument("--split", default="test", choices=["test", "val"], help="data split (default test)")
    p.add_argument("--batch-size", type=positive_int, default=500, help="attack batch size (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default 0)")


def _outside(p: argparse.ArgumentParser, features: bool = False) -> None:
    """The options that bring a model robustlab did not train (docs/own_model.md)."""
    g = p.add_argument_group(
        "a model robustlab did not train", "instead of a run directory: the model, its weights, data and normalisation"
    )
    g.add_argument(
        "--model", help="FILE.py:FACTORY (FACTORY() returns the nn.Module) or robustbench:NAME (wrn-28-10, ...)"
    )
    g.add_argument(
        "--weights", help="its weights: .safetensors, or a state dict saved by torch.save (.pt/.pth; never unpickled)"
    )
    g.add_argument("--dataset", help="dataset name to evaluate it on (see `robustlab list`)")
    g.add_argument("--data", help="an .npz file of images and labels (x_test/y_test, or x/y) instead of --dataset")
    g.add_argument(
        "--mean", nargs="+", help="the normalisation the model expects, one value per channel (e.g. 0.49 0.48 0.45)"
    )
    g.add_argument("--std", nargs="+", help="its standard deviations, one per channel")
    if features:
        g.add_argument(
            "--feature-layer",
            help="the layer whose output is the representation (when the model has no forward_features)",
        )


def _debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error (also: ROBUSTLAB_DEBUG=1)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="where dataset files live (default: $ROBUSTLAB_DATA, else ./data)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    _debug(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustlab", description="Train, attack and analyse adversarially robust models."
    )
    parser.add_argument("--version", action="version", version=f"robustlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train one model",
        description="Train one model (a run) and keep its best and last checkpoints.",
        epilog=EPILOG_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="a run or study YAML (with a study, pick the run with --run)")
    p.add_argument("--run", help="label of the run to train from a study config")
    p.add_argument("--dataset", help="dataset name (see `robustlab list`)")
    p.add_argument("--model", help="model name")
    p.add_argument("--method", help="training objective")
    p.add_argument("--threat", help="threat model, e.g. linf:8/255, linf:8px, l2:0.5")
    p.add_argument("--epochs", type=positive_int, help="number of epochs")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. method.beta=3",
    )
    p.add_argument("--out", help="run directory (default runs/train/<dataset>-<model>-<method>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--eval", action="store_true", help="evaluate the selected model with the run's eval settings afterwards"
    )
    _common(p)

    p = sub.add_parser(
        "eval",
        help="evaluate a trained model under an attack suite",
        description="Evaluate a run directory or checkpoint: clean accuracy, accuracy under each attack, worst case.",
        epilog=EPILOG_EVAL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", nargs="?", help="run directory or checkpoint (.safetensors/.json); or use --model")
    p.add_argument(
        "--suite",
        default=None,
        help="suite name (paper, quick, ...) or comma-separated attack specs (default: the run's eval.suite, "
        "else paper)",
    )
    p.add_argument("--threat", help="threat model (default: the one the model was trained for)")
    p.add_argument("--step", type=float, help="step size of iterative attacks (default eps/4)")
    _eval_data(p)
    p.add_argument(
        "--out",
        help="directory for eval.json / eval.md (default: the run directory, where a suite other than "
        "the run's own writes eval_<suite>.json)",
    )
    p.add_argument("--no-flags", action="store_true", help="skip the sanity flags")
    _outside(p)
    _common(p)

    p = sub.add_parser(
        "sweep",
        help="robustness curve: accuracy versus eps for one or more models",
        description="Evaluate each model under a suite at several radii and plot worst-case accuracy against eps.",
        epilog=EPILOG_SWEEP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("targets", nargs="*", help="run directories or checkpoints (and/or one --model)")
    p.add_argument(
        "--eps",
        help="comma-separated radii in the models' norm, e.g. 0.05,0.1,0.2 or 2px,4px,8px "
        "(default: 0.25, 0.5, 0.75, 1, 1.5 and 2 times the first model's eps)",
    )
    p.add_argument("--suite", default="quick", help="suite name or comma-separated attack specs (default quick)")
    _eval_data(p)
    p.add_argument(
        "--out",
        help="directory for robustness_curve.png and sweep.json (default: the run directory, "
        "or the runs' common parent directory; runs/outside/<name> for --model alone)",
    )
    p.add_argument("--threat", help="with --model: its threat model (the norm of the radii; its eps marks the plot)")
    _outside(p)
    _common(p)

    p = sub.add_parser(
        "study",
        help="train, evaluate and report a whole study",
        description="Run a study config end to end: train or reuse each run, evaluate it, "
        "write runs/<study>/report.md.",
    )
    p.add_argument("config", nargs="?", help="study YAML (default configs/digits.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for every run (repeatable)",
    )
    p.add_argument("--only", help="comma-separated run labels to run (default: all)")
    p.add_argument("--out", default="runs", help="root of the run directories (default runs)")
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="runs trained and evaluated at once, in worker processes (default: one per CPU core up to 4; 1 on a GPU)",
    )
    p.add_argument(
        "--nproc",
        type=positive_int,
        default=1,
        help="train each run with torch.distributed on this many processes (torchrun; one run at a time)",
    )
    _common(p)

    p = sub.add_parser(
        "analyze",
        help="run diagnostics on a trained model",
        description="Run registered analyses on a trained run; results go to RUN/analysis/*.json and RUN/figures/.",
    )
    p.add_argument("target", nargs="?", help="run directory or checkpoint; or use --model")
    p.add_argument("--what", required=True, help="comma-separated analyses (see `robustlab list`)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="analysis option, e.g. n=500 (repeatable)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threat", help="with --model: the threat model of the attacks inside the analyses")
    p.add_argument("--out", help="with --model: where analysis/ and figures/ go (default runs/outside/<name>)")
    _outside(p, features=True)
    _common(p)

    p = sub.add_parser(
        "vq",
        help="train or evaluate a VQ autoencoder (DAT's discretiser)",
        description="Vector-quantised autoencoders: Q(x) = decode(nearest codes(encode(x))), the discretiser of DAT.",
        epilog=EPILOG_VQ,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    vq_sub = p.add_subparsers(dest="vq_command", required=True, metavar="VQ_COMMAND")
    q = vq_sub.add_parser(
        "train",
        help="train a VQ autoencoder on a dataset's training split",
        description="Train a VQ autoencoder (reconstruction MSE + codebook + commitment loss, dead-code restarts) "
        "on the training split; report validation PSNR, codebook perplexity and dead codes; "
        "write OUT/vq.safetensors, OUT/vq.json and OUT/reconstructions.png.",
    )
    q.add_argument("--dataset", default="digits", help="dataset name (default digits)")
    q.add_argument("--out", help="output directory (default runs/vq/<dataset>)")
    q.add_argument("--epochs", type=positive_int, help="number of epochs (default 30)")
    q.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="architecture / training option (repeatable): codebook_size, code_dim, ch, ch_mult, num_res_blocks, "
        "attn_resolutions, z_channels, num_groups, beta, epochs, batch_size, lr, restart_dead, seed",
    )
    _common(q)
    q = vq_sub.add_parser(
        "eval",
        help="PSNR and codebook usage of a VQ checkpoint on a dataset",
        description="Measure a VQ checkpoint (ours, or a taming-transformers .ckpt) on a dataset split: "
        "reconstruction PSNR, codebook perplexity, dead codes.",
    )
    q.add_argument(
        "target", help="VQ checkpoint: a directory holding vq.safetensors/vq.json, either file, or a taming .ckpt"
    )
    q.add_argument("--dataset", default="digits", help="dataset name (default digits)")
    q.add_argument("--split", default="test", choices=["train", "val", "test"], help="data split (default test)")
    q.add_argument("--n", type=positive_int, help="use the first N images only")
    q.add_argument(
        "--vqgan-config",
        default="auto",
        help="architecture of a taming .ckpt: auto (default), vqgan_openimages_f8_16384, vqgan_imagenet_f16_16384",
    )
    _common(q)

    p = sub.add_parser(
        "list",
        help="list datasets, models, methods, attacks, suites, analyses, report sections, corruptions",
        description="Without NAME: every registered name by kind. With NAME: what it is and its options with "
        "their defaults (the keys a config or --set can give it).",
    )
    p.add_argument("name", nargs="?", help="a registered name, e.g. trades, pgd, small_cnn, paper, fisher")
    _debug(p)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from .config import (
        RunConfig,
        deep_merge,
        load_study,
        load_yaml,
        make_run_config,
        parse_override,
        set_path,
        study_runs,
    )
    from .train import train_run

    sets = args.set
    if args.config and args.run:  # the study's --set overrides apply as in `robustlab study`
        runs = {label: cfg for label, _, cfg in study_runs(load_study(args.config, args.set))}
        if args.run not in runs:
            raise RobustlabError(f"--run {args.run!r}: no such run in {args.config}; runs: {', '.join(runs)}.")
        data, sets = runs[args.run].model_dump(mode="json"), []
    else:
        data = RunConfig().model_dump(mode="json")  # defaults, so --set can reach any key
        if args.config:
            file = load_yaml(args.config)
            if "runs" in file:
                raise RobustlabError(f"{args.config} is a study config; pick one run with --run LABEL.")
            data = deep_merge(data, file)
    cli = {
        k: v
        for k, v in (("dataset", args.dataset), ("model", args.model), ("method", args.method), ("threat", args.threat))
        if v is not None
    }
    if args.epochs is not None:
        cli["train"] = {"epochs": args.epochs}
    data = deep_merge(data, cli)
    for text in sets:
        keys, value = parse_override(text)
        set_path(data, keys, value)
    cfg = make_run_config(data)
    out = Path(args.out) if args.out else Path("runs/train") / f"{cfg.dataset.name}-{cfg.model.name}-{cfg.method.name}"
    result = train_run(cfg, out, resume=args.resume, data_root=args.data_root, quiet=args.quiet, device=args.device)
    if not _is_main_process():
        return 0
    print(
        f"trained {out}: selected epoch {result.best_epoch}, "
        + ", ".join(f"{k} {v:.4f}" for k, v in result.best_metrics.items() if k.startswith("val_"))
    )
    if args.eval:
        from .distributed import resolve_device
        from .evaluate import print_table
        from .study import evaluate_run

        res = evaluate_run(
            cfg, out, data_root=args.data_root, device=resolve_device(args.device or cfg.device), quiet=args.quiet
        )
        print_table({out.name: res})
    return 0


def _is_main_process() -> bool:
    """False on the ranks > 0 of a torchrun launch (they print nothing)."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _suite_arg(text: str | list) -> str | list:
    """A registered suite name stays a name; "a,b" (or one attack spec) becomes a list of attack specs. A name that
    is neither is refused with the closest suite or attack name."""
    from . import attacks
    from .evaluate import SUITES

    if not isinstance(text, str) or ("," not in text and text in SUITES):
        return text
    specs = [t.strip() for t in text.split(",") if t.strip()]
    if not specs:
        raise RobustlabError(
            f"--suite {text!r} names no attack. Suites: {', '.join(SUITES.names())}; or comma-separated attack specs."
        )
    single = len(specs) == 1 and "," not in text
    for spec in specs:
        try:
            attacks.parse_spec(spec)
        except RobustlabError:
            close = attacks.closest_spec(spec, SUITES.names() if single else None)
            where = f"suite or attack {spec!r}" if single else f"attack {spec!r} in --suite {text!r}"
            suites = f"Suites: {', '.join(SUITES.names())}; attacks" if single else "Attacks"
            raise RobustlabError(
                f"unknown {where}.{did_you_mean(close)} {suites}: {', '.join(attacks.names())} "
                f"(an attack may take -STEPS, e.g. pgd-20; several are comma-separated)."
            ) from None
    return specs


def _load_target(target: str, data_root: str | None, device):
    """(model, checkpoint meta, dataset, the run's eval config dict) of a run directory or checkpoint."""
    from . import data
    from .checkpoint import load_model, resolve_checkpoint
    from .config import load_yaml

    stem = resolve_checkpoint(target)
    model, meta = load_model(stem, device)
    cfg_path = stem.parent / "config.yaml"
    run_eval = load_yaml(cfg_path).get("eval", {}) if cfg_path.exists() else {}
    ds_meta = meta.get("dataset", {})
    if "name" not in ds_meta:
        raise RobustlabError(f"{stem}.json records no dataset; cannot tell what to evaluate on.")
    ds = data.load(ds_meta["name"], root=data_root, **ds_meta.get("options", {}))
    return stem, model, meta, ds, run_eval


OUTSIDE_OPTIONS = ("weights", "dataset", "data", "mean", "std", "feature_layer")


@dataclass
class Outside:
    """A model robustlab did not train, with the data it is evaluated or analysed on."""

    name: str  # for directories and tables: the factory (my_model-make) or robustbench-NAME
    model: torch.nn.Module
    dataset: ImageDataset | None  # None for --data in eval / sweep (only its test points are read)
    split: Split  # the points to evaluate
    num_classes: int


def _floats(flag: str, values: list[str] | None) -> tuple[float, ...] | None:
    if values is None:
        return None
    parts = [t for v in values for t in v.replace(",", " ").split()]
    try:
        return tuple(float(t) for t in parts)
    except ValueError:
        raise RobustlabError(
            f"{flag} {' '.join(values)}: allowed: numbers, one per image channel, e.g. {flag} 0.5 0.5 0.5."
        ) from None


def _outside_target(args: argparse.Namespace, device: Any, whole_dataset: bool = False) -> Outside:
    """The --model of eval / sweep / analyze with its weights, data and normalisation; `whole_dataset`: --data is
    read as a dataset with train / val / test splits (the analyses need the training split), else its test points
    (x_test / y_test, or all of x / y) are the points evaluated."""
    from . import data
    from .checkpoint import load_outside_model
    from .data.npz import evaluation_split
    from .evaluate import output_classes

    if (args.dataset is None) == (args.data is None):
        raise RobustlabError(
            f"--model {args.model}: give the data as exactly one of --dataset NAME or --data FILE.npz (got "
            f"{'both' if args.dataset else 'neither'})."
        )
    ds = None
    if args.dataset or whole_dataset:
        ds = data.load(args.dataset, root=args.data_root) if args.dataset else data.load("npz", path=args.data)
        split, classes = ds.split(getattr(args, "split", "test")), ds.class_names
    else:
        split, classes = evaluation_split(args.data)
    split = split.head(getattr(args, "n", None))
    model = load_outside_model(
        args.model,
        args.weights,
        num_classes=len(classes),
        in_channels=int(split.x.shape[1]),
        mean=_floats("--mean", args.mean),
        std=_floats("--std", args.std),
        feature_layer=getattr(args, "feature_layer", None),
        device=device,
    )
    k = output_classes(model, split.x[:2].to(device))
    if k != len(classes):
        raise RobustlabError(
            f"--model {args.model} returns {k} logits per image; the data has {len(classes)} classes. Allowed: a model "
            f"with one logit per class of the data."
        )
    file, _, factory = args.model.rpartition(":")
    name = f"robustbench-{factory}" if file == "robustbench" else f"{Path(file).stem}-{factory}"
    return Outside(name, model, ds, split, k)


def _no_outside_options(args: argparse.Namespace, command: str) -> None:
    """A run directory brings its own model, data and normalisation: the --model options are refused with it."""
    given = [f"--{k.replace('_', '-')}" for k in OUTSIDE_OPTIONS if getattr(args, k, None) is not None]
    if given:
        raise RobustlabError(
            f"{command}: {', '.join(given)} go with --model (a model robustlab did not train); a run directory "
            "brings its own model, data and normalisation."
        )


def _one_source(args: argparse.Namespace, command: str) -> None:
    if (args.target is None) == (args.model is None):
        raise RobustlabError(
            f"{command}: give a run directory or checkpoint, or --model FILE.py:FACTORY (or robustbench:NAME); "
            f"got {'both' if args.model else 'neither'}."
        )
    if args.model is None:
        _no_outside_options(args, command)
    elif not args.threat:
        raise RobustlabError(
            f"{command} --model: give the threat model, e.g. --threat linf:8/255 (allowed: linf:EPS, l2:EPS)."
        )


def cmd_eval(args: argparse.Namespace) -> int:
    from .config import FlagConfig
    from .distributed import World
    from .evaluate import evaluate, print_table

    _one_source(args, "eval")
    asked = _suite_arg(args.suite) if args.suite else None  # a mistyped suite is refused before anything loads
    world, device = World.from_env(args.device or "auto")  # under torchrun: the batches are shared between ranks
    if args.model:
        outside = _outside_target(args, device)
        model, split, num_classes, label, run_eval = outside.model, outside.split, outside.num_classes, outside.name, {}
        suite, threat = asked or "paper", args.threat
        out = Path(args.out) if args.out else Path("runs/outside") / outside.name
        name = "eval" if args.out else "eval_" + (suite if isinstance(suite, str) else "custom")
    else:
        stem, model, meta, ds, run_eval = _load_target(args.target, args.data_root, device)
        own = run_eval.get("suite", "paper")
        suite = asked or _suite_arg(own)
        # in the run directory only the run's own suite may write eval.json (the study reads it)
        name = (
            "eval"
            if args.out or suite == _suite_arg(own)
            else "eval_" + (suite if isinstance(suite, str) else "custom")
        )
        threat = args.threat or meta.get("threat")
        if threat is None:
            raise RobustlabError(f"{stem}.json records no threat model; pass --threat, e.g. --threat linf:8/255.")
        out = Path(args.out) if args.out else stem.parent
        split, num_classes, label = ds.split(args.split).head(args.n), ds.num_classes, stem.parent.name
    flags = None if args.no_flags else FlagConfig.model_validate(run_eval.get("flags", {}))
    with RunLock(out) if world.is_main else contextlib.nullcontext():
        result = evaluate(
            model,
            split,
            threat,
            suite,
            step=args.step if args.step is not None else run_eval.get("step"),
            step_ratio=run_eval.get("step_ratio", 0.25),
            batch_size=args.batch_size,
            seed=args.seed,
            device=device,
            quiet=args.quiet,
            num_classes=num_classes,
            flags=flags,
            state_path=out / f"{name}_state",
            world=world,
        )
        if not world.is_main:
            return 0
        result.save(out, name)
    print_table({label: result})
    print(f"wrote {out / (name + '.json')} and {out / (name + '.md')}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .distributed import resolve_device
    from .sweep import parse_eps, plot, sweep
    from .threat import ThreatModel

    suite = _suite_arg(args.suite)
    device = resolve_device(args.device or "auto")
    if args.model is None:
        _no_outside_options(args, "sweep")
        if args.threat:
            raise RobustlabError("sweep: --threat goes with --model; a run's norm and eps come from its checkpoint.")
        if not args.targets:
            raise RobustlabError("sweep: give run directories or checkpoints, and/or --model FILE.py:FACTORY.")
    elif not args.threat:
        raise RobustlabError("sweep --model: give its threat model, e.g. --threat linf:8/255 (the norm of the radii).")
    strays = [t for t in args.targets if not Path(t).exists() and t.replace(".", "", 1).replace("/", "", 1).isdigit()]
    if strays:
        raise RobustlabError(
            f"sweep: {', '.join(strays)} is not a run directory; radii go after --eps as one comma-separated "
            f"list, e.g. --eps 0.05,0.1,0.2."
        )
    loaded = [_load_target(t, args.data_root, device) for t in args.targets]
    missing = [str(stem) for stem, _, meta, _, _ in loaded if not meta.get("threat")]
    if missing:
        raise RobustlabError(f"sweep: {', '.join(missing)} record no threat model, so the norm is unknown.")
    threats = [ThreatModel.parse(meta["threat"]) for _, _, meta, _, _ in loaded]
    # each curve: (name, model, split, class count, step ratio)
    models = [
        (stem.parent.name, model, ds.split(args.split).head(args.n), ds.num_classes, run_eval.get("step_ratio", 0.25))
        for stem, model, _, ds, run_eval in loaded
    ]
    if args.model:
        outside = _outside_target(args, device)
        models.append((outside.name, outside.model, outside.split, outside.num_classes, 0.25))
        threats.append(ThreatModel.parse(args.threat))
    norm = threats[0].norm
    if any(t.norm != norm for t in threats):
        raise RobustlabError(
            f"sweep: the models were trained for different norms ({', '.join(sorted({t.norm for t in threats}))}); "
            f"sweep models of one norm at a time."
        )
    radii = parse_eps(args.eps, norm) if args.eps else [f * threats[0].eps for f in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)]
    parents = {stem.parent for stem, *_ in loaded}
    if args.out:
        out = Path(args.out)
    elif not parents:
        out = Path("runs/outside") / models[0][0]
    else:
        out = parents.pop() if len(parents) == 1 else Path(os.path.commonpath([str(p) for p in parents]))
    with RunLock(out):
        curves = {}
        for name, model, split, num_classes, step_ratio in models:
            if not args.quiet:
                print(f"{name}: {args.suite} at {len(radii)} radii")
            curves[name] = sweep(
                model,
                split,
                norm,
                radii,
                suite,
                step_ratio=step_ratio,
                batch_size=args.batch_size,
                seed=args.seed,
                device=device,
                num_classes=num_classes,
                quiet=args.quiet,
            )
        write_text_atomic(out / "sweep.json", json.dumps(curves, indent=2))
        n = next(iter(curves.values()))["n"]
        plot(
            curves,
            out / "robustness_curve.png",
            title=f"worst case over suite {args.suite!r}, {n} {args.split} points",
            mark=threats[0].eps if len({t.eps for t in threats}) == 1 else None,
        )
    for name, c in curves.items():
        print(f"{name}: " + ", ".join(f"{e:.4g}: {100 * a:.1f}%" for e, a in zip(c["eps"], c["worst_case"])))
    print(f"wrote {out / 'robustness_curve.png'} and {out / 'sweep.json'}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from .study import run_study

    only = [s.strip() for s in args.only.split(",")] if args.only else None
    report = run_study(
        args.config,
        overrides=args.set,
        out_root=args.out,
        data_root=args.data_root,
        device=args.device,
        quiet=args.quiet,
        only=only,
        jobs=args.jobs,
        nproc=args.nproc,
    )
    print(f"wrote {report}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from . import data
    from .analysis import ANALYSES, AnalysisContext
    from .checkpoint import load_model, resolve_checkpoint
    from .config import parse_override
    from .distributed import resolve_device
    from .threat import ThreatModel

    names = [w.strip() for w in args.what.split(",") if w.strip()]
    for name in names:
        ANALYSES.get(name)
    options = {}
    for text in args.set:
        keys, value = parse_override(text)
        options[".".join(keys)] = value
    _one_source(args, "analyze")
    device = resolve_device(args.device or "auto")
    if args.model:
        outside = _outside_target(args, device, whole_dataset=True)
        assert outside.dataset is not None  # whole_dataset: --data is read as a dataset too
        out = Path(args.out) if args.out else Path("runs/outside") / outside.name
        ctx = AnalysisContext(
            outside.model,
            outside.dataset,
            ThreatModel.parse(args.threat),
            out,
            {},
            device,
            seed=args.seed,
            quiet=args.quiet,
        )
    else:
        if args.out or args.threat:
            raise RobustlabError("analyze: --out and --threat go with --model; a run's analyses go to RUN/analysis/.")
        stem = resolve_checkpoint(args.target)
        model, meta = load_model(stem, device)
        ds_meta = meta["dataset"]
        ds = data.load(ds_meta["name"], root=args.data_root, **ds_meta.get("options", {}))
        out = stem.parent
        ctx = AnalysisContext(
            model, ds, ThreatModel.parse(meta["threat"]), out, meta, device, seed=args.seed, quiet=args.quiet
        )
    with RunLock(out):
        for name in names:
            accepted = set(ANALYSES.options(name, skip=("ctx",)))
            result = ANALYSES.create(name, ctx, **{k: v for k, v in options.items() if k in accepted})
            path = out / "analysis" / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(result, indent=2))
            print(f"{name}: " + ("; ".join(headline(result)) or "(no scalar results)") + f"\n  wrote {path}")
    return 0


def headline(result: dict, limit: int = 10) -> list[str]:
    """The first `limit` scalar numbers of an analysis result, by dotted key (lists and figures stay in the file)."""
    lines: list[str] = []

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if len(lines) >= limit:
                return
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                lines.append(f"{prefix}{key} {value:.4g}")

    walk(result, "")
    return lines


def _registries():
    """(title, registry, options that code passes rather than a config) for every kind of registered name."""
    from . import attacks, data, methods, models
    from .analysis import ANALYSES
    from .corruptions.registry import CORRUPTIONS
    from .evaluate import SUITES
    from .report import SECTIONS
    from .train import CALLBACKS

    shape = ("num_classes", "in_channels", "input_size", "mean", "std")
    return [
        ("dataset", data.DATASETS, ("root",)),
        ("model", models.MODELS, shape),
        ("robustbench architecture", models.ROBUSTBENCH, shape),  # --model robustbench:FAMILY-DEPTH[-WIDTH]
        ("method", methods.METHODS, ("threat",)),
        ("attack", attacks.ATTACKS, ("threat", *attacks.PROGRAMMATIC)),
        ("suite", SUITES, ()),
        ("analysis", ANALYSES, ("ctx",)),
        ("callback", CALLBACKS, ()),
        ("report section", SECTIONS, ("ctx",)),
        ("corruption", CORRUPTIONS, ()),
    ]


def cmd_list(args: argparse.Namespace) -> int:
    from .errors import unknown_name

    kinds = _registries()
    if args.name is None:
        for title, registry, _ in kinds:
            print(f"{title}s: {', '.join(registry.names()) or '(none)'}")
        return 0
    found = [(title, registry, skip) for title, registry, skip in kinds if args.name in registry]
    if not found:
        raise unknown_name("name", args.name, [n for _, r, _ in kinds for n in r.names()])
    for title, registry, skip in found:
        entry = registry.get(args.name)
        doc = (entry.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ") if callable(entry) else ""
        print(f"{title} {args.name}: {doc}".rstrip())
        if title == "suite":
            print("  attacks: " + ", ".join(map(str, entry())))
        elif title == "corruption":
            print(f"  family {entry.family}; parameters per severity (32×32 table): {list(entry.cifar)}")
        else:
            options = registry.options(args.name, skip=skip)
            for key, default in options.items():
                print(f"  {key} = {default!r}" if default is not None else f"  {key}")
            if not options:
                print("  (no options)")
    return 0


def cmd_vq(args: argparse.Namespace) -> int:
    import pydantic
    import torch

    from . import data
    from .config import parse_override, validation_message
    from .distributed import resolve_device
    from .report.dat import image_rows
    from .vq import VQTrainConfig, evaluate_vq, load_vq, save_vq, train_vq

    device = resolve_device(args.device or "auto")
    ds = data.load(args.dataset, root=args.data_root)
    if args.vq_command == "eval":
        vq, _ = load_vq(args.target, args.vqgan_config)
        split = ds.split(args.split).head(args.n)
        metrics = evaluate_vq(vq.to(device), split, batch_size=64)
        print(json.dumps({"split": args.split, "n": len(split), **metrics}, indent=2))
        return 0
    options = {}
    for text in args.set:
        keys, value = parse_override(text)
        options[".".join(keys)] = value
    if args.epochs is not None:
        options["epochs"] = args.epochs
    try:
        cfg = VQTrainConfig.model_validate(options)
    except pydantic.ValidationError as err:
        raise RobustlabError(validation_message("vq train --set", err, VQTrainConfig)) from None
    out = Path(args.out) if args.out else Path("runs/vq") / args.dataset
    with RunLock(out):
        vq, metrics = train_vq(ds.train, ds.val, cfg, device=device, quiet=args.quiet)
        save_vq(
            out / "vq", vq, {"train_config": cfg.model_dump(mode="json"), "dataset": args.dataset, "metrics": metrics}
        )
        x = ds.test.x[:12].to(device)
        with torch.no_grad():
            image_rows({"x": x, "Q(x)": vq.reconstruct(x)}, out / "reconstructions.png")
    print(
        f"wrote {out / 'vq.safetensors'}: val PSNR {metrics['psnr']:.2f} dB, perplexity {metrics['perplexity']:.1f}, "
        f"dead codes {metrics['dead_codes']}/{cfg.codebook_size} (usage {100 * metrics['usage']:.0f} %), "
        f"{metrics['train_seconds']:.0f} s"
    )
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "sweep": cmd_sweep,
    "study": cmd_study,
    "analyze": cmd_analyze,
    "vq": cmd_vq,
    "list": cmd_list,
}


def main(argv: list[str] | None = None) -> int:
    """Every failure leaves through here: one line on stderr (the traceback only with --debug or
    ROBUSTLAB_DEBUG=1); exit 2 for bad input, 3 for a diverged training, 1 for a robustlab bug."""
    from .distributed import shutdown

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # `torchrun ... -m robustlab -- train ...` and the same line without torchrun
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("ROBUSTLAB_DEBUG", "") not in ("", "0")
    torchrun_rank = int(os.environ.get("WORLD_SIZE", "1")) > 1
    from .processes import die_with_parent, keep_freed_memory

    keep_freed_memory()
    if torchrun_rank:  # a torchrun rank ends with its launcher
        die_with_parent()
    where = f"robustlab {args.command}"
    try:
        code = COMMANDS[args.command](args)
        if (
            shutdown() and torchrun_rank
        ):  # under torchrun: all ranks leave the process group together, then exit at once: Gloo's
            sys.stdout.flush()  # threads can still hold tensors, and the interpreter's teardown then aborts the rank
            sys.stderr.flush()  # (SIGABRT, "terminate called without an active exception") after its work is done
            os._exit(code)
        return code
    except KeyboardInterrupt:
        print(f"{where}: interrupted; {_continue_hint(args, argv)}", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            traceback.print_exc()
        if isinstance(e, RobustlabError):
            print(f"{where}: error: {e}", file=sys.stderr)
            return 2
        if isinstance(e, TrainingDiverged):
            print(f"{where}: training stopped: {e}", file=sys.stderr)
            return 3
        if isinstance(e, OSError):  # the file system said no: a full disk, a missing permission, ...
            print(f"{where}: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
            return 2
        print(
            f"{where}: internal error ({type(e).__name__}: {' '.join(str(e).split())}); this is a robustlab bug: "
            "please report it with the "
            f"traceback that --debug (or ROBUSTLAB_DEBUG=1) prints.",
            file=sys.stderr,
        )
        return 1


def _continue_hint(args: argparse.Namespace, argv: list[str]) -> str:
    """What was kept, and the command line that continues from it."""
    line = shlex.join(["robustlab", *argv])
    if args.command == "train":
        again = line if args.resume else line + " --resume"
        return f"the last finished epoch's checkpoint is kept; continue with: {again}"
    if args.command == "study":
        return f"finished runs, epochs and evaluation batches are kept; continue with the same command: {line}"
    if args.command == "eval":
        return f"finished attack batches are kept; continue with the same command: {line}"
    return f"run the same command again: {line}"


if __name__ == "__main__":
    sys.exit(main())
