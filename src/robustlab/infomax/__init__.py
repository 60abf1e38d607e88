"""Mutual-information machinery for Zhu, Zhang & Evans ("Learning Adversarially Robust Representations via
Worst-Case Mutual Information Maximization", ICML 2020, arXiv 2002.11798): lower bounds, critics, estimator,
worst-case PGD.

It sits left of `methods` (the `mi` / `wcmi` objectives train with it) and of `analysis` (the
`vulnerability` analysis in `analysis/mi.py` fits critics with it), and knows no model: the
representation is whatever tensor z the caller pairs with the inputs x. "The code" in these modules is
the paper's official code, schzhu/learning-adversarially-robust-representations.
"""

from .bounds import BOUNDS, DV_VARIANTS, dv_bound, infonce_bound, jsd_bound
from .critics import ConcatCritic, LocalGlobalCritic, make_critic
from .estimator import MIEstimate, MIEstimator
from .registry import CRITICS
from .worst_case import minimise_mi

__all__ = [
    "BOUNDS",
    "CRITICS",
    "DV_VARIANTS",
    "ConcatCritic",
    "LocalGlobalCritic",
    "MIEstimate",
    "MIEstimator",
    "dv_bound",
    "infonce_bound",
    "jsd_bound",
    "make_critic",
    "minimise_mi",
]
