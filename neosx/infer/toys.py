"""Toy-based CLs hypothesis tests, as pyhf's ``ToyCalculator`` (``calctype="toybased"``).

Pseudo-experiments are drawn from the model at the parameters of two fits to the observed
data, as in the LHC Higgs combination procedure and pyhf: the POI fixed at the tested ``mu``
(signal+background toys) and at 0 (background-only toys; 1 for ``q0``, whose tested value is
0). Each toy's main counts are ``Poisson(expected rate)``, its auxiliary data ``Normal(theta,
sigma)`` for Gaussian constraints and ``Poisson(gamma * tau)`` for Poisson (shapesys) ones.
The test statistic of every toy is computed as for the observed data, and the p-values are
tail fractions of the two toy distributions, with pyhf's conventions:
``CLs+b = #(q_sb >= q_obs) / N``, ``CLb = #(q_b >= q_obs) / N``, ``CLs = CLs+b / CLb``. The
expected set is the ``100 Phi(-n)`` percentiles (``n = 2, 1, 0, -1, -2``, linear
interpolation as ``numpy.percentile``) of the CLs (``q0``: CLs+b) of each background-only toy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr
from jax.typing import ArrayLike

from neosx.histfactory import HistFactory
from neosx.histfactory._checks import checked_data
from neosx.infer.cls import N_SIGMA
from neosx.infer.fit import checked, fit_causes, fit_solution, require_float64
from neosx.infer.teststat import TestStat, checked_mu, checked_test_stat, poi_name, statistic

__all__ = ["TIE_TOLERANCE", "ToyResult", "checked_ntoys", "checked_seed", "sample_toys",
           "toy_hypotest"]

TIE_TOLERANCE = 1e-9
"""Toy statistics within this (relative to ``max(1, |q|)``) below a value count as ties
(``>=``). pyhf's fits of identical data from the same start give bit-identical statistics;
neosx starts each toy's fits at its generating parameters, so a toy equal to the observed data
(likely for counts without Gaussian auxiliary data) reproduces ``q_obs`` only to the fits'
round-off (~1e-12)."""


class ToyResult(NamedTuple):
    """Result of :func:`toy_hypotest` (NaN everywhere if a fit did not converge, under jit).

    Attributes:
        cls: Observed ``CLs = CLs+b / CLb``.
        clsb: Observed ``CLs+b``: fraction of signal+background toys with ``q >= q_obs``.
        clb: Observed ``CLb``: fraction of background-only toys with ``q >= q_obs``.
        expected_cls: (5,) expected CLs at +2, +1, 0, -1, -2 sigma (pyhf's order).
        expected_clsb: (5,) expected CLs+b, same order (the expected set pyhf reports for
            ``q0``).
        q_obs: Test statistic of the observed data.
        q_sb: (ntoys,) test statistics of the signal+background toys.
        q_b: (ntoys,) test statistics of the background-only toys.
    """

    cls: jax.Array
    clsb: jax.Array
    clb: jax.Array
    expected_cls: jax.Array
    expected_clsb: jax.Array
    q_obs: jax.Array
    q_sb: jax.Array
    q_b: jax.Array


def checked_ntoys(ntoys: Any) -> int:
    """``ntoys`` as a positive Python int (it sets array shapes), or a ValueError."""
    if isinstance(ntoys, bool) or not isinstance(ntoys, int | np.integer) or ntoys < 1:
        raise ValueError(f"ntoys must be an int >= 1, got {ntoys!r}")
    return int(ntoys)


def checked_seed(seed: Any) -> jax.Array:
    """A typed PRNG key from ``seed``: an int, an integer scalar array (may be traced), a typed
    key (``jax.random.key``) or a raw ``uint32`` (2,) key (``jax.random.PRNGKey``).

    Raises:
        ValueError: e.g. ``"seed must be an int or a jax PRNG key, got 1.5"``.
    """
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        if not -(2**63) <= int(seed) < 2**64:
            raise ValueError(f"seed must fit in 64 bits, got {seed!r}")
        return jax.random.key(int(seed))
    if isinstance(seed, jax.Array | np.ndarray):
        if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key) and seed.shape == ():
            return seed
        if seed.dtype == np.uint32 and seed.shape == (2,):
            return jax.random.wrap_key_data(seed)
        if jnp.issubdtype(seed.dtype, jnp.integer) and seed.shape == ():
            return jax.random.key(seed)
    raise ValueError(f"seed must be an int or a jax PRNG key, got {seed!r}")


def sample_toys(
    model: HistFactory, pars: ArrayLike, key: jax.Array, ntoys: int, yields: Any = None
) -> jax.Array:
    """Pseudo-experiments drawn from the model at ``pars``, as pyhf's ``make_pdf(pars).sample``.

    Args:
        model: The likelihood.
        pars: (npars,) generating parameters.
        key: A JAX PRNG key.
        ntoys: Number of pseudo-experiments (static).
        yields: Optional yields override (rates, Gaussian widths and shapesys ``tau`` follow it).

    Returns:
        (ntoys, nmaindata + nauxdata): main counts ``Poisson(rate)``, then auxiliary data
        ``Normal(theta, sigma)`` (Gaussian constraints) or ``Poisson(gamma * tau)`` (Poisson).
    """
    yields = model.prepare(yields)
    n_main, n_data = model.config.nmaindata, model.config.nmaindata + model.config.nauxdata
    expected = model.expected_data(pars, yields=yields, include_auxdata=True)
    normal_aux, normal_par = model.gaussian_constraints
    normal = n_main + normal_aux
    counted = np.setdiff1d(np.arange(n_data), normal)
    poisson_key, normal_key = jax.random.split(key)
    counts = jax.random.poisson(poisson_key, expected[counted], (ntoys, counted.size))
    sigma = jax.lax.rsqrt(model.constraint_information(pars, yields)[normal_par])
    noise = jax.random.normal(normal_key, (ntoys, normal.size), jnp.float64)
    toys = jnp.zeros((ntoys, n_data), jnp.float64).at[:, counted].set(counts.astype(jnp.float64))
    return toys.at[:, normal].set(expected[normal] + sigma * noise)


def _toy_statistic(
    mu: jax.Array, data: jax.Array, init: jax.Array, model: HistFactory, test_stat: TestStat,
    yields: Any,
) -> tuple[jax.Array, jax.Array]:
    """``(q, converged)`` of one toy: :func:`~neosx.infer.teststat.statistic`, with both fits
    started at the toy's generating parameters, near its minimum (fewer Newton iterations than
    from the suggested init, and the same minimum), and the fit with the POI fixed run only
    where the statistic is not 0 by definition (``mu_hat > mu``; ``q0``: ``mu_hat < 0``)."""
    free = fit_solution(model, data, yields=yields, init=init)
    mu_hat = free.pars[model.config.poi_index]
    zero = (mu_hat < 0.0) if test_stat == "q0" else (mu_hat > mu)

    def statistic_of_fits() -> tuple[jax.Array, jax.Array]:
        constrained = fit_solution(model, data, yields=yields, fixed={poi_name(model): mu},
                                   init=init)
        t = jnp.maximum(2.0 * (constrained.value - free.value), 0.0)
        return t, constrained.converged & free.converged

    return jax.lax.cond(zero, lambda: (jnp.zeros_like(free.value), free.converged),
                        statistic_of_fits)


def _map_toys(fn: Any, *xs: jax.Array) -> Any:
    """``fn`` over the leading axis of ``xs``: in one ``vmap`` on accelerators; on CPU one toy
    at a time (``lax.map``), since a vmapped fit computes both sides of each of its branches for
    every toy and iterates as long as the slowest toy does, which on CPU costs more than the
    batching saves."""
    if jax.default_backend() == "cpu":
        return jax.lax.map(lambda x: fn(*x), xs)
    return jax.vmap(fn)(*xs)


def _tail_fraction(sorted_q: jax.Array, values: jax.Array) -> jax.Array:
    """Fraction of the (sorted) toy statistics ``>= values`` (pyhf's ``pvalue``), with ties
    to :data:`TIE_TOLERANCE`."""
    threshold = values - TIE_TOLERANCE * jnp.maximum(1.0, jnp.abs(values))
    below = jnp.searchsorted(sorted_q, threshold, side="left").astype(jnp.float64)
    return (sorted_q.shape[0] - below) / sorted_q.shape[0]


def toy_hypotest(
    mu: ArrayLike, data: ArrayLike, model: HistFactory, *, test_stat: TestStat = "qtilde",
    yields: Any = None, ntoys: int = 2000, seed: Any = 0,
) -> ToyResult:
    """Toy-based CLs, CLs+b, CLb and expected sets, as pyhf's ``ToyCalculator``.

    Both toy sets (``ntoys`` each) are drawn with ``jax.random`` from ``seed`` and fitted in
    one map over the ``2 ntoys`` toys (a ``vmap`` on accelerators, a ``lax.map`` on CPU; see
    the module docstring for the procedure); jit-able and vmap-able (``ntoys`` static).

    Args:
        mu: Tested signal strength (ignored for ``"q0"``, which tests 0).
        data: Observed main counts then auxiliary data (or main counts only).
        model: The likelihood.
        test_stat: ``"qtilde"`` (default), ``"q"`` or ``"q0"``.
        yields: Optional yields override.
        ntoys: Pseudo-experiments per hypothesis.
        seed: An int or a JAX PRNG key (typed or raw), e.g. ``jax.random.key(1)``.

    Returns:
        A :class:`ToyResult`; its p-values carry the binomial error
        ``sqrt(p (1 - p) / ntoys)``.

    Raises:
        ValueError: ``ntoys`` not an int >= 1; ``seed`` not an int or key; unknown
            ``test_stat``; ``mu`` (or the background-only POI value) not a scalar or
            outside the POI's bounds; invalid ``data`` or ``yields``.
        FitError: (eager) a fit to the data or to a toy did not converge.

    Example:
        >>> result = nx.infer.toy_hypotest(1.0, data, model, ntoys=1000)  # doctest: +SKIP
        >>> result.cls, result.expected_cls  # doctest: +SKIP

    References:
        ATLAS and CMS, "Procedure for the LHC Higgs boson search combination in Summer 2011",
        ATL-PHYS-PUB-2011-011; pyhf's ``pyhf.infer.calculators.ToyCalculator``.
    """
    require_float64()
    ntoys = checked_ntoys(ntoys)
    key = checked_seed(seed)
    checked_test_stat(test_stat)
    bkg_mu = 1.0 if test_stat == "q0" else 0.0
    mu = checked_mu(model, 0.0 if test_stat == "q0" else mu)  # q0 tests 0
    checked_mu(model, bkg_mu, "the background-only mu")
    yields = model.prepare(yields)
    data = jnp.asarray(checked_data(model.config, data), jnp.float64)
    mu = jnp.asarray(mu, jnp.float64)
    q_obs, _ = statistic(mu, data, model, test_stat, yields)

    poi = poi_name(model)
    sb_key, b_key = jax.random.split(key)
    toys, inits = [], []
    for value, toy_key in ((mu, sb_key), (bkg_mu, b_key)):
        fixed = {poi: value}
        generating = fit_solution(model, data, yields=yields, fixed=fixed)
        pars = checked(generating.pars, generating.converged, "toy-generating fit",
                       fit_causes(model, data, yields, fixed=fixed))
        toys.append(sample_toys(model, pars, toy_key, ntoys, yields))
        inits.append(jnp.broadcast_to(pars, (ntoys, pars.shape[0])))
    q, converged = _map_toys(
        lambda toy, init: _toy_statistic(mu, toy, init, model, test_stat, yields),
        jnp.concatenate(toys), jnp.concatenate(inits),
    )

    def failed_toys() -> list[str]:
        return [f"{int(np.sum(~np.asarray(converged)))} of {2 * ntoys} pseudo-experiments' "
                "fits failed"]

    q = checked(q, jnp.all(converged), "toy fits", failed_toys)
    q_sb, q_b = q[:ntoys], q[ntoys:]
    sorted_sb, sorted_b = jnp.sort(q_sb), jnp.sort(q_b)
    clsb, clb = _tail_fraction(sorted_sb, q_obs), _tail_fraction(sorted_b, q_obs)
    # the p-values of every background-only toy, then their percentiles
    clsb_b, clb_b = _tail_fraction(sorted_sb, q_b), _tail_fraction(sorted_b, q_b)
    percentiles = 100.0 * ndtr(-jnp.asarray(N_SIGMA, jnp.float64))
    return ToyResult(
        cls=clsb / clb,
        clsb=clsb,
        clb=clb,
        expected_cls=jnp.percentile(clsb_b / clb_b, percentiles, method="linear"),
        expected_clsb=jnp.percentile(clsb_b, percentiles, method="linear"),
        q_obs=q_obs,
        q_sb=q_sb,
        q_b=q_b,
    )
