"""neosx.hist and friends against direct NumPy/SciPy evaluations of each formula.

Tolerances: the exact paths (dense formula, hard counts) agree to rounding (1e-12 relative);
the O(N) Chebyshev path of ``"kde"``/``"sigmoid"`` on uniform edges is pinned at 1e-11
(values measured at ~1e-14, gradients at ~4e-12), the windowed path for learnable edges and
bandwidths at 1e-12 (values and gradients measured at ~1e-14); finite differences at 1e-6.
"""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

import neosx as nx
from neosx.relax import _kde_fast, _kde_window

RNG = np.random.default_rng(20260101)


# --- independent references ------------------------------------------------------------------
def ref_cumulative(x, edges, h, w, cdf, overflow="drop"):
    sums = (w[:, None] * cdf((edges[None, :] - x[:, None]) / h)).sum(axis=0)
    counts = np.diff(sums)
    if overflow == "clip":
        counts[0] += sums[0]
        counts[-1] += w.sum() - sums[-1]
    return counts


def ref_kde(x, edges, h, w, overflow="drop"):
    return ref_cumulative(x, edges, h, w, stats.norm.cdf, overflow)


def ref_sigmoid(x, edges, h, w, overflow="drop"):
    # the form: sum_i w_i [sigma((x_i - e_b)/h) - sigma((x_i - e_{b+1})/h)]
    s = special.expit((x[:, None] - edges[None, :]) / h)
    counts = (w[:, None] * (s[:, :-1] - s[:, 1:])).sum(axis=0)
    if overflow == "clip":
        counts[0] += (w * (1 - s[:, 0])).sum()
        counts[-1] += (w * s[:, -1]).sum()
    return counts


def ref_gaussian(x, edges, h, w):
    centres, widths = (edges[1:] + edges[:-1]) / 2, np.diff(edges)
    return (w[:, None] * stats.norm.pdf((centres[None, :] - x[:, None]) / h) / h * widths).sum(0)


def ref_triangular(x, edges, h, w):
    """Tent kernel normalised per event over the bin grid continued beyond both edges."""
    widths = np.diff(edges)
    n_pad = math.ceil(h / widths.min()) + 1
    steps = np.arange(1, n_pad + 1)
    centres = np.concatenate(
        [
            (edges[0] - (steps - 0.5) * widths[0])[::-1],
            (edges[1:] + edges[:-1]) / 2,
            edges[-1] + (steps - 0.5) * widths[-1],
        ]
    )
    tent = np.maximum(0.0, 1.0 - np.abs(x[:, None] - centres[None, :]) / h)
    total = tent.sum(axis=1, keepdims=True)
    share = np.divide(tent, total, out=np.zeros_like(tent), where=total > 0)
    return (w[:, None] * share[:, n_pad:-n_pad]).sum(axis=0)


def assert_close(actual, desired, rtol, atol_scale=None):
    actual, desired = np.asarray(actual), np.asarray(desired)
    atol = rtol * (np.max(np.abs(desired)) if atol_scale is None else atol_scale)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol)


# --- the seeds' reference cases ----------------------------------------------------------------
SEED_X = 50.0 + 25.0 * RNG.standard_normal(1000)
SEED_EDGES = np.linspace(0.0, 100.0, 11)


def test_seed_case_gaussian_sigma_6():
    got = nx.hist(SEED_X, SEED_EDGES, bandwidth=6.0, method="gaussian")
    assert_close(got, ref_gaussian(SEED_X, SEED_EDGES, 6.0, np.ones(1000)), 1e-12)
    # the centre expansion is close to the true histogram for a smooth 1000-event sample
    hard = np.histogram(SEED_X, SEED_EDGES)[0]
    assert np.max(np.abs(np.asarray(got) - hard)) < 25.0


def test_seed_case_sigmoid_slope_3():
    # a logistic step of slope 3 (per unit of x) is the sigmoid method with bandwidth 1/3
    got = nx.hist(SEED_X, SEED_EDGES, bandwidth=1 / 3, method="sigmoid")
    assert_close(got, ref_sigmoid(SEED_X, SEED_EDGES, 1 / 3, np.ones(1000)), 1e-11)


