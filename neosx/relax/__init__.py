"""Relaxations of hard analysis operations: soft cuts and differentiable histograms."""

from neosx.relax.cuts import cut, window
from neosx.relax.hist import METHODS, hist, hist_sumw2, softmax_hist

__all__ = ["METHODS", "cut", "hist", "hist_sumw2", "softmax_hist", "window"]
