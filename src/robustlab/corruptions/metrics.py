"""Corruption error, CE, mCE and relative mCE (Hendrycks & Dietterich, ICLR 2019, §3).

With E^f_{s,c} the top-1 error of model f under corruption c at severity s and E^f_clean its clean error:

    CE^f_c          = Σ_s E^f_{s,c} / Σ_s E^base_{s,c}
    relative CE^f_c = Σ_s (E^f_{s,c} − E^f_clean) / Σ_s (E^base_{s,c} − E^base_clean)
    mCE = mean_c CE_c,  relative mCE = mean_c relative CE_c           (reported in %)

The baseline is AlexNet for ImageNet-C (its published errors below) and, elsewhere, a model of the
same study (robustlab uses the study's standard-trained model).
"""

from __future__ import annotations

import math

from ..errors import RobustlabError
from .registry import SEVERITIES

# AlexNet's ImageNet-C error per corruption, averaged over the 5 severities (Hendrycks & Dietterich 2019;
# the values their evaluation code and later papers normalise by).
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
    "snow": 0.866816, "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592,
    "contrast": 0.853204, "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}  # fmt: skip
# AlexNet's clean ImageNet top-1 error (torchvision's AlexNet, 56.52 % top-1), for relative mCE. [approximate]
ALEXNET_CLEAN_ERROR = 0.4348


def corruption_errors(result: dict) -> dict[str, list[float]]:
    """{corruption: [error at each evaluated severity]} from a `corruption_accuracy` result."""
    return {c: [1 - a for a in accs] for c, accs in result["acc"].items()}


def alexnet_baseline() -> dict:
    """The published AlexNet numbers in the shape of a `corruption_accuracy` result: one entry per corruption,
    the mean over severities 1–5."""
    return {
        "clean_acc": 1 - ALEXNET_CLEAN_ERROR,
        "acc": {c: [1 - e] for c, e in ALEXNET_ERRORS.items()},
        "severities": list(SEVERITIES),
    }


def _severities(result: dict) -> list[int]:
    """The severities a result was evaluated at: its `severities`, else 1..k for k accuracies per corruption."""
    if result.get("severities"):
        return list(result["severities"])
    return list(range(1, len(next(iter(result["acc"].values()), [])) + 1))


def _check_comparable(result: dict, baseline: dict) -> None:
    """Raise unless `result` and `baseline` cover the same corruptions at the same severities."""
    mine, base = _severities(result), _severities(baseline)
    if mine != base:
        raise RobustlabError(
            f"mce: the result was evaluated at severities {mine} and the baseline at {base}; CE compares "
            "errors summed over the same severities. Evaluate both at the same severities."
        )
    only = [
        (sorted(set(a["acc"]) - set(b["acc"])), where)
        for a, b, where in ((result, baseline, "only in the result"), (baseline, result, "only in the baseline"))
    ]
    if any(names for names, _ in only):
        parts = "; ".join(f"{', '.join(names)} {where}" for names, where in only if names)
        raise RobustlabError(
            f"mce: the result and the baseline cover different corruptions ({parts}); mCE averages over "
            "one set of corruptions. Evaluate both on the same corruptions."
        )


def mce(result: dict, baseline: dict) -> dict:
    """CE and relative CE per corruption, mCE and relative mCE (in %) of `result` against `baseline`.

    Both are `corruption_accuracy` results (or `alexnet_baseline()`) over the same corruptions and
    severities, else a RobustlabError names what differs. A relative CE whose baseline denominator is
    ≤ 0 (the baseline loses nothing to that corruption) is undefined (NaN) and left out of the relative mean.
    """
    _check_comparable(result, baseline)
    mine, base = corruption_errors(result), corruption_errors(baseline)
    e_clean, b_clean = 1 - result["clean_acc"], 1 - baseline["clean_acc"]
    ce, rel = {}, {}
    for c in mine:
        m, b = _mean(mine[c]), _mean(base[c])
        ce[c] = 100 * m / b if b > 0 else math.nan
        rel[c] = 100 * (m - e_clean) / (b - b_clean) if b - b_clean > 0 else math.nan
    return {
        "ce": ce,
        "relative_ce": rel,
        "mce": _mean([v for v in ce.values() if not math.isnan(v)]),
        "relative_mce": _mean([v for v in rel.values() if not math.isnan(v)]),
        "corruptions": len(ce),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