@pytest.mark.parametrize("method", ["kde", "gaussian", "sigmoid", "triangular"])
def test_seed_case_255_bins(method):
    x = RNG.standard_normal(5000)  # 5 % of it outside the range
    edges = np.linspace(-2.0, 2.0, 256)
    h = 4.0 / 255
    refs = {
        "kde": ref_kde,
        "sigmoid": ref_sigmoid,
        "gaussian": ref_gaussian,
        "triangular": ref_triangular,
    }
    got = nx.hist(x, edges, bandwidth=h, method=method)
    assert got.shape == (255,)
    assert_close(got, refs[method](x, edges, h, np.ones_like(x)), 1e-11)


# --- every method, weights, overflow, edges ---------------------------------------------------
CASES = [
    # (edges, bandwidth): uniform with h around the bin width, narrow, wide; non-uniform
    (np.linspace(0.0, 1.0, 11), 0.1),
    (np.linspace(0.0, 1.0, 51), 0.013),
    (np.linspace(-1.0, 2.0, 7), 1.7),
    (np.array([-0.5, 0.0, 0.1, 0.35, 0.9, 1.6]), 0.37),
]


@pytest.mark.parametrize(("edges", "h"), CASES)
@pytest.mark.parametrize("overflow", ["drop", "clip"])
@pytest.mark.parametrize("method", ["kde", "sigmoid"])
def test_cumulative_methods_match_formula(edges, h, overflow, method):
    x = RNG.normal(0.5, 0.6, 3000)
    w = RNG.uniform(0.2, 3.0, 3000)
    ref = {"kde": ref_kde, "sigmoid": ref_sigmoid}[method](x, edges, h, w, overflow)
    got = nx.hist(x, edges, bandwidth=h, weights=w, method=method, overflow=overflow)
    assert_close(got, ref, 1e-11)
    # the traced-edge (dense, exact) path gives the same numbers
    traced = jax.jit(
        lambda e: nx.hist(x, e, bandwidth=h, weights=w, method=method, overflow=overflow)
    )(edges)
    assert_close(traced, ref, 1e-12)


@pytest.mark.parametrize(("edges", "h"), CASES)
def test_centre_methods_match_formula(edges, h):
    x = RNG.normal(0.5, 0.6, 2000)
    w = RNG.uniform(0.2, 3.0, 2000)
    assert_close(nx.hist(x, edges, bandwidth=h, weights=w, method="gaussian"),
                 ref_gaussian(x, edges, h, w), 1e-12)
    assert_close(nx.hist(x, edges, bandwidth=h, weights=w, method="triangular"),
                 ref_triangular(x, edges, h, w), 1e-12)


def test_triangular_interior_event_contributes_one():
    edges = np.linspace(0.0, 10.0, 21)
    for h in [0.5, 0.37, 1.9]:
        counts = nx.hist(np.array([4.21]), edges, bandwidth=h, method="triangular")
        assert float(jnp.sum(counts)) == pytest.approx(1.0, abs=1e-14)
    # h = bin width is linear interpolation between the two nearest bin centres
    counts = nx.hist(np.array([4.4]), edges, bandwidth=0.5, method="triangular")
    np.testing.assert_allclose(counts[8:10], [0.7, 0.3], rtol=1e-13)  # centres 4.25, 4.75


@pytest.mark.parametrize("method", ["kde", "sigmoid", "triangular", "straight_through"])
def test_clip_conserves_mass(method):
    x = RNG.normal(0.5, 1.5, 4000)  # much of it outside [0, 1]
    w = RNG.uniform(0.0, 2.0, 4000)
    counts = nx.hist(x, np.linspace(0, 1, 9), bandwidth=0.1, weights=w, method=method,
                     overflow="clip")
    assert float(jnp.sum(counts)) == pytest.approx(w.sum(), rel=1e-12)
    dropped = nx.hist(x, np.linspace(0, 1, 9), bandwidth=0.1, weights=w, method=method)
    assert float(jnp.sum(dropped)) < 0.5 * w.sum()


