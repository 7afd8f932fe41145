"""Agreement of neosx.histfactory with pyhf (numpy backend) on the published workspaces.

For each workspace of ``shared/data/workspaces`` (as in ``bench_histfactory.py``): the
largest relative difference of ``logpdf`` (eager and jitted) and of ``expected_data`` from
pyhf's at the suggested init and at 20 random points inside the suggested bounds where
pyhf's logpdf is finite (points where a histosys drives a rate negative, NaN in pyhf, are
counted and skipped), and the largest relative difference of the jitted gradient from
central finite differences of the jitted logpdf (step 1e-6 max(1, |par|)), over every
parameter, at a point near the init and off the interpolation kinks.

``tests/test_histfactory_workspaces.py`` asserts the same quantities to 1e-8 (1e-5 for the
gradient); this prints the figures themselves.

Run: ``python benchmarks/agreement_histfactory.py``.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import numpy as np
import pyhf
from bench_histfactory import published

from neosx.histfactory import HistFactory


def max_rel(a: Any, b: Any) -> float:
    """Largest ``|a - b| / |b|`` over the elements."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def agreement(workspace: dict[str, Any], patches: list[Any]) -> dict[str, float]:
    """The figures of one workspace."""
    ws = pyhf.Workspace(workspace)
    reference = ws.model(patches=patches)
    data = np.asarray(ws.data(reference), dtype=np.float64)
    model = HistFactory(reference)
    logpdf = jax.jit(model.logpdf)
    init = np.asarray(reference.config.suggested_init(), dtype=np.float64)
    bounds = np.asarray(reference.config.suggested_bounds())
    rng = np.random.default_rng(7)
    result = {"npars": init.size, "points": 0, "undefined": 0, "logpdf": 0.0, "jit": 0.0}
    result["expected_data"] = 0.0
    while result["points"] < 21:
        pars = init if result["points"] == 0 else rng.uniform(*bounds.T)
        with np.errstate(invalid="ignore"):
            expected = reference.logpdf(pars, data)[0]
        if not np.isfinite(expected):
            result["undefined"] += 1
            continue
        result["logpdf"] = max(result["logpdf"], max_rel(model.logpdf(pars, data), expected))
        result["jit"] = max(result["jit"], max_rel(logpdf(pars, data), expected))
        result["expected_data"] = max(
            result["expected_data"],
            max_rel(model.expected_data(pars), reference.expected_data(pars)),
        )
        result["points"] += 1

    pars = init + rng.uniform(0.05, 0.3, init.size) * rng.choice([-1.0, 1.0], init.size)
    grad = np.asarray(jax.jit(jax.grad(model.logpdf))(pars, data))
    numeric = np.empty_like(grad)
    for i in range(init.size):
        step = 1e-6 * max(1.0, abs(pars[i]))
        up, down = pars.copy(), pars.copy()
        up[i] += step
        down[i] -= step
        numeric[i] = (float(logpdf(up, data)) - float(logpdf(down, data))) / (2 * step)
    scale = np.max(np.abs(grad))
    result["gradient"] = float(np.max(np.abs(grad - numeric) / np.maximum(np.abs(grad), scale)))
    return result


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    # pyhf 0.7.6 validates with jsonschema.RefResolver, deprecated since jsonschema 4.18.
    warnings.filterwarnings("ignore", message="jsonschema.RefResolver is deprecated")
    pyhf.set_backend("numpy")
    print(
        "| workspace | pars | points (skipped: pyhf NaN) | logpdf eager / jit | "
        "expected_data | gradient vs central FD |"
    )
    print("|" + "---|" * 6)
    for name, (workspace, patches) in published().items():
        r = agreement(workspace, patches)
        print(
            f"| {name} | {r['npars']} | {r['points']} ({r['undefined']}) "
            f"| {r['logpdf']:.1e} / {r['jit']:.1e} | {r['expected_data']:.1e} "
            f"| {r['gradient']:.1e} |"
        )
    print(
        "\nrelative differences, largest over the points (gradient: over every parameter, "
        "relative to max(|component|, max |gradient|))"
    )


if __name__ == "__main__":
    main()
