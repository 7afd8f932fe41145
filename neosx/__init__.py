"""neosx: end-to-end differentiable optimisation of HEP analyses.

Relaxed cuts and histograms (:mod:`neosx.relax`) feed a JAX HistFactory likelihood whose
profile-likelihood fits are differentiated implicitly, so an analysis becomes one
differentiable function of its parameters.

neosx does not switch JAX's float64 mode on at import. Statistics need it: call
``jax.config.update("jax_enable_x64", True)`` first (the CLI and the tests do).
"""

from neosx.relax import cut, hist, hist_sumw2, softmax_hist, window

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "cut",
    "hist",
    "hist_sumw2",
    "softmax_hist",
    "window",
]
