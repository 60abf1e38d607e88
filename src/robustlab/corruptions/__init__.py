"""Common corruptions (Hendrycks & Dietterich, ICLR 2019) at 5 severities, and corruption robustness.

- `corrupt(x, name, severity, seed=...)`: one corruption of a batch N×C×H×W in [0, 1] (same shape, in
  [0, 1]); `names()` lists them, `BENCHMARK` is the 15 of ImageNet-C / CIFAR-10-C in their order.
- `corruption_accuracy(model, split, ...)`: accuracy per corruption and severity, generated on the fly
  (every model sees the same corrupted images for a given seed) or read from CIFAR-10-C / ImageNet-C
  on disk (`source`).
- `metrics.mce(result, baseline)`: CE, mCE and relative mCE against a baseline model's result or
  `metrics.alexnet_baseline()`.
Frost needs the frost photographs under <data root>/frost/; without them it is skipped with a note.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from .. import seeds
from ..data import Split, batches, check_images, data_root
from ..errors import RobustlabError
from ..models import eval_mode
from ..registry import import_submodules
from ..ui import progress_bar
from .registry import CORRUPTIONS, SEVERITIES, Corruption

import_submodules(__name__, __path__)  # every family module registers its corruptions

BENCHMARK = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
Source = Literal["generate", "cifar_c", "imagenet_c"]


def names() -> list[str]:
    return [c for c in BENCHMARK if c in CORRUPTIONS]


def corrupt(
    x: torch.Tensor,
    name: str,
    severity: int,
    *,
    seed: int = 0,
    generator: torch.Generator | None = None,
    root: str | Path | None = None,
) -> torch.Tensor:
    """Corruption `name` at `severity` (1..5) of images x (N×C×H×W in [0, 1]) -> same shape, in [0, 1].

    Randomness comes from `generator`, else from `seed` (the same seed gives the same corruption).
    `root` is the data root where corruptions that need files (frost) look for them.
    """
    spec: Corruption = CORRUPTIONS.get(name)
    if severity not in SEVERITIES:
        raise RobustlabError(f"severity={severity!r}; allowed: 1, 2, 3, 4, 5.")
    check_images(f"corruption {name}", x)
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(seed)
    c, s = spec.params(severity, int(x.shape[-1]))
    with torch.no_grad():
        return spec.fn(x, c, s, generator, data_root(root)).clamp(0.0, 1.0)


@torch.no_grad()
def corruption_accuracy(
    model: torch.nn.Module,
    split: Split,
    *,
    corruptions: list[str] | None = None,
    severities: tuple[int, ...] = SEVERITIES,
    seed: int = 0,
    batch_size: int = 500,
    source: Source = "generate",
    path: str | Path | None = None,
    class_names: list[str] | None = None,
    root: str | Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Accuracy of `model` (eval mode) per corruption and severity.

    source="generate" corrupts `split` (the images are the same for every model given `seed`);
    "cifar_c" reads <path>/<corruption>.npy (n = len(split) images per severity, labels from the files);
    "imagenet_c" reads <path>/<corruption>/<severity>/<class>/ with `class_names`. Corruptions whose
    files are missing are skipped and listed in `skipped`.
    Returns {"clean_acc", "acc": {corruption: [acc per severity]}, "severities", "mean_acc", "skipped", "n",
    "per_image_acc" (generated only: each image's share of correct (corruption, severity) pairs)}.
    """
    from . import readers

    device = next(model.parameters()).device
    wanted = list(corruptions) if corruptions is not None else names()
    for name in wanted:
        CORRUPTIONS.get(name)
    if source != "generate" and path is None:
        raise RobustlabError(f"corruption source {source!r} needs a path to the benchmark's folder.")

    hits_per_image = torch.zeros(len(split))
    conditions = 0

    def accuracy(data: Split) -> float:
        hits = torch.cat([(model(x).argmax(1) == y).cpu() for x, y in batches(data, batch_size, device=device)])
        if len(hits) == len(hits_per_image):
            hits_per_image.add_(hits.float())
        return float(hits.float().mean()) if len(hits) else float("nan")

    with eval_mode(model):
        out: dict[str, Any] = {
            "clean_acc": accuracy(split),
            "acc": {},
            "severities": list(severities),
            "skipped": {},
            "n": len(split),
            "source": source,
        }
        hits_per_image.zero_()
        with progress_bar(disable=quiet) as bar:
            task = bar.add_task("corruptions", total=len(wanted) * len(severities), info="")
            for name in wanted:
                accs = []
                try:
                    for s in severities:
                        if source == "generate":
                            g = torch.Generator(device=device).manual_seed(seeds.corruption(seed, name, s))
                            xs = torch.cat(
                                [
                                    corrupt(x, name, s, generator=g, root=root)
                                    for x, _ in batches(split, batch_size, device=device)
                                ]
                            )
                            data = Split(xs, split.y)
                        elif source == "cifar_c":
                            assert path is not None  # checked above
                            data = readers.read_cifar_c(path, name, s, n=len(split))
                        else:
                            assert path is not None
                            data = readers.read_imagenet_c(
                                path,
                                name,
                                s,
                                class_names or [],
                                int(split.x.shape[-1]),
                                grayscale=split.x.shape[1] == 1,
                            )
                        accs.append(accuracy(data))
                        conditions += 1
                        bar.update(task, advance=1, info=f"{name} {s}")
                except RobustlabError as err:
                    if not CORRUPTIONS.get(name).needs_files and source == "generate":
                        raise
                    out["skipped"][name] = str(err)
                    bar.update(task, advance=len(severities) - len(accs))
                    continue
                out["acc"][name] = accs
    done = [a for accs in out["acc"].values() for a in accs]
    out["mean_acc"] = sum(done) / len(done) if done else float("nan")
    # per test image: the share of evaluated (corruption, severity) pairs it is classified correctly under
    # (for paired comparisons of models; left out when the benchmark's image counts differ from the split)
    if conditions and source == "generate":
        out["per_image_acc"] = [round(v, 4) for v in (hits_per_image / conditions).tolist()]
    return out


__all__ = ["BENCHMARK", "CORRUPTIONS", "SEVERITIES", "corrupt", "corruption_accuracy", "names"]
