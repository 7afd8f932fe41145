"""Pure JAX kernel of the HistFactory likelihood: expected rates, auxiliary data, logpdf.

All functions take a static :class:`~neosx.histfactory.layout.Layout` and traced arrays;
they contain no Python loop over bins or modifiers, and are jit-, grad- and vmap-able.
Evaluation has two stages: :func:`prepare` turns the yields (the layout's data arrays with
any overrides applied, :func:`apply_overrides`) into a :class:`Prepared` pytree of
everything that does not depend on the parameters (histosys deltas, normsys coefficients,
constraint widths and scale factors, auxiliary data); the rates and the logpdf are then
cheap functions of the parameters and that pytree. A fit prepares once and evaluates many
times, and its compiled program holds one copy of the yields arithmetic, not one per
likelihood evaluation.

Semantics are pyhf 0.7's (``pyhf/pdf.py``, ``pyhf/constraints.py``):

* rate of sample ``s`` in bin ``b``: ``(nominal + sum of histosys deltas) * product of
  factors`` (normfactor, lumi, shapefactor, staterror, shapesys, normsys);
* main term: ``sum_b n_b log(lam_b) - lam_b - lgamma(n_b + 1)`` (continuous Poisson);
* Gaussian constraints ``Normal(aux | theta, sigma)``: normsys, histosys, lumi (sigma from the
  measurement) and staterror, whose ``sigma_b = sqrt(sum_s sumw2_sb) / sum_s nominal_sb``
  over the samples carrying the modifier (1 where that is 0; pyhf fixes those parameters);
* Poisson constraints ``Poisson(aux | gamma * tau)`` for shapesys, ``tau_b = nominal_b**2 /
  sumw2_b`` also being the auxiliary data (1 where either is 0; pyhf fixes those).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from neosx.histfactory.interpolation import HISTOSYS_CODES, NORMSYS_CODES
from neosx.histfactory.layout import Layout

__all__ = [
    "OverrideSlot",
    "Prepared",
    "apply_overrides",
    "constraint_information",
    "constraint_logpdf",
    "expected_auxdata",
    "logpdf",
    "prepare",
    "rates_by_sample",
]

#: ``(data array name, start, stop, square)``: where one override value goes; ``square``
#: turns an absolute uncertainty into the Σw² the layout stores.
OverrideSlot = tuple[str, int, int, bool]


#: Above this many runs of repeated or consecutive indices, :func:`_take` gathers.
_MAX_RUNS = 8


def _runs(index: np.ndarray) -> list[tuple[int, int, int]] | None:
    """``(start, stop, step)`` of the maximal runs of ``index`` that repeat one value (step
    0) or count up by one (step 1); None once there are more than :data:`_MAX_RUNS`."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    while start < index.size:
        step = 0 if start + 1 < index.size and index[start + 1] == index[start] else 1
        stop = start + 1
        while stop < index.size and index[stop] - index[stop - 1] == step:
            stop += 1
        runs.append((start, stop, step))
        if len(runs) > _MAX_RUNS:
            return None
        start = stop
    return runs


def _take(values: Array, index: np.ndarray) -> Array:
    """``values[index]`` along the first axis, for a static 1-D index: runs of repeated or
    consecutive indices become broadcasts and slices, a gather only above :data:`_MAX_RUNS`.

    Slices and broadcasts fuse into their consumers and need no index array, where a gather
    is an operation of its own and its index a constant of the program: XLA's CPU runtime
    pays for each at every call (~0.1 us a constant), which is most of a small model's cost.
    """
    if index.size == 0:
        return values[:0]
    runs = _runs(index)
    if runs is None:
        return values[index]
    pieces = []
    for start, stop, step in runs:
        first = int(index[start])
        if step:
            pieces.append(values[first : first + stop - start])
        else:
            shape = (stop - start, *values.shape[1:])
            pieces.append(jnp.broadcast_to(values[first : first + 1], shape))
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces)