def test_gaussian_clip_adds_the_tails():
    x = RNG.normal(0.5, 1.5, 4000)
    edges = np.linspace(0, 1, 41)  # h >= width: the centre expansion is nearly normalised
    counts = nx.hist(x, edges, bandwidth=0.05, method="gaussian", overflow="clip")
    assert float(jnp.sum(counts)) == pytest.approx(4000, rel=1e-4)


def test_density_matches_numpy():
    x = RNG.normal(0.0, 1.0, 2000)
    edges = np.array([-3.0, -1.0, 0.0, 0.5, 2.0, 3.0])
    got = nx.hist(x, edges, bandwidth=1e-3, hard=True, density=True)
    assert_close(got, np.histogram(x, edges, density=True)[0], 1e-13)
    soft = nx.hist(x, edges, bandwidth=0.1, density=True)
    assert float(jnp.sum(soft * np.diff(edges))) == pytest.approx(1.0, abs=1e-13)


def test_int_bins_with_range():
    x = RNG.uniform(0, 100, 500)
    a = nx.hist(x, 10, range=(0.0, 100.0), bandwidth=2.0)
    b = nx.hist(x, np.linspace(0.0, 100.0, 11), bandwidth=2.0)
    np.testing.assert_array_equal(a, b)


# --- the hard limit -------------------------------------------------------------------------
@pytest.mark.parametrize("overflow", ["drop", "clip"])
def test_hard_equals_numpy_histogram(overflow):
    x = np.concatenate([RNG.normal(0.3, 0.5, 3000), [0.0, 1.0, -0.2, 1.2, 0.5]])  # edges too
    w = RNG.uniform(0.1, 2.0, x.size)
    edges = np.linspace(0.0, 1.0, 11)
    xs = np.clip(x, edges[0], edges[-1]) if overflow == "clip" else x
    counts = nx.hist(x, edges, bandwidth=0.1, hard=True, overflow=overflow)
    np.testing.assert_array_equal(np.asarray(counts), np.histogram(xs, edges)[0])
    # weighted sums agree up to summation order (XLA's scatter vs numpy's bincount)
    weighted = nx.hist(x, edges, bandwidth=0.1, weights=w, hard=True, overflow=overflow)
    assert_close(weighted, np.histogram(xs, edges, weights=w)[0], 1e-13)


@pytest.mark.parametrize("method", ["kde", "sigmoid"])
def test_soft_counts_converge_to_numpy_as_bandwidth_vanishes(method):
    # (the "gaussian" centre expansion has no hard limit: its mass vanishes as h -> 0)
    x = RNG.uniform(0.0, 1.0, 2000)
    edges = np.linspace(0.0, 1.0, 11)
    hard = np.histogram(x, edges)[0]
    errors = [
        float(np.max(np.abs(np.asarray(nx.hist(x, edges, bandwidth=h, method=method)) - hard)))
        for h in (3e-2, 3e-3, 3e-4, 3e-6)
    ]
    assert errors[-1] < 0.05 * errors[0]
    assert errors[-1] < 1.0


def test_kde_at_tiny_bandwidth_is_numpy_exactly_away_from_edges():
    x = RNG.uniform(0.0, 1.0, 2000)
    edges = np.linspace(0.0, 1.0, 11)
    assert np.min(np.abs(x[:, None] - edges[None, :])) > 1e-6  # holds for this seed
    got = nx.hist(x, edges, bandwidth=1e-8)
    np.testing.assert_allclose(got, np.histogram(x, edges)[0], rtol=0, atol=1e-9)


# --- sum of squared weights and softmax ------------------------------------------------------
def test_sumw2():
    x = RNG.normal(0.5, 0.3, 2000)
    w = RNG.uniform(0.0, 2.0, 2000)
    edges = np.linspace(0, 1, 6)
    assert_close(nx.hist_sumw2(x, edges, bandwidth=0.05, weights=w),
                 ref_kde(x, edges, 0.05, w**2), 1e-11)
    assert_close(nx.hist_sumw2(x, edges, bandwidth=0.05, weights=w, hard=True),
                 np.histogram(x, edges, weights=w**2)[0], 1e-13)


