"""O(N + B) kernel-CDF sums for any (traced) edges and bandwidth: windows of cells per edge.

For a cumulative kernel ``F`` (the Gaussian CDF for ``"kde"``, the logistic for
``"sigmoid"``) the soft histogram is the difference of the edge sums

    C_k = sum_i w_i F((e_k - x_i) / h),    k = 0..B.

``F(z)`` is 0 or 1 to within 1e-17 once ``|z| > tail`` (9 for the Gaussian, 41 for the
logistic), so an event only needs the edges within ``tail * h`` of it; the others add 1
(edge above the event) or 0. Here the axis is cut into cells of width ``h / CELLS_PER_H``
counted from the lowest edge, and each edge ``k`` gets a window of ``W = 2R + 1`` consecutive
cells around it (``R = ceil(CELLS_PER_H * tail)``): every point of a cell below the window is
more than ``tail * h`` below the edge, every point of a cell above it more than ``tail * h``
above. The windows of all edges, merged where they overlap, are at most ``(B + 1) * W`` cells
whatever the edges and the bandwidth are, so the layout has a static size although the
edges and ``h`` are traced: nothing is assumed about how many edges crowd near an event.

One pass over the events finds each event's cell (by counting the window starts below it)
and scatter-adds its weighted Chebyshev polynomials ``T_d(t)`` (``t`` in [-1, 1) inside the
cell, measured from the edge of the cell's window, so as precise as ``(e_k - x_i) / h``)
into that cell's moments; events in no window go to a per-gap mass. On a cell of a third of
a bandwidth ``F((e_k - x)/h)`` is a degree-9 Chebyshev series in ``t`` to ~2e-15, whose
coefficients for every (edge, window cell) pair take ``(B + 1) * W * D`` kernel
evaluations, independent of N. Then

    C_k = sum_{cells c in window k} sum_d A[k, c, d] M[c, d] + (mass below window k).

The backward pass (a ``custom_vjp``) is exact as well: the derivative w.r.t. ``x_i`` comes
from a Chebyshev series of the kernel density ``f`` (not from differentiating the series of
``F``), those w.r.t. the edges and ``h`` from the forward moments against series of ``f``
and ``z f(z)``. It keeps each event's row and ``t`` from the forward pass; memory is
O(N + B * W * D), events are processed in chunks. First derivatives only: the backward
pass is not itself differentiated correctly (as in :mod:`neosx.relax._kde_fast`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc

from neosx.relax._kde_fast import TAILS, chebyshev_nodes, chebyshev_terms, chunk_start

__all__ = ["KERNELS", "cdf_sums", "gaussian_cdf", "worthwhile"]

CELLS_PER_H = 3
"""Cells per bandwidth; with N_TERMS the series are within ~4e-15 of F, f and z f."""
N_TERMS = 10
"""Chebyshev terms per cell (degree 9)."""
CHUNK = 16_384
"""Events per chunk: bounds the working memory at CHUNK x N_TERMS values."""
SMALL_SEARCH = 192
"""Up to this many edges an event's window is found by counting the window starts below it
(one vectorised pass), beyond by bisection (XLA's gathers make it the slower below ~200)."""
MIN_EVENTS_PER_COEFFICIENT = 16
"""The windowed path is taken from ``16 * W * N_TERMS`` events on (8 800 for the Gaussian,
39 520 for the logistic kernel): below, its fixed cost exceeds the dense formula's."""


def gaussian_cdf(z: jax.Array) -> jax.Array:
    """The standard normal CDF; erfc keeps full relative precision in the lower tail, unlike
    ``0.5 * (1 + erf)``."""
    return 0.5 * erfc(-z / math.sqrt(2.0))


def _gaussian_pdf(z: jax.Array) -> jax.Array:
    return jnp.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _logistic_pdf(z: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)


KERNELS: dict[str, tuple[Callable[[jax.Array], jax.Array], Callable[[jax.Array], jax.Array]]] = {
    "gaussian": (gaussian_cdf, _gaussian_pdf),
    "logistic": (jax.nn.sigmoid, _logistic_pdf),
}
"""Kernel name -> (CDF F, density f = F')."""


def window_cells(kernel: str) -> int:
    """W, the cells in each edge's window: R = ceil(CELLS_PER_H * tail) on either side."""
    return 2 * math.ceil(CELLS_PER_H * TAILS[kernel]) + 1


def worthwhile(n_events: int, n_edges: int, kernel: str) -> bool:
    """Whether the windowed path is cheaper than the dense N x (B+1) evaluation.

    Its fixed cost is ``(B+1) * W * N_TERMS`` kernel evaluations (three series in the
    backward pass) against ``N * (B+1)`` for the dense formula; per event it costs a few
    kernel evaluations, which a histogram of 3 bins or fewer does not save.
    """
    return n_edges >= 4 and n_events >= MIN_EVENTS_PER_COEFFICIENT * window_cells(kernel) * N_TERMS


class Layout(NamedTuple):
    """Where each edge's window lies among the merged cells (traced arrays).

    Attributes:
        edges: (B+1,) the sorted edges (units of x).
        origin: the lowest edge, where cell 0 starts.
        scale: cells per unit of x, ``CELLS_PER_H / h``.
        q: (B+1,) position of each edge in cells from the origin.
        frac: (B+1,) position of each edge inside its own cell, in [0, 1).
        starts: (B+1,) cell index (float, an integer) of each window's first cell.
        rows: (B+1, W) row of the moment table that holds each window cell.
        first_row_base: (B+1,) ``rows[k, 0] - starts[k]``: row of cell c in window k is
            ``first_row_base[k] + c``.
    """

    edges: jax.Array
    origin: jax.Array
    scale: jax.Array
    q: jax.Array
    frac: jax.Array
    starts: jax.Array
    rows: jax.Array
    first_row_base: jax.Array


def _layout(edges: jax.Array, h: jax.Array, kernel: str) -> Layout:
    """Merge the windows of sorted ``edges``: rows are numbered in the order of the cells."""
    width = window_cells(kernel)
    reach = (width - 1) // 2
    origin = edges[0]
    scale = CELLS_PER_H / h
    q = (edges - origin) * scale
    cell = jnp.floor(q)
    starts = cell - reach
    # cells that window k adds beyond window k-1 (windows have equal length, starts ascend)
    fresh = jnp.clip(jnp.diff(starts), 0, width).astype(jnp.int32)
    fresh = jnp.concatenate([jnp.full((1,), width, jnp.int32), fresh])
    first_row = jnp.cumsum(fresh) - width  # row of each window's first cell
    rows = first_row[:, None] + jnp.arange(width, dtype=jnp.int32)[None, :]
    base = first_row.astype(starts.dtype) - starts
    return Layout(edges, origin, scale, q, q - cell, starts, rows, base)


def _locate(x: jax.Array, layout: Layout, kernel: str) -> tuple[jax.Array, jax.Array]:
    """Row of each event's cell in the moment table, and its position t in [-1, 1) there.

    A cell in no window gets the gap row ``n_cells + k + 1``, k the last window below it
    (-1 if none), and t = 0. The cell is found from the event's position counted from the
    lowest edge; t is then measured from the edge of the window that holds the cell, so that
    its precision is that of ``(e_k - x) / h``, not of ``(x - e_0) / h``.
    """
    width = window_cells(kernel)
    n_edges = layout.starts.shape[0]
    s = (x - layout.origin) * layout.scale
    c = jnp.floor(jnp.clip(s, layout.starts[0] - 1.0, layout.starts[-1] + width))
    if n_edges <= SMALL_SEARCH:  # counting comparisons vectorises; a bisection gathers
        k = jnp.sum(layout.starts <= c[:, None], axis=1, dtype=jnp.int32) - 1
    else:
        k = jnp.searchsorted(layout.starts, c, side="right", method="scan_unrolled") - 1
    kc = jnp.clip(k, 0, n_edges - 1)
    # q_k - c, exact: cell c lies q_k - c cells below edge k (inside window k iff >= -R)
    above = layout.q[kc] - c
    inside = (k >= 0) & (above >= -((width - 1) // 2))
    t = jnp.where(inside, 2.0 * ((x - layout.edges[kc]) * layout.scale + above) - 1.0, 0.0)
    row = jnp.where(inside, (layout.first_row_base[kc] + c).astype(jnp.int32),
                    n_edges * width + k + 1)
    return row, t


def _basis(t: jax.Array) -> list[jax.Array]:
    return chebyshev_terms(t, N_TERMS)


def _n_rows(n_edges: int, kernel: str) -> int:
    return n_edges * window_cells(kernel) + n_edges + 1


def _moments(
    x: jax.Array, w: jax.Array | None, layout: Layout, kernel: str
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """M[r, d] = sum_{i in row r} w_i T_d(t_i), shape (n_rows, D), and each event's row and t."""
    n_rows = _n_rows(layout.starts.shape[0], kernel)

    def one(
        xc: jax.Array, wc: jax.Array | None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        row, t = _locate(xc, layout, kernel)
        values = jnp.stack(_basis(t), axis=-1)
        values = values if wc is None else wc[:, None] * values
        return jax.ops.segment_sum(values, row, num_segments=n_rows), row, t

    n = x.shape[0]
    if n <= CHUNK:
        return one(x, w)

    def body(i: jax.Array, carry: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        acc, rows, ts = carry
        start = chunk_start(i, n, CHUNK)
        xc = jax.lax.dynamic_slice(x, (start,), (CHUNK,))
        fresh = (start + jnp.arange(CHUNK) >= i * CHUNK).astype(x.dtype)  # drop the overlap
        if w is not None:
            fresh = fresh * jax.lax.dynamic_slice(w, (start,), (CHUNK,))
        moments, row, t = one(xc, fresh)
        update = jax.lax.dynamic_update_slice
        return acc + moments, update(rows, row, (start,)), update(ts, t, (start,))

    init = (jnp.zeros((n_rows, N_TERMS), x.dtype), jnp.zeros(n, jnp.int32), jnp.zeros_like(x))
    return jax.lax.fori_loop(0, -(-n // CHUNK), body, init)


@functools.lru_cache(maxsize=4)
def _chebyshev(kernel: str) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (z at the Chebyshev nodes of each window cell, less the edge's fraction) and
    the (D, D) map from values at the nodes to coefficients."""
    width = window_cells(kernel)
    reach = (width - 1) // 2
    nodes, to_coef = chebyshev_nodes(N_TERMS)
    # cell j of window k starts reach - j cells below edge k's own cell
    offsets = reach - np.arange(width)[:, None] - (nodes[None, :] + 1.0) / 2.0
    return offsets, to_coef


def _coefficients(
    layout: Layout, kernel: str, fns: tuple[Callable[[jax.Array], jax.Array], ...]
) -> list[jax.Array]:
    """Chebyshev coefficients (B+1, W, D) of each fn(z) over every window cell,
    ``z = (e_k - x) / h`` with x the point at t inside the cell."""
    offsets, to_coef = _chebyshev(kernel)
    dtype = layout.frac.dtype
    z = (layout.frac[:, None, None] + jnp.asarray(offsets, dtype)[None]) / CELLS_PER_H
    return [fn(z) @ jnp.asarray(to_coef.T, dtype) for fn in fns]


def _window_moments(moments: jax.Array, layout: Layout) -> jax.Array:
    return moments[layout.rows]  # (B+1, W, D)


def _sums(moments: jax.Array, layout: Layout, kernel: str) -> jax.Array:
    n_cells = layout.rows.size
    (coef,) = _coefficients(layout, kernel, (KERNELS[kernel][0],))
    windowed = jnp.einsum("kjd,kjd->k", _window_moments(moments, layout), coef)
    mass = moments[:, 0]
    cell_mass = jnp.concatenate([jnp.zeros(1, mass.dtype), jnp.cumsum(mass[:n_cells])])
    gap_mass = jnp.cumsum(mass[n_cells:])[:-1]  # gaps below window k: rows n_cells..+k
    return windowed + cell_mass[layout.rows[:, 0]] + gap_mass


def _forward(
    x: jax.Array, w: jax.Array | None, edges: jax.Array, h: jax.Array, kernel: str
) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
    layout = _layout(edges, h, kernel)
    moments, rows, t = _moments(x, w, layout, kernel)
    return _sums(moments, layout, kernel), (moments, rows, t)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _sorted_cdf_sums(
    x: jax.Array, w: jax.Array | None, edges: jax.Array, h: jax.Array, kernel: str
) -> jax.Array:
    return _forward(x, w, edges, h, kernel)[0]


def _sorted_cdf_sums_fwd(
    x: jax.Array, w: jax.Array | None, edges: jax.Array, h: jax.Array, kernel: str
) -> tuple[jax.Array, tuple[jax.Array | None, ...]]:
    sums, (moments, rows, t) = _forward(x, w, edges, h, kernel)
    return sums, (w, edges, h, moments, rows, t)


def _event_table(
    layout: Layout, coef: jax.Array, dcoef: jax.Array, cotangent: jax.Array, n_rows: int
) -> jax.Array:
    """Per-row Chebyshev series (2D, n_rows) of ``sum_k g_k f(z_k)`` and ``sum_k g_k F(z_k)``.

    A cell row sees the full cotangent of every window that starts above it (F = 1 there);
    gap row k + 1 (below windows k + 1..B) likewise.
    """
    n_cells = layout.rows.size
    per_pair = jnp.concatenate([dcoef, coef], axis=-1) * cotangent[:, None, None]
    table = jnp.zeros((n_rows, 2 * N_TERMS), coef.dtype).at[layout.rows.reshape(-1)].add(
        per_pair.reshape(n_cells, 2 * N_TERMS)
    )
    starting = jnp.zeros(n_cells, coef.dtype).at[layout.rows[:, 0]].add(cotangent)
    above = jnp.cumsum(starting[::-1])[::-1]
    zero = jnp.zeros(1, coef.dtype)
    saturated = jnp.concatenate([above[1:], zero, jnp.cumsum(cotangent[::-1])[::-1], zero])
    return table.at[:, N_TERMS].add(saturated).T


def _sorted_cdf_sums_bwd(
    kernel: str, residuals: tuple[jax.Array | None, ...], cotangent: jax.Array
) -> tuple[jax.Array | None, ...]:
    w, edges, h, moments, rows, t = residuals
    layout = _layout(edges, h, kernel)
    cdf, pdf = KERNELS[kernel]
    coef, dcoef, zcoef = _coefficients(layout, kernel, (cdf, pdf, lambda z: z * pdf(z)))

    # edges and bandwidth: sum_i w_i f(z_ik) (times -z_ik) from the forward moments
    window = _window_moments(moments, layout)
    edges_bar = cotangent * jnp.einsum("kjd,kjd->k", window, dcoef) / h
    h_bar = -jnp.vdot(cotangent, jnp.einsum("kjd,kjd->k", window, zcoef)) / h

    # events: x from the density series, w from the CDF series (columns gather fastest)
    table = _event_table(layout, coef, dcoef, cotangent, moments.shape[0])
    columns = table if w is not None else table[:N_TERMS]
    factor = -1.0 / h

    def one(tc: jax.Array, rc: jax.Array, wc: jax.Array | None) -> tuple[jax.Array, ...]:
        basis = _basis(tc)
        picked = [column[rc] for column in columns]
        slope = factor * sum(p * b for p, b in zip(picked[:N_TERMS], basis, strict=True))
        if wc is None:
            return (slope,)
        value = sum(p * b for p, b in zip(picked[N_TERMS:], basis, strict=True))
        return wc * slope, value

    n = t.shape[0]
    if n <= CHUNK:
        bars = one(t, rows, w)
    else:

        def body(i: jax.Array, bars: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
            start = chunk_start(i, n, CHUNK)
            tc = jax.lax.dynamic_slice(t, (start,), (CHUNK,))
            rc = jax.lax.dynamic_slice(rows, (start,), (CHUNK,))
            wc = None if w is None else jax.lax.dynamic_slice(w, (start,), (CHUNK,))
            # an overlapping chunk rewrites the same values: no masking needed
            return tuple(
                jax.lax.dynamic_update_slice(bar, new, (start,))
                for bar, new in zip(bars, one(tc, rc, wc), strict=True)
            )

        init = (jnp.zeros_like(t),) if w is None else (jnp.zeros_like(t), jnp.zeros_like(w))
        bars = jax.lax.fori_loop(0, -(-n // CHUNK), body, init)
    x_bar, w_bar = (bars[0], None) if w is None else bars
    return x_bar, w_bar, edges_bar, h_bar


_sorted_cdf_sums.defvjp(_sorted_cdf_sums_fwd, _sorted_cdf_sums_bwd)


def cdf_sums(
    x: jax.Array, w: jax.Array | None, edges: jax.Array, h: jax.Array, kernel: str
) -> jax.Array:
    """Edge sums ``C_k = sum_i w_i F((e_k - x_i)/h)`` for any edges and bandwidth.

    Args:
        x: (N,) event positions (units of the binned variable).
        w: (N,) event weights, same dtype as ``x``, or None for unit weights.
        edges: (B+1,) edges, traced or not; any order (they are sorted here and the sums
            returned in the given order).
        h: scalar bandwidth > 0 (units of x), traced or not.
        kernel: ``"gaussian"`` or ``"logistic"``.

    Returns:
        (B+1,) cumulative weighted kernel mass below each edge, differentiable w.r.t. ``x``,
        ``w``, ``edges`` and ``h``.
    """
    h = jnp.asarray(h, x.dtype)
    order = jnp.argsort(edges)
    sums = _sorted_cdf_sums(x, w, edges[order], h, kernel)
    return jnp.zeros_like(sums).at[order].set(sums)