def apply_overrides(
    layout: Layout, slots: Sequence[OverrideSlot], values: Sequence[Array]
) -> dict[str, Array]:
    """The layout's data arrays with yields overrides written into their slots.

    Each overridden array is the sum of its static values where nothing overrides them and
    of every override value zero-padded to its slot (the slots of an override never overlap:
    each is one field of one modifier of one sample). Exactly one term is non-zero at each
    entry, so the sum is exact; and pads and adds fuse into one loop, where a concatenation
    or a chain of slice updates would cost an operation per overridden modifier.

    Args:
        layout: Compiled model.
        slots: Static destination of each value.
        values: Override values, ``values[i]`` of size ``stop - start`` of ``slots[i]``.

    Returns:
        ``{name: array}`` for every entry of ``layout.data``, float64.
    """
    arrays = {}
    for name, static in layout.data.items():
        mine = [
            (start, stop, square, value)
            for (target, start, stop, square), value in zip(slots, values, strict=True)
            if target == name
        ]
        if not mine:
            arrays[name] = jnp.asarray(static)
            continue
        kept = np.array(static)
        for start, stop, _, _ in mine:
            kept[start:stop] = 0.0
        total = jnp.asarray(kept)
        for start, stop, square, value in mine:
            value = jnp.reshape(jnp.asarray(value, dtype=jnp.float64), (stop - start,))
            value = jnp.square(value) if square else value
            total = total + jax.lax.pad(value, 0.0, [(start, static.size - stop, 0)])
        arrays[name] = total
    return arrays


class Prepared(NamedTuple):
    """The parameter-independent part of the likelihood at given yields (a pytree).

    Attributes:
        nominal: (n_samples * n_bins,) nominal rates of every sample-bin.
        histosys_delta: (2 * n_histosys, n_samples * n_bins): ``hi - nominal`` of each
            histosys, then ``nominal - lo``; 0 where a histosys does not act.
        normsys: (k, n_normsys, n_samples * n_channels) coefficients of the normsys
            interpolation code (:class:`~neosx.histfactory.interpolation.NormsysCode`).
        normal_scale: (n_gaussian,) ``1 / (sqrt(2) sigma)`` of each Gaussian constraint of
            width ``sigma``.
        normal_log_norm: () ``sum log(sqrt(2 pi) sigma)`` over the Gaussian constraints,
            their normalisation: the logarithms are taken once per set of yields, not at
            every evaluation.
        poisson_factor: (n_poisson,) rate scale factors ``tau`` of the Poisson constraints.
        auxdata: (nauxdata,) auxiliary data implied by the yields (shapesys ``tau``).
    """

    nominal: Array
    histosys_delta: Array
    normsys: Array
    normal_scale: Array
    normal_log_norm: Array
    poisson_factor: Array
    auxdata: Array


def prepare(layout: Layout, arrays: Mapping[str, Array]) -> Prepared:
    """Everything the likelihood needs from the yields, computed once for many parameters.

    Args:
        layout: Compiled model.
        arrays: Data arrays from :func:`apply_overrides`.

    Returns:
        The :class:`Prepared` pytree.
    """
    nominal = arrays["nominal"]
    shape = layout.histosys_mask.shape
    up = jnp.where(layout.histosys_mask, jnp.reshape(arrays["histosys_hi"], shape) - nominal, 0.0)
    down = jnp.where(layout.histosys_mask, nominal - jnp.reshape(arrays["histosys_lo"], shape), 0.0)
    n_pairs = layout.n_samples * layout.n_channels
    normsys = NORMSYS_CODES[layout.normsys_code].coefficients(
        jnp.reshape(arrays["normsys_lo"], (-1, n_pairs)),
        jnp.reshape(arrays["normsys_hi"], (-1, n_pairs)),
    )
    sigma, factor, aux = _constraint_scales(layout, arrays)
    scale = 1.0 / (np.sqrt(2.0) * sigma)
    log_norm = jnp.sum(jnp.log(sigma)) + 0.5 * np.log(2.0 * np.pi) * sigma.size
    return Prepared(nominal, jnp.concatenate([up, down]), normsys, scale, log_norm, factor, aux)