def test_softmax_hist():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(500, 4))
    w = rng.uniform(0.5, 1.5, 500)
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert np.min(top2[:, 1] - top2[:, 0]) > 5e-4  # no near-ties: T = 1e-5 is a clear arg-max
    got = nx.softmax_hist(logits, weights=w, temperature=0.7)
    assert_close(got, w @ special.softmax(logits / 0.7, axis=1), 1e-13)
    assert float(jnp.sum(got)) == pytest.approx(w.sum(), rel=1e-13)
    hard = nx.softmax_hist(logits, weights=w, hard=True)
    assert_close(hard, np.bincount(logits.argmax(1), weights=w, minlength=4), 1e-14)
    cold = nx.softmax_hist(logits, weights=w, temperature=1e-5)
    assert_close(cold, hard, 1e-6)


# --- gradients against central finite differences -------------------------------------------
def directional_fd(f, args, index, direction, eps, order=4):
    """Central difference of f along ``direction`` in argument ``index``.

    The fourth-order stencil's O(eps^4) truncation lets eps be ~1e-4 (kernel widths here are
    >= 0.04), far above the round-off floor that a second-order stencil with a tiny eps hits.
    Piecewise-linear functions (the tent kernel) need the second-order stencil and a small
    eps instead: it is exact on each linear piece and must not straddle a kink.
    """

    def at(step):
        moved = list(args)
        moved[index] = args[index] + step * eps * direction
        return f(*moved)

    if order == 2:
        return (at(1) - at(-1)) / (2 * eps)
    return (-at(2) + 8 * at(1) - 8 * at(-1) + at(-2)) / (12 * eps)


GRAD_CASES = [
    ("kde", np.linspace(0.0, 1.0, 9), 0.1),
    ("kde", np.array([-0.3, 0.1, 0.2, 0.6, 1.1]), 0.07),
    ("sigmoid", np.linspace(0.0, 1.0, 9), 0.05),
    ("gaussian", np.linspace(0.0, 1.0, 9), 0.1),
    ("triangular", np.linspace(0.0, 1.0, 9), 0.21),
]


@pytest.mark.parametrize(("method", "edges", "h"), GRAD_CASES)
@pytest.mark.parametrize("overflow", ["drop", "clip"])
def test_gradients_match_finite_differences(method, edges, h, overflow):
    x = jnp.asarray(RNG.normal(0.5, 0.4, 400))
    w = jnp.asarray(RNG.uniform(0.5, 1.5, 400))
    cot = jnp.asarray(RNG.normal(size=edges.size - 1))

    def loss(x, w, e, h):
        return jnp.sum(cot * nx.hist(x, e, bandwidth=h, weights=w, method=method,
                                     overflow=overflow))

    if method == "triangular":  # its per-event normalisation needs concrete edges and h
        fn, args = (lambda x, w: loss(x, w, edges, h)), (x, w)
        fd_options = {"eps": 1e-7, "order": 2}
    else:  # differentiable w.r.t. events, weights, (learnable) edges and the bandwidth
        fn, args = jax.jit(loss), (x, w, jnp.asarray(edges), jnp.asarray(h))
        fd_options = {"eps": 1e-5}
    grads = jax.grad(fn, argnums=tuple(range(len(args))))(*args)
    for i, g in enumerate(grads):
        v = jnp.asarray(RNG.normal(size=np.shape(args[i])))
        fd = directional_fd(fn, args, i, v, **fd_options)
        assert float(jnp.vdot(g, v)) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


def test_fast_path_gradient_matches_finite_differences_at_scale():
    """The custom_vjp of the Chebyshev path, chunked (N > CHUNK), against central FD."""
    n = _kde_fast.CHUNK + 1234
    x = jnp.asarray(RNG.normal(0.5, 0.3, n))
    w = jnp.asarray(RNG.uniform(0.5, 1.5, n))
    edges = np.linspace(0, 1, 21)
    cot = jnp.asarray(RNG.normal(size=20))

    @jax.jit
    def loss(x, w):
        return jnp.sum(cot * nx.hist(x, edges, bandwidth=0.04, weights=w) ** 2)

    gx, gw = jax.grad(loss, argnums=(0, 1))(x, w)
    for i, g in enumerate((gx, gw)):
        v = jnp.asarray(RNG.normal(size=n))
        fd = directional_fd(loss, (x, w), i, v, 1e-4)
        assert float(jnp.vdot(g, v)) == pytest.approx(float(fd), rel=1e-6)


