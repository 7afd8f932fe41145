"""neosx: end-to-end differentiable optimisation of HEP analyses.

Relaxed cuts and histograms (:mod:`neosx.relax`) feed a JAX HistFactory likelihood
(:mod:`neosx.histfactory`) whose profile-likelihood fits are differentiated implicitly
(:mod:`neosx.infer`), so an analysis becomes one differentiable function of its parameters.

neosx does not switch JAX's float64 mode on at import. Statistics need it: call
``jax.config.update("jax_enable_x64", True)`` first (the CLI and the tests do); the
inference functions raise a clear error otherwise.
"""

from neosx import infer, metrics
from neosx.histfactory import HistFactory, build_spec
from neosx.relax import cut, hist, hist_sumw2, softmax_hist, window

__version__ = "0.1.0"

__all__ = [
    "HistFactory",
    "__version__",
    "build_spec",
    "cut",
    "hist",
    "hist_sumw2",
    "infer",
    "metrics",
    "softmax_hist",
    "window",
]