def rates_by_sample(layout: Layout, pars: Array, prepared: Prepared) -> Array:
    """Expected rate of every sample in every bin.

    Args:
        layout: Compiled model.
        pars: Parameters (npars,), in ``config.par_order``.
        prepared: The yields, from :func:`prepare`.

    Returns:
        Rates (n_samples, n_bins) in events.
    """
    nominal = prepared.nominal
    padded = jnp.concatenate([pars, jnp.ones(1)])
    factors = _take(padded, layout.factor_index.ravel()).reshape(layout.factor_index.shape)
    factor = jnp.prod(factors, axis=0)
    if layout.normsys_par.size:
        normsys = NORMSYS_CODES[layout.normsys_code].factor(
            _take(pars, layout.normsys_par)[:, None], prepared.normsys
        )
        pair_factor = jnp.reshape(jnp.prod(normsys, axis=0), (layout.n_samples, layout.n_channels))
        factor = factor * jnp.ravel(_take(pair_factor.T, layout.bin_channel).T)
    if layout.histosys_par.size:
        weights = jnp.concatenate(
            HISTOSYS_CODES[layout.histosys_code](_take(pars, layout.histosys_par))
        )
        nominal = nominal + weights @ prepared.histosys_delta
    return jnp.reshape(nominal * factor, (layout.n_samples, layout.n_bins))


def _overwrite(static: np.ndarray, positions: np.ndarray, values: Array) -> Array:
    """``static`` with ``static[positions] = values``, written as a gather and a select."""
    if positions.size == 0:
        return jnp.asarray(static)
    source = np.full(static.shape, positions.size)
    source[positions] = np.arange(positions.size)
    gathered = jnp.concatenate([values, jnp.zeros(1)])[source]
    return jnp.where(source < positions.size, gathered, static)


def _constraint_scales(layout: Layout, arrays: Mapping[str, Array]) -> tuple[Array, Array, Array]:
    """Gaussian widths, Poisson scale factors and auxiliary data at the given yields."""
    nominal = arrays["nominal"]
    sigma_groups = jnp.zeros(0)
    if layout.staterror_sigma_group.size:
        n_groups = int(layout.staterror_group.max()) + 1
        group_nominal, group_sumw2 = (
            jax.ops.segment_sum(values, layout.staterror_group, num_segments=n_groups)
            for values in (_take(nominal, layout.staterror_bin), arrays["staterror"])
        )
        valid = (group_nominal > 0) & (group_sumw2 > 0)
        sigma_groups = jnp.where(
            valid,
            jnp.sqrt(jnp.where(valid, group_sumw2, 1.0)) / jnp.where(valid, group_nominal, 1.0),
            1.0,
        )[layout.staterror_sigma_group]
    sigma = _overwrite(layout.normal_sigma, layout.staterror_sigma_slot, sigma_groups)

    tau = jnp.zeros(0)
    if layout.shapesys_bin.size:
        shapesys_nominal, shapesys_sumw2 = _take(nominal, layout.shapesys_bin), arrays["shapesys"]
        valid = (shapesys_nominal > 0) & (shapesys_sumw2 > 0)
        tau = jnp.where(valid, shapesys_nominal**2 / jnp.where(valid, shapesys_sumw2, 1.0), 1.0)
    factor = _overwrite(
        layout.poisson_factor, layout.shapesys_factor_slot, tau[layout.shapesys_factor_entry]
    )
    aux = _overwrite(layout.auxdata, layout.shapesys_aux_slot, tau[layout.shapesys_aux_entry])
    return sigma, factor, aux


