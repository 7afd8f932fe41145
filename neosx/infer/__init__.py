"""Differentiable statistical inference on :class:`~neosx.histfactory.HistFactory` models.

Fits are solved by projected Newton and differentiated implicitly; every quantity here is
jit-able, vmap-able and differentiable with respect to the yields (and so everything
upstream of them).
"""

from neosx.infer.cls import expected_cls, hypotest
from neosx.infer.fisher import (
    FitCovariance,
    covariance,
    fisher_information,
    fit_covariance,
    fit_poi_uncertainty,
    poi_uncertainty,
)
from neosx.infer.fit import FitError, fit
from neosx.infer.intervals import ProfileScan, cls_scan, profile_scan, upper_limit
from neosx.infer.limits import discovery_significance, expected_upper_limit
from neosx.infer.teststat import test_statistic
from neosx.infer.toys import ToyResult, toy_hypotest

__all__ = [
    "FitCovariance",
    "FitError",
    "ProfileScan",
    "ToyResult",
    "cls_scan",
    "covariance",
    "discovery_significance",
    "expected_cls",
    "expected_upper_limit",
    "fisher_information",
    "fit",
    "fit_covariance",
    "fit_poi_uncertainty",
    "hypotest",
    "poi_uncertainty",
    "profile_scan",
    "test_statistic",
    "toy_hypotest",
    "upper_limit",
]
