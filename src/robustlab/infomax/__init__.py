"""Mutual-information machinery for Zhu et al. (paper 001): lower bounds, critics, estimator, worst-case PGD.

It sits left of `methods` (the `mi` / `wcmi` objectives train with it) and of `analysis` (the
`vulnerability` analysis in `analysis/mi.py` fits critics with it), and knows no model: the
representation is whatever tensor z the caller pairs with the inputs x.
"""

from .bounds import BOUNDS, DV_VARIANTS, dv_bound, infonce_bound, jsd_bound
from .critics import ConcatCritic, LocalGlobalCritic, make_critic
from .estimator import MIEstimate, MIEstimator
from .registry import CRITICS
from .worst_case import minimise_mi

__all__ = ["BOUNDS", "CRITICS", "ConcatCritic", "DV_VARIANTS", "LocalGlobalCritic", "MIEstimate", "MIEstimator",
           "dv_bound", "infonce_bound", "jsd_bound", "make_critic", "minimise_mi"]