def expected_auxdata(layout: Layout, pars: Array, prepared: Prepared) -> Array:
    """Expectation of the auxiliary measurements: theta (Gaussian) and gamma * tau (Poisson).

    Args:
        layout: Compiled model.
        pars: Parameters (npars,).
        prepared: The yields, from :func:`prepare`.

    Returns:
        Expected auxiliary data (nauxdata,).
    """
    order = np.argsort(np.concatenate([layout.normal_aux, layout.poisson_aux]))
    expected = [
        _take(pars, layout.normal_par),
        _take(pars, layout.poisson_par) * prepared.poisson_factor,
    ]
    return jnp.concatenate(expected)[order]


# Stirling series of lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2), in powers of 1/z**2,
# to the term in 1/z**11 (the next, 1/(156 z**13), is 2.5e-15 at z = 9).
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360)


def _log_poisson_shifted(n: Array) -> Array:
    """``log Pois(n | n + 9) = n log(z) - z - lgamma(n + 1)``, ``z = n + 9``, for counts
    ``n >= 0`` (any real): ``log(R) - log(z) / 2 - log(2 pi) / 2 - series / z``, with
    Stirling's series at ``z`` and ``R = (n + 1) ... (n + 8) / z**8`` from the recurrence
    ``lgamma(n + 1) = lgamma(z) - log((n + 1) ... (n + 8))``. Every term is O(log z), so
    the value (about -9 at ``n = 0``, ``-log(2 pi n) / 2`` for large ``n``) is accurate to
    ~1e-15 absolute from 0 to 1e300, where ``lgamma(n + 1)`` itself is ~``n log n``.

    The rising product is ``p (p + 6) (p + 10) (p + 12)`` with ``p = (n + 1) (n + 8)``
    (pairing ``n + k`` with ``n + 9 - k``), each factor divided by ``z**2`` so that none
    exceeds 1 and nothing overflows. Written for XLA's CPU backend, which compiles it into
    one loop over bins: no branch (a shift only where ``n < 8`` was a select of two
    computed operands that every term read: a loop of its own), and few operations per bin,
    since XLA splits a loop over the cores from a cost of flops + 2 transcendentals + 10
    bytes >= 2e5, and at these sizes the hand-off costs more than the loop.
    """
    z = n + 9.0
    inverse = 1.0 / z
    inverse_sq = inverse * inverse
    p = ((n + 1.0) * inverse) * ((n + 8.0) * inverse)
    rising = (p * (p + 6.0 * inverse_sq)) * ((p + 10.0 * inverse_sq) * (p + 12.0 * inverse_sq))
    series = _STIRLING[-1]
    for coefficient in _STIRLING[-2::-1]:
        series = series * inverse_sq + coefficient
    return (jnp.log(rising) - 0.5 * np.log(2.0 * np.pi)) - (0.5 * jnp.log(z) + series * inverse)


def _log_factorial(n: Array) -> Array:
    """``lgamma(n + 1)`` for counts ``n >= 0`` (any real), to 5e-15 absolute where it is
    below 1 and relative above: ``n log(z) - z - log Pois(n | z)``, ``z = n + 9``."""
    z = n + 9.0
    return (n * jnp.log(z) - z) - _log_poisson_shifted(n)


# log(rate / ref) = 2 atanh(v), v = (rate - ref) / (rate + ref): twice the coefficients of
# (atanh(v) - v) / v**3 in powers of v**2, used for |v| < 1/10, where the next one is 1e-16
# of the sum (beyond, the direct form, whose rounded rate / ref costs ~2 ulp / x**2 for
# x = rate / ref - 1, is within 6e-15 relative).
_ATANH_SERIES = tuple(2.0 / k for k in range(3, 17, 2))


