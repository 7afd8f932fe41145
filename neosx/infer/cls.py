"""CLs hypothesis tests in the asymptotic approximation, with pyhf's conventions.

The test statistic is compared, in ``sqrt(q)`` space, with its asymptotic distributions
under signal+background (shifted by ``-sqrt(q_A)``) and background only (unshifted), where
``q_A`` is the statistic on the background-only Asimov data. ``CLs = CLs+b / CLb``; the
expected band evaluates the same ratio at the background-only quantiles
``n = 2, 1, 0, -1, -2``: ``CLs_n = Phi(-(n + sqrt(q_A))) / Phi(-n)``. ``hypotest`` also
dispatches to the toy-based calculator of :mod:`neosx.infer.toys`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr
from jax.typing import ArrayLike

from neosx.histfactory import HistFactory
from neosx.histfactory._checks import checked_data
from neosx.infer.fit import checked, fit_causes, fit_solution, require_float64
from neosx.infer.teststat import (
    TestStat,
    checked_mu,
    checked_test_stat,
    poi_name,
    sqrt_q,
    statistic,
)

__all__ = [
    "CALCULATORS", "N_SIGMA", "asimov_data", "asimov_pars", "asymptotic_cls",
    "asymptotic_expected", "expected_cls", "hypotest", "profiled_asimov_q",
]

N_SIGMA = (2.0, 1.0, 0.0, -1.0, -2.0)
"""Order of the expected band, as pyhf returns it (CLs at +2 sigma ... -2 sigma)."""
def asimov_pars(model: HistFactory, mu: ArrayLike) -> jax.Array:
    """The parameters that generate Asimov data: the suggested init with the POI at ``mu``."""
    pars = jnp.asarray(model.config.suggested_init, jnp.float64)
    return pars.at[model.config.poi_index].set(mu)


def asimov_data(model: HistFactory, mu: ArrayLike, yields: Any = None) -> jax.Array:
    """Asimov data (main + auxiliary) at the suggested init with the POI set to ``mu``."""
    return model.expected_data(asimov_pars(model, mu), yields=yields, include_auxdata=True)


def profiled_asimov_q(
    model: HistFactory, mu_test: ArrayLike, mu_asimov: float, yields: Any = None
) -> jax.Array:
    """``t_mu_test`` on Asimov data generated at ``mu_asimov`` (nuisances at their init).

    The free fit to Asimov data is known exactly: the generating parameters, where the
    data equal their expectation, so the fits' objective (minus the log-likelihood ratio to
    the saturated model) is 0 there, as is its derivative w.r.t. the yields. Only the fit
    with the POI fixed at ``mu_test`` is run, and ``t = 2 NLL_constrained``.
    """
    require_float64()
    yields = model.prepare(yields)
    data = asimov_data(model, mu_asimov, yields)
    fixed = {poi_name(model): jnp.asarray(mu_test, jnp.float64)}
    constrained = fit_solution(model, data, yields=yields, fixed=fixed)
    q = jnp.maximum(2.0 * constrained.value, 0.0)
    causes = fit_causes(model, data, yields, fixed=fixed)
    return checked(q, constrained.converged, "Asimov fit", causes)


def asymptotic_cls(q: jax.Array, qa: jax.Array, test_stat: TestStat) -> jax.Array:
    """Observed CLs = CLs+b / CLb from ``q`` and ``q_A`` in ``sqrt(q)`` space (``q~``: Cowan
    et al. eq. 65); for ``q0`` the discovery p-value ``p0 = CLs+b``, as pyhf reports it."""
    root_q, root_qa = sqrt_q(q), sqrt_q(qa)
    stat = root_q - root_qa
    if test_stat == "qtilde":
        stat = jnp.where(root_q <= root_qa, stat, (q - qa) / (2.0 * root_qa))
    cl_b = 1.0 if test_stat == "q0" else ndtr(-stat)
    return ndtr(-(stat + root_qa)) / cl_b


def asymptotic_expected(qa: jax.Array, test_stat: TestStat = "qtilde") -> jax.Array:
    """(..., 5) expected CLs at ``n = 2, 1, 0, -1, -2`` sigma (pyhf's order) from ``q_A``
    (...): ``Phi(-(n + sqrt(q_A))) / Phi(-n)``; for ``q0`` the expected p0 (no ratio)."""
    n = jnp.asarray(N_SIGMA, jnp.float64)
    cl_b = 1.0 if test_stat == "q0" else ndtr(-n)
    return ndtr(-(n + sqrt_q(qa)[..., None])) / cl_b


def expected_cls(
    model: HistFactory, mu: ArrayLike = 1.0, *, yields: Any = None, band: bool = False
) -> jax.Array:
    """Median expected CLs of the hypothesis ``mu`` for background-only data (q~_mu).

    Uses the background-only Asimov data at the nuisance parameters' init values, as neos
    and relaxed do; equal to pyhf's expected CLs of ``hypotest(mu, asimov, model)``.

    Args:
        model: The likelihood (with a POI whose lower bound is 0).
        mu: Signal strength tested.
        yields: Optional yields override; the result is differentiable w.r.t. it.
        band: If True, return the 5 values at +2, +1, 0, -1, -2 sigma (pyhf's order).

    Returns:
        Scalar CLs, or (5,) with ``band=True``.

    Raises:
        ValueError: ``mu`` not a scalar or (concrete) outside the POI's bounds, or the
            background-only ``mu = 0`` outside them; invalid ``yields`` (see
            :meth:`~neosx.histfactory.HistFactory.prepare`).
        FitError: (eager) the Asimov fit did not converge.

    Example:
        >>> nx.infer.expected_cls(model, 1.0, yields=yields)  # doctest: +SKIP
    """
    require_float64()
    mu = checked_mu(model, mu)
    checked_mu(model, 0.0, "the background-only mu")
    expected = asymptotic_expected(profiled_asimov_q(model, mu, 0.0, yields))
    return expected if band else expected[N_SIGMA.index(0.0)]


CALCULATORS: tuple[str, ...] = ("asymptotics", "toybased")
"""The ``calctype`` values of :func:`hypotest`, as pyhf's."""


def hypotest(
    mu: ArrayLike, data: ArrayLike, model: HistFactory, *, test_stat: TestStat = "qtilde",
    yields: Any = None, return_expected_set: bool = False, calctype: str = "asymptotics",
    ntoys: int = 2000, seed: Any = 0,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Observed CLs of the hypothesis ``mu`` (and the expected set), as ``pyhf.infer.hypotest``.

    ``calctype="asymptotics"`` (default): the asymptotic formulae, the background-only Asimov
    data generated from a fit to ``data`` with the POI fixed at 0 (1 for ``q0``), exactly as
    pyhf's ``AsymptoticCalculator``. ``calctype="toybased"``: ``ntoys`` pseudo-experiments per
    hypothesis, generated from the fits to ``data`` with the POI fixed at ``mu`` and at 0 (1
    for ``q0``) and fitted in one jitted map, as pyhf's ``ToyCalculator``
    (:func:`~neosx.infer.toys.toy_hypotest`, which also returns CLs+b, CLb and the toys'
    statistics).

    Args:
        mu: Tested signal strength.
        data: Observed main counts then auxiliary data.
        model: The likelihood.
        test_stat: ``"qtilde"`` (default), ``"q"`` or ``"q0"``.
        yields: Optional yields override.
        return_expected_set: Also return the expected CLs at +2 ... -2 sigma.
        calctype: ``"asymptotics"`` or ``"toybased"``.
        ntoys: Pseudo-experiments per hypothesis (``"toybased"``; a Python int, static).
        seed: ``"toybased"``: an int or a JAX PRNG key (``jax.random.key``) for the toys.

    Returns:
        CLs, or ``(CLs, (5,) expected set)``; for ``"q0"`` the discovery p-value p0 = CLs+b
        and its expected set instead, as pyhf. Toy-based values carry the binomial error
        ``sqrt(p (1 - p) / ntoys)`` of each tail fraction.

    Raises:
        ValueError: Unknown ``calctype`` or ``test_stat``; ``ntoys`` not an int >= 1 or
            ``seed`` not an int or key (``"toybased"``); ``mu`` not a scalar or (concrete)
            outside the POI's bounds, as is the POI value of the background-only fit (0, or 1
            for ``"q0"``); invalid ``data`` or ``yields`` (see :func:`~neosx.infer.fit`).
        FitError: (eager) a fit did not converge.

    Example:
        >>> cls, band = nx.infer.hypotest(1.0, data, model, return_expected_set=True,
        ...                               calctype="toybased", ntoys=1000)  # doctest: +SKIP
    """
    require_float64()
    if calctype not in CALCULATORS:
        raise ValueError(f"calctype must be one of {CALCULATORS}, got {calctype!r}")
    checked_test_stat(test_stat)
    if calctype == "toybased":
        from neosx.infer.toys import toy_hypotest  # toys imports N_SIGMA from here

        toys = toy_hypotest(mu, data, model, test_stat=test_stat, yields=yields,
                            ntoys=ntoys, seed=seed)
        if test_stat == "q0":
            observed, expected = toys.clsb, toys.expected_clsb
        else:
            observed, expected = toys.cls, toys.expected_cls
        return (observed, expected) if return_expected_set else observed
    asimov_mu = 1.0 if test_stat == "q0" else 0.0
    mu = checked_mu(model, 0.0 if test_stat == "q0" else mu)  # q0 tests 0
    checked_mu(model, asimov_mu, "the Asimov fit's mu")
    yields = model.prepare(yields)
    data = jnp.asarray(checked_data(model.config, data), jnp.float64)
    q, _ = statistic(mu, data, model, test_stat, yields)
    fixed = {poi_name(model): asimov_mu}
    bkg = fit_solution(model, data, yields=yields, fixed=fixed)
    asimov = model.expected_data(bkg.pars, yields=yields, include_auxdata=True)
    qa, _ = statistic(mu, asimov, model, test_stat, yields)
    causes = fit_causes(model, data, yields, fixed=fixed)
    cls = checked(asymptotic_cls(q, qa, test_stat), bkg.converged, "Asimov fit", causes)
    if not return_expected_set:
        return cls
    return cls, asymptotic_expected(qa, test_stat)