def test_fast_path_equals_dense_formula_values_and_gradients():
    n = 2 * _kde_fast.CHUNK + 77
    x = jnp.asarray(RNG.normal(0.5, 0.3, n))
    w = jnp.asarray(RNG.uniform(0.5, 1.5, n))
    edges = np.linspace(0, 1, 101)
    cot = jnp.asarray(RNG.normal(size=100))

    def loss(x, w, e):
        return jnp.sum(cot * nx.hist(x, e, bandwidth=0.01, weights=w))

    fast = jax.jit(jax.value_and_grad(lambda x, w: loss(x, w, edges), argnums=(0, 1)))(x, w)
    dense = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w, jnp.asarray(edges))
    assert float(fast[0]) == pytest.approx(float(dense[0]), rel=1e-12)
    for a, b in zip(fast[1], dense[1], strict=True):
        assert_close(a, b, 1e-10)


# --- the windowed path: learnable edges, traced bandwidth ----------------------------------
KERNEL_OF = {"kde": "gaussian", "sigmoid": "logistic"}
N_WINDOW = 40_000  # above both kernels' thresholds for the windowed path, and chunked


def dense_cdf_sums(x, w, edges, h, kernel):
    """The dense formula in JAX, for gradients: sum_i w_i F((e_k - x_i)/h)."""
    cdf = _kde_window.KERNELS[kernel][0]
    return w @ cdf((edges[None, :] - x[:, None]) / h)


def window_layouts():
    """(edges, h) pairs of 12 edges each (one compilation serves them all)."""
    x_on = np.linspace(0.2, 0.8, 12)  # the events below include every one of these edges
    return {
        "spread": (np.linspace(-0.2, 1.3, 12), 0.03),
        "crowded": (0.4 + np.arange(12) * 0.004, 0.05),  # 12 edges within one bandwidth
        "outside data": (np.concatenate([np.linspace(-9, -8, 6), np.linspace(7, 9, 6)]), 0.2),
        "on events": (x_on, 0.02),
        "tiny h": (np.linspace(0.0, 1.0, 12), 1e-7),
        "huge h": (np.linspace(0.0, 1.0, 12), 30.0),
        "unsorted": (np.array([0.9, 0.1, 0.5, 0.2, 0.21, 0.7, 0.0, 1.0, 0.3, 0.95, 0.6, 0.4]),
                     0.04),
        "mixed gaps": (np.array([-3.0, 0.0, 0.001, 0.002, 0.3, 0.31, 0.5, 0.9, 0.901, 2.0,
                                 2.0001, 50.0]), 0.01),
    }


@pytest.mark.parametrize("kernel", ["gaussian", "logistic"])
def test_window_path_equals_dense_formula(kernel):
    x = np.concatenate([RNG.normal(0.5, 0.5, 2988), np.linspace(0.2, 0.8, 12)])
    w = RNG.uniform(0.2, 2.0, x.size)
    cot = jnp.asarray(RNG.normal(size=12))

    def loss(f):
        return lambda x, w, e, h: jnp.vdot(cot, f(x, w, e, h, kernel))

    window = jax.jit(jax.value_and_grad(loss(_kde_window.cdf_sums), argnums=(0, 1, 2, 3)))
    dense = jax.jit(jax.value_and_grad(loss(dense_cdf_sums), argnums=(0, 1, 2, 3)))
    sums = jax.jit(_kde_window.cdf_sums, static_argnums=4)
    unit_window = jax.jit(jax.grad(lambda x, e, h: loss(_kde_window.cdf_sums)(x, None, e, h)))
    dense_x = jax.jit(jax.grad(loss(dense_cdf_sums)))
    cdf = {"gaussian": stats.norm.cdf, "logistic": special.expit}[kernel]
    for name, (edges, h) in window_layouts().items():
        ref = (w[:, None] * cdf((edges[None, :] - x[:, None]) / h)).sum(axis=0)
        assert_close(sums(x, w, edges, h, kernel), ref, 1e-12, atol_scale=w.sum())
        args = tuple(jnp.asarray(a) for a in (x, w, edges, h))
        (v1, g1), (v2, g2) = window(*args), dense(*args)
        assert float(v1) == pytest.approx(float(v2), rel=1e-12, abs=1e-12 * w.sum()), name
        # absolute tolerances on each gradient's natural scale (an event on an edge): beyond
        # the kernel's tail the dense gradients are < 1e-17 of it, the window's exactly 0
        c1 = float(jnp.sum(jnp.abs(cot)))
        scales = (c1 * w.max() / h, c1, c1 * w.sum() / h, c1 * w.sum() / h)
        for a, b, scale in zip(g1, g2, scales, strict=True):
            assert_close(a, b, 1e-12, atol_scale=scale)
        unit = unit_window(args[0], args[2], args[3])
        assert_close(unit, dense_x(args[0], jnp.ones_like(args[0]), *args[2:]), 1e-12,
                     atol_scale=c1 / h)