def _poisson_log_ratio(n: Array, rate: Array, shift: float) -> Array:
    """``log Pois(n | rate) - log Pois(n | ref) = n log(rate / ref) + ref - rate`` with
    ``ref = n + shift``, ``shift > 0``, for ``n, rate >= 0``, without cancellation: within
    a few ulps of the value itself, or of ``rate - ref`` where the two terms nearly cancel.

    Pyhf's ``n log(rate) - rate`` carries the round-off of numbers ~``n log n`` (3e-3 at
    ``n = 1e12``, e.g. a shapesys constraint ``tau = 1e12``). Here, with ``e = rate - ref``
    (exact by Sterbenz' lemma where the two are close) and ``v = e / (rate + ref)``,
    ``log(rate / ref) = 2 atanh(v)`` and the value is ``v (n v**2 (2/3 + 2 v**2 / 5 + ...)
    - e - 2 shift)``, terms that do not cancel, for ``|v| < 1/10`` (and at
    ``n = rate = 0``); elsewhere ``n log(rate / ref) - e``, which loses no more than a few
    ulps there.

    Written for XLA's CPU backend. The quotient ``v``, read by several operations, is a
    loop of its own (XLA does not fuse a division into a loop that reads it more than
    once); the rest, ~25 operations and one logarithm per bin, reads it with the rates and
    data. Fused into one loop, those ~30 operations per 24 bytes made it compute-bound in
    XLA's cost model, and XLA split it over the cores from ~750 bins, at a loss.
    """
    ref = n + shift
    e = rate - ref
    v = e / (rate + ref)
    v_sq = v * v
    series = _ATANH_SERIES[-1]
    for coefficient in _ATANH_SERIES[-2::-1]:
        series = series * v_sq + coefficient
    near = v * (n * v_sq * series - (e + 2.0 * shift))
    far = n * jnp.log(rate / ref) - e
    return jnp.where((v_sq < 0.01) | (n + rate == 0), near, far)


def _saturated_log_ratio(n: Array, rate: Array) -> Array:
    """``log Pois(n | rate) - log Pois(n | n)`` = ``n (log1p(u) - u)``, ``u = (rate - n) / n``
    (``-rate`` at ``n = 0``; ``log(rate / n)`` for ``u <= -1/2``): the fits' objective,
    O(1) near the best fit whatever the size of ``n`` (a shapesys constraint with ``tau =
    2.5e11`` contributes O(1) here instead of 6.5e12), to a few ulps of ``|rate - n|``.
    Fewer operations than :func:`_poisson_log_ratio`, whose relative accuracy the fits do
    not need: Newton's Hessian of it runs at every iteration.
    """
    positive = n > 0
    safe_n = jnp.where(positive, n, 1.0)
    u = (rate - n) / safe_n
    # log1p(u) loses digits as u -> -1 (1 + u is rounded), log(rate / n) does not
    log_ratio = jnp.where(u > -0.5, jnp.log1p(u), jnp.log(rate / safe_n))
    return jnp.where(positive, safe_n * (log_ratio - u), -rate)


#: ``log Pois(n | rate)`` is taken relative to ``log Pois(n | n + 9)``, whose Stirling
#: series at ``n + 9`` needs no shift of its own (:func:`_log_poisson_shifted`).
_REFERENCE_SHIFT = 9.0


def _poisson_sum(n: Array, rate: Array, relative: bool) -> Array:
    """Sum over bins of pyhf's continuous Poisson ``log Pois(n | rate) = n log(rate) - rate
    - lgamma(n + 1)``, or with ``relative`` of ``log Pois(n | rate) - log Pois(n | n)``.

    ``log Pois(n | rate)`` is computed as ``log Pois(n | n + 9)`` (data only,
    :func:`_log_poisson_shifted`) plus the log ratio to it (:func:`_poisson_log_ratio`),
    both without pyhf's cancellation of terms ~``n log n``. The data-only sum is taken on
    its own, so that XLA computes it apart from the rates and at the same time, instead of
    in one loop that waits for them (at 1000 bins that loop is compute-bound enough for
    XLA to split it over the cores, on the critical path). The two sums are O(1) per bin
    (the ratio's ``+9`` against the reference's ``-9`` at small counts), so adding them
    loses ~1e-15 per bin.
    """
    if relative:
        return jnp.sum(_saturated_log_ratio(n, rate))
    ratio = jnp.sum(_poisson_log_ratio(n, rate, _REFERENCE_SHIFT))
    return ratio + jnp.sum(_log_poisson_shifted(n))


