"""neosx: end-to-end differentiable optimisation of HEP analyses.

Relaxed cuts and histograms (:mod:`neosx.relax`) feed a JAX HistFactory likelihood
(:mod:`neosx.histfactory`) whose profile-likelihood fits are differentiated implicitly
(:mod:`neosx.infer`), so an analysis becomes one differentiable function of its parameters.

neosx does not switch JAX's float64 mode on at import. Statistics need it: call
``jax.config.update("jax_enable_x64", True)`` first (the CLI and the tests do); the
inference functions raise a clear error otherwise.
"""

from neosx import infer, metrics
from neosx.analysis import Analysis
from neosx.config import load_config
from neosx.histfactory import HistFactory, build_spec
from neosx.relax import cut, hist, hist_sumw2, softmax_hist, window
from neosx.run import evaluate_run, export_workspace, run_study

__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "HistFactory",
    "__version__",
    "build_spec",
    "cut",
    "evaluate_run",
    "export_workspace",
    "hist",
    "hist_sumw2",
    "infer",
    "load_config",
    "metrics",
    "run_study",
    "softmax_hist",
    "window",
]