@pytest.mark.parametrize("method", ["kde", "sigmoid"])
def test_learnable_edges_and_bandwidth_take_the_window_path(method):
    x = np.concatenate([RNG.normal(0.5, 0.4, N_WINDOW - 3), [0.0, 0.25, 1.0]])  # some on edges
    w = RNG.uniform(0.5, 1.5, N_WINDOW)
    edges = np.array([0.0, 0.1, 0.25, 0.3, 0.6, 0.61, 1.0])
    h = 0.03
    kernel = KERNEL_OF[method]
    cot = jnp.asarray(RNG.normal(size=6))

    def counts(x, w, e, h, overflow, fn=nx.hist, method=method):
        return fn(x, e, bandwidth=h, weights=w, method=method, overflow=overflow)

    jaxpr = str(jax.make_jaxpr(lambda e, h: counts(x, w, e, h, "drop"))(edges, h))
    assert "custom_vjp" in jaxpr and f"{N_WINDOW},7" not in jaxpr.replace(" ", "")
    ref_fn = {"kde": ref_kde, "sigmoid": ref_sigmoid}[method]
    drop, clip, sumw2 = jax.jit(lambda e, h: (
        counts(x, w, e, h, "drop"), counts(x, w, e, h, "clip"),
        counts(x, w, e, h, "drop", nx.hist_sumw2)))(edges, h)
    assert_close(drop, ref_fn(x, edges, h, w), 1e-12, atol_scale=w.sum())
    assert_close(clip, ref_fn(x, edges, h, w, "clip"), 1e-12, atol_scale=w.sum())
    assert_close(sumw2, ref_fn(x, edges, h, w**2), 1e-12, atol_scale=np.sum(w**2))

    # gradients w.r.t. x, w, edges and h against the dense formula and central differences
    @jax.jit
    def loss(x, w, e, h):
        return jnp.sum(cot * counts(x, w, e, h, "clip") ** 2)

    def dense_loss(x, w, e, h):
        sums = dense_cdf_sums(x, w, e, h, kernel)
        c = jnp.diff(sums).at[0].add(sums[0]).at[-1].add(jnp.sum(w) - sums[-1])
        return jnp.sum(cot * c**2)

    args = tuple(jnp.asarray(a) for a in (x, w, edges, h))
    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*args)
    dense = jax.jit(jax.grad(dense_loss, argnums=(0, 1, 2, 3)))(*args)
    for i, (g, d) in enumerate(zip(grads, dense, strict=True)):
        assert_close(g, d, 1e-12)
        v = jnp.asarray(RNG.normal(size=np.shape(args[i])))
        fd = directional_fd(loss, args, i, v, 1e-5 if i == 0 else 1e-4)
        assert float(jnp.vdot(g, v)) == pytest.approx(float(fd), rel=1e-6)

    # straight-through: the window path's gradient under the exact counts
    if method == "kde":
        st_grad, kde_grad = jax.jit(lambda e, h: [jax.grad(
            lambda e, h, m=m: jnp.sum(cot * counts(x, w, e, h, "drop", method=m)),
            argnums=(0, 1))(e, h) for m in ("straight_through", "kde")])(args[2], args[3])
        for a, b in zip(st_grad, kde_grad, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_window_path_vmap_and_no_recompile():
    xs = jnp.asarray(RNG.uniform(-0.1, 1.1, (2, 9_000)))

    @jax.jit
    def counts(x, e, h):
        return nx.hist(x, e, bandwidth=h)

    edges = jnp.linspace(0.0, 1.0, 9)
    batched = jax.vmap(counts, in_axes=(0, None, None))(xs, edges, 0.05)
    for x, b in zip(xs, batched, strict=True):
        assert_close(b, ref_kde(np.asarray(x), np.asarray(edges), 0.05, np.ones(9_000)), 1e-12)
    loss = jax.jit(jax.value_and_grad(lambda x, e, h: jnp.sum(counts(x, e, h) ** 2),
                                      argnums=(1, 2)))
    for step in range(3):  # an optimiser's steps: new edges, an annealed bandwidth
        loss(xs[0], edges + 0.01 * step * jnp.sin(jnp.arange(9.0)), 0.05 / (1 + step))
    assert loss._cache_size() == 1


# --- straight-through ------------------------------------------------------------------------
def test_straight_through_forward_is_numpy_and_backward_is_kde():
    x = jnp.asarray(RNG.normal(0.5, 0.4, 3000))
    w = jnp.asarray(RNG.uniform(0.5, 1.5, 3000))
    edges = np.linspace(0, 1, 8)
    st_counts = nx.hist(x, edges, bandwidth=0.05, weights=w, method="straight_through")
    hard = nx.hist(x, edges, bandwidth=0.05, weights=w, hard=True)
    np.testing.assert_array_equal(np.asarray(st_counts), np.asarray(hard))
    unweighted = nx.hist(x, edges, bandwidth=0.05, method="straight_through")
    np.testing.assert_array_equal(np.asarray(unweighted), np.histogram(np.asarray(x), edges)[0])
    cot = jnp.asarray(RNG.normal(size=7))

    def grads(method):
        return jax.grad(
            lambda x, w: jnp.sum(cot * nx.hist(x, edges, bandwidth=0.05, weights=w,
                                               method=method)), argnums=(0, 1))(x, w)

    for a, b in zip(grads("straight_through"), grads("kde"), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --- contract: jit, vmap, dtype, no recompilation ---------------------------------------------
@pytest.mark.parametrize("method", sorted(nx.relax.METHODS))
def test_contract_jit_vmap_dtype(method):
    edges = np.linspace(0, 1, 6)
    xs = jnp.asarray(RNG.uniform(0, 1, (3, 200)))

    def h(x):
        return nx.hist(x, edges, bandwidth=0.15, method=method)

    looped = jnp.stack([h(x) for x in xs])
    np.testing.assert_allclose(jax.jit(jax.vmap(h))(xs), looped, rtol=1e-13, atol=1e-13)
    jac = jax.vmap(jax.jacobian(lambda x: jnp.sum(h(x) ** 2)))(xs)
    assert jac.shape == xs.shape and bool(jnp.all(jnp.isfinite(jac)))
    x32 = xs[0].astype(jnp.float32)
    got32 = h(x32)
    assert got32.dtype == jnp.float32
    np.testing.assert_allclose(got32, looped[0], rtol=1e-4, atol=1e-4)


def test_no_recompile_for_new_data():
    edges = np.linspace(0, 1, 6)
    f = jax.jit(lambda x, w: nx.hist(x, edges, bandwidth=0.1, weights=w))
    for seed in range(3):
        rng = np.random.default_rng(seed)
        f(jnp.asarray(rng.uniform(size=100)), jnp.asarray(rng.uniform(size=100)))
    assert f._cache_size() == 1


def test_trainable_bandwidth_and_edges_under_jit():
    x = jnp.asarray(RNG.normal(0.5, 0.3, 500))

    @jax.jit
    def loss(inner_edges, h):
        edges = jnp.concatenate([jnp.array([0.0]), inner_edges, jnp.array([1.0])])
        return jnp.sum(nx.hist(x, edges, bandwidth=h) ** 2)

    g_edges, g_h = jax.grad(loss, argnums=(0, 1))(jnp.array([0.3, 0.6]), 0.05)
    assert g_edges.shape == (2,) and bool(jnp.all(jnp.isfinite(g_edges))) and g_h != 0.0


# --- property tests ---------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(
    x=hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(-3, 4)),
    edges=hnp.arrays(np.float64, st.integers(2, 12), elements=st.floats(-2, 3), unique=True),
    log_h=st.floats(-4, 0.5),
)
def test_property_kde_matches_formula_and_conserves_mass(x, edges, log_h):
    edges = np.sort(edges)
    if np.min(np.diff(edges)) < 1e-3:
        return
    h = 10.0**log_h
    w = np.linspace(0.5, 1.5, x.size)
    clip = nx.hist(x, edges, bandwidth=h, weights=w, overflow="clip")
    assert float(jnp.sum(clip)) == pytest.approx(w.sum(), rel=1e-12)
    drop = nx.hist(x, edges, bandwidth=h, weights=w)
    assert_close(drop, ref_kde(x, edges, h, w), 1e-11, atol_scale=w.sum())
    assert bool(jnp.all(drop >= -1e-12)) and bool(jnp.all(drop <= clip + 1e-12))