def logpdf(
    layout: Layout, pars: Array, data: Array, prepared: Prepared, relative: bool = False
) -> tuple[Array, Array]:
    """Log-likelihood of observed main and auxiliary data.

    Args:
        layout: Compiled model.
        pars: Parameters (npars,).
        data: Observed counts, main bins then auxiliary data (n_bins + nauxdata,), or the
            main bins only (n_bins,), completed with the auxiliary data of the yields.
        prepared: The yields, from :func:`prepare`.
        relative: If True, the log-likelihood ratio to the saturated model, term by term
            (Poisson: :func:`_poisson_log_ratio`; Gaussian: without its normalisation).
            It differs from the logpdf by a function of data and yields only.

    Returns:
        ``(logpdf, min_rate)``: the scalar log-likelihood and the smallest expected bin rate
        (negative rates make the logpdf NaN; callers report them).
    """
    rates = jnp.sum(rates_by_sample(layout, pars, prepared), axis=0)
    main, observed_aux = data[: layout.n_bins], data[layout.n_bins :]
    if observed_aux.shape[0] == 0:
        observed_aux = None
    value = _poisson_sum(main, rates, relative) + constraint_logpdf(
        layout, pars, observed_aux, prepared, relative
    )
    return value, jnp.min(rates)


def constraint_logpdf(
    layout: Layout, pars: Array, aux: Array | None, prepared: Prepared, relative: bool = False
) -> Array:
    """Log-likelihood of the auxiliary data alone: the Gaussian and Poisson constraints.

    Every term depends on one parameter, so the Hessian w.r.t. ``pars`` is diagonal.

    Args:
        layout: Compiled model.
        pars: Parameters (npars,).
        aux: Observed auxiliary data (nauxdata,); ``None``: those of the yields.
        prepared: The yields, from :func:`prepare`.
        relative: As in :func:`logpdf`.

    Returns:
        Scalar.
    """
    aux = prepared.auxdata if aux is None else aux
    normal_x = _take(aux, layout.normal_aux)
    pull = (normal_x - _take(pars, layout.normal_par)) * prepared.normal_scale
    normal = -jnp.sum(jnp.square(pull))
    if not relative:
        normal = normal - prepared.normal_log_norm
    rate = _take(pars, layout.poisson_par) * prepared.poisson_factor
    return normal + _poisson_sum(_take(aux, layout.poisson_aux), rate, relative)


def constraint_information(layout: Layout, pars: Array, prepared: Prepared) -> Array:
    """Expected Fisher information of the auxiliary measurements, per parameter.

    Each constraint term depends on one parameter, so the information is diagonal: a
    Gaussian ``Normal(aux | theta, sigma)`` gives ``1 / sigma**2``, a Poisson
    ``Poisson(aux | gamma * tau)`` gives ``tau / gamma``; unconstrained parameters get 0. It
    equals the Hessian of ``-constraint_logpdf`` where the auxiliary data are their
    expectation (the Asimov point).

    Args:
        layout: Compiled model.
        pars: Parameters (npars,).
        prepared: The yields, from :func:`prepare`.

    Returns:
        (npars,) diagonal of the information matrix.
    """
    per_constraint = jnp.concatenate([
        2.0 * jnp.square(prepared.normal_scale),
        prepared.poisson_factor / _take(pars, layout.poisson_par),
    ])
    positions = np.concatenate([layout.normal_par, layout.poisson_par])
    return _overwrite(np.zeros(layout.npars), positions, per_constraint)