@settings(max_examples=30, deadline=None)
@given(
    # (XLA on CPU flushes subnormals to zero, so they would sit on the edge 0.0)
    x=hnp.arrays(np.float64, st.integers(1, 80), elements=st.floats(-1, 2, allow_subnormal=False)),
    n_bins=st.integers(1, 20),
)
def test_property_hard_equals_numpy(x, n_bins):
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    x = np.concatenate([x, edges])  # events exactly on every edge
    got = nx.hist(x, edges, bandwidth=1.0, hard=True)
    np.testing.assert_array_equal(np.asarray(got), np.histogram(x, edges)[0])
    st_counts = nx.hist(x, edges, bandwidth=0.1, method="straight_through")
    np.testing.assert_array_equal(np.asarray(st_counts), np.histogram(x, edges)[0])


# --- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bins": np.array([0.0, 0.5, 0.5, 1.0])},
         r"strictly increasing, got bins=\[0.  0.5 0.5 1. \]"),
        ({"bins": np.array([0.0, 1.0, 0.5])}, "strictly increasing"),
        ({"bins": np.array([0.5])}, ">= 2 edges"),
        ({"bins": 0, "range": (0, 1)}, "bins must be >= 1, got bins=0"),
        ({"bins": 5}, r"needs range=\(low, high\)"),
        ({"bins": 5, "range": (1.0, 0.0)}, r"low < high, got range=\(1.0, 0.0\)"),
        ({"bandwidth": 0.0}, "bandwidth must be a finite scalar > 0, got bandwidth=0.0"),
        ({"bandwidth": -0.1}, "got bandwidth=-0.1"),
        ({"bandwidth": None}, "needs a bandwidth"),
        ({"weights": np.ones(4)}, r"weights shape \(4,\) does not match events x shape \(10,\)"),
        ({"method": "box"}, "method must be one of .* got method='box'"),
        ({"method": "triangular", "bandwidth": 0.1}, r"half the widest bin \(0.125\)"),
        ({"overflow": "wrap"}, "overflow must be one of .* got overflow='wrap'"),
        ({"x": np.ones((2, 5))}, r"1-D events x, got shape \(2, 5\); batch with jax.vmap"),
    ],
)
def test_bad_input_raises_before_tracing(kwargs, message):
    args = {"x": np.linspace(0, 1, 10), "bins": np.linspace(0, 1, 5), "bandwidth": 0.1}
    args.update(kwargs)
    x = args.pop("x")
    bins = args.pop("bins")
    with pytest.raises(ValueError, match=message):
        nx.hist(x, bins, **args)
    with pytest.raises(ValueError, match=message):  # the same message from inside jit
        jax.jit(lambda x: nx.hist(x, bins, **args))(x)


def test_softmax_hist_errors():
    with pytest.raises(ValueError, match=r"\(N, C\) logits, got shape \(3,\)"):
        nx.softmax_hist(np.ones(3))
    with pytest.raises(ValueError, match=r"temperature must be > 0, got temperature=0\.0"):
        nx.softmax_hist(np.ones((3, 2)), temperature=0.0)
    with pytest.raises(ValueError, match=r"weights shape \(2,\) does not match logits \(3,\)"):
        nx.softmax_hist(np.ones((3, 2)), weights=np.ones(2))
