"""Differentiable histograms: relaxations of binned event counts.

A histogram counts events per bin, ``n_b = sum_i w_i 1[e_b <= x_i < e_{b+1}]``, which has a
zero gradient almost everywhere. Each method here spreads an event over the bins with a
smooth kernel of width ``bandwidth`` (units of x) instead:

============================  =============================================================
``"kde"`` (default)           binned Gaussian KDE, ``sum_i w_i [Phi((e_{b+1}-x_i)/h) -
                              Phi((e_b-x_i)/h)]`` (as ``relaxed.hist``)
``"sigmoid"``                 difference of logistic steps, ``sum_i w_i [sigma((x_i-e_b)/h)
                              - sigma((x_i-e_{b+1})/h)]``
``"gaussian"``                Gaussian density at the bin centres times the bin width,
                              ``sum_i w_i phi((c_b-x_i)/h) / h * width_b``
``"triangular"``              ReLU (tent) kernel at the bin centres,
                              ``max(0, 1 - |x_i - c_b|/h)``, normalised per event so that an
                              event far from the range edges contributes exactly 1 (needs
                              h >= half the widest bin; h = width is linear interpolation)
``"straight_through"``        exact counts forward, the ``"kde"`` gradient backward
============================  =============================================================

``hard=True`` returns the exact counts of :func:`numpy.histogram` (bins closed on the left,
the last bin also on the right) whatever the method, so one analysis function serves both
training and the exact evaluation.

The ``"kde"`` and ``"sigmoid"`` methods are computed as B+1 cumulative edge sums (counts are
their differences). For concrete uniform edges and bandwidth they take the O(N) Chebyshev
cell-moment path of :mod:`neosx.relax._kde_fast` (no N x B array, no special function per
event). Learnable or non-uniform edges and a traced bandwidth take the windowed cells of
:mod:`neosx.relax._kde_window` (O(N + B) work and memory, exact, differentiable w.r.t. the
edges and the bandwidth too) from about 9 000 events (``"kde"``) or 40 000 (``"sigmoid"``)
and 3 bins on; smaller histograms evaluate the dense formula, in checkpointed chunks so that
memory stays O(N + chunk x B) under autodiff.

References:
    L. Heinrich, N. Simpson, "neos", arXiv:2203.05570; relaxed (gradhep/relaxed).
    P. De Castro, T. Dorigo, "INFERNO", arXiv:1806.04743 (softmax histograms).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from neosx.relax import _kde_fast, _kde_window
from neosx.relax._kde_window import gaussian_cdf

__all__ = ["METHODS", "hist", "hist_sumw2", "softmax_hist"]

Overflow = Literal["drop", "clip"]
CHUNK = 8_192
"""Events per chunk on the dense paths: bounds autodiff memory at CHUNK x (B+1) values."""
_OVERFLOWS = ("drop", "clip")


class Binning(NamedTuple):
    """Bin edges, with their NumPy values when they are concrete (not learnable).

    Attributes:
        edges: (B+1,) strictly increasing bin edges (a traced array if learnable).
        concrete: the same edges as a float64 NumPy array, or None if traced.
        uniform: ``(lo, width)`` if the edges are concrete and uniform, else None.
    """

    edges: jax.Array
    concrete: np.ndarray | None
    uniform: tuple[float, float] | None

    @property
    def n_bins(self) -> int:
        return self.edges.shape[0] - 1


def _is_concrete(value: object) -> bool:
    return not isinstance(value, jax.core.Tracer)


def make_binning(
    bins: int | ArrayLike, bin_range: tuple[float, float] | None, dtype: jnp.dtype
) -> Binning:
    """Validate ``bins`` (edges, or a count with ``range``) into a :class:`Binning`.

    Raises:
        ValueError: fewer than 2 edges, edges not strictly increasing or not finite, a bin
            count without a valid range.
    """
    if isinstance(bins, int | np.integer):
        if bins < 1:
            raise ValueError(f"hist bins must be >= 1, got bins={bins}")
        if bin_range is None:
            raise ValueError("hist with an integer bins needs range=(low, high)")
        lo, hi = (float(v) for v in bin_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"hist range must be finite with low < high, got range={bin_range}")
        edges = np.linspace(lo, hi, int(bins) + 1)
        return Binning(jnp.asarray(edges, dtype), edges, (lo, (hi - lo) / int(bins)))
    if bin_range is not None:
        raise ValueError("hist range=... is only used with an integer number of bins")
    if not _is_concrete(bins):
        if jnp.ndim(bins) != 1 or jnp.shape(bins)[0] < 2:
            raise ValueError(
                f"hist bins must be a 1-D array of >= 2 edges, got shape {jnp.shape(bins)}"
            )
        return Binning(jnp.asarray(bins, dtype), None, None)
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.shape[0] < 2:
        raise ValueError(f"hist bins must be a 1-D array of >= 2 edges, got bins={edges}")
    if not np.all(np.isfinite(edges)) or not np.all(np.diff(edges) > 0):
        raise ValueError(f"hist bins must be finite and strictly increasing, got bins={edges}")
    widths = np.diff(edges)
    uniform = np.allclose(widths, widths[0], rtol=1e-12, atol=0.0)
    return Binning(
        jnp.asarray(edges, dtype), edges, (float(edges[0]), float(widths[0])) if uniform else None
    )


def _check_bandwidth(bandwidth: ArrayLike) -> None:
    if bandwidth is None:
        raise ValueError("hist needs a bandwidth > 0 for a soft method (or hard=True)")
    if _is_concrete(bandwidth):
        h = np.asarray(bandwidth)
        if h.ndim != 0 or not np.isfinite(h) or h <= 0:
            raise ValueError(f"hist bandwidth must be a finite scalar > 0, got bandwidth={h}")


def _chunked_event_sum(
    per_event: Callable[[jax.Array], jax.Array], x: jax.Array, w: jax.Array
) -> jax.Array:
    """``sum_i w_i per_event(x)[i]`` over events processed in checkpointed chunks.

    Args:
        per_event: maps (n,) positions to (n, K) per-event contributions.
        x: (N,) positions. w: (N,) weights.

    Returns:
        (K,) weighted sum. Under autodiff each chunk is recomputed in the backward pass, so
        memory is O(N + CHUNK x K) rather than O(N x K).
    """
    if x.shape[0] <= CHUNK:
        return w @ per_event(x)
    n_chunks = -(-x.shape[0] // CHUNK)
    pad = n_chunks * CHUNK - x.shape[0]
    xs = jnp.pad(x, (0, pad), mode="edge").reshape(n_chunks, CHUNK)
    ws = jnp.pad(w, (0, pad)).reshape(n_chunks, CHUNK)

    @jax.checkpoint
    def body(acc: jax.Array, chunk: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        xc, wc = chunk
        return acc + wc @ per_event(xc), None

    first = jax.eval_shape(per_event, xs[0])
    total, _ = jax.lax.scan(body, jnp.zeros(first.shape[1:], first.dtype), (xs, ws))
    return total


_CUMULATIVE_KERNELS = {"kde": "gaussian", "sigmoid": "logistic"}
"""hist method -> kernel name of the CDF paths (:data:`neosx.relax._kde_window.KERNELS`)."""


def _unit(x: jax.Array, w: jax.Array | None) -> jax.Array:
    """Weights as an array (unit weights travel as None to spare an N-array where possible)."""
    return jnp.ones_like(x) if w is None else w


def _edge_cdf_sums(
    x: jax.Array, w: jax.Array | None, binning: Binning, h: ArrayLike, kernel: str
) -> jax.Array:
    """``C_k = sum_i w_i F((e_k - x_i)/h)`` for every edge k: (B+1,).

    Concrete uniform edges and bandwidth: the Chebyshev cell grid of :mod:`._kde_fast`;
    otherwise (learnable or non-uniform edges, a traced bandwidth) the windowed cells of
    :mod:`._kde_window` once N and B make them cheaper, else the dense formula.
    """
    name = _CUMULATIVE_KERNELS[kernel]
    if binning.uniform is not None and _is_concrete(h):
        grid = _kde_fast.plan_grid(*binning.uniform, binning.n_bins, float(h), name)
        if grid is not None:
            return _kde_fast.cdf_sums(x, w, grid)
    edges = binning.edges
    if _kde_window.worthwhile(x.shape[0], edges.shape[0], name):
        return _kde_window.cdf_sums(x, w, edges, h, name)
    cdf = _kde_window.KERNELS[name][0]
    return _chunked_event_sum(lambda xc: cdf((edges[None, :] - xc[:, None]) / h), x, _unit(x, w))


def _cumulative_hist(
    x: jax.Array, w: jax.Array | None, binning: Binning, h: ArrayLike, overflow: Overflow,
    kernel: str,
) -> jax.Array:
    sums = _edge_cdf_sums(x, w, binning, h, kernel)
    counts = jnp.diff(sums)
    if overflow == "clip":  # mass below the first / above the last edge joins the edge bins
        total = x.shape[0] if w is None else jnp.sum(w)
        counts = counts.at[0].add(sums[0]).at[-1].add(total - sums[-1])
    return counts


def _kde(
    x: jax.Array, w: jax.Array | None, b: Binning, h: ArrayLike, overflow: Overflow
) -> jax.Array:
    return _cumulative_hist(x, w, b, h, overflow, "kde")


def _sigmoid(
    x: jax.Array, w: jax.Array | None, b: Binning, h: ArrayLike, overflow: Overflow
) -> jax.Array:
    return _cumulative_hist(x, w, b, h, overflow, "sigmoid")


def _gaussian(
    x: jax.Array, w: jax.Array | None, binning: Binning, h: ArrayLike, overflow: Overflow
) -> jax.Array:
    edges = binning.edges
    centres, widths = (edges[1:] + edges[:-1]) / 2, jnp.diff(edges)

    def per_event(xc: jax.Array) -> jax.Array:
        z = (centres[None, :] - xc[:, None]) / h
        density = jnp.exp(-0.5 * z**2) / (math.sqrt(2.0 * math.pi) * h) * widths
        if overflow == "drop":
            return density
        below = gaussian_cdf((edges[0] - xc) / h)
        above = gaussian_cdf((xc - edges[-1]) / h)
        return density.at[:, 0].add(below).at[:, -1].add(above)

    return _chunked_event_sum(per_event, x, _unit(x, w))


def _triangular(
    x: jax.Array, w: jax.Array | None, binning: Binning, h: ArrayLike, overflow: Overflow
) -> jax.Array:
    if not _is_concrete(h) or binning.concrete is None:
        raise ValueError("hist method='triangular' needs concrete bin edges and bandwidth")
    widths_np = np.diff(binning.concrete)
    if float(h) < widths_np.max() / 2:
        raise ValueError(
            "hist method='triangular' needs bandwidth >= half the widest bin "
            f"({widths_np.max() / 2:g}) so that the tents cover every point, got bandwidth={h}"
        )
    edges = binning.edges
    widths = jnp.diff(edges)
    # virtual bins continue the grid beyond the range so that every event's kernel is whole
    n_pad = math.ceil(float(h) / float(widths_np.min())) + 1
    steps = jnp.arange(1, n_pad + 1, dtype=edges.dtype)
    low_centres = edges[0] - (steps - 0.5) * widths[0]
    high_centres = edges[-1] + (steps - 0.5) * widths[-1]
    centres = jnp.concatenate([low_centres[::-1], (edges[1:] + edges[:-1]) / 2, high_centres])

    def per_event(xc: jax.Array) -> jax.Array:
        tent = jnp.maximum(0.0, 1.0 - jnp.abs(xc[:, None] - centres[None, :]) / h)
        total = jnp.sum(tent, axis=1, keepdims=True)
        # only events beyond the virtual bins have no tent on the grid
        share = tent / jnp.where(total > 0, total, 1.0)
        inner = share[:, n_pad:-n_pad]
        if overflow == "drop":
            return inner
        far = total[:, 0] == 0
        below = jnp.sum(share[:, :n_pad], axis=1) + (far & (xc < edges[0]))
        above = jnp.sum(share[:, -n_pad:], axis=1) + (far & (xc > edges[-1]))
        return inner.at[:, 0].add(below).at[:, -1].add(above)

    return _chunked_event_sum(per_event, x, _unit(x, w))


def _hard(x: jax.Array, w: jax.Array | None, binning: Binning, overflow: Overflow) -> jax.Array:
    """Exact counts with numpy.histogram's convention (last bin closed on the right)."""
    edges, n_bins = binning.edges, binning.n_bins
    w = _unit(x, w)
    index = jnp.searchsorted(edges, x, side="right") - 1
    index = jnp.where(x == edges[-1], n_bins - 1, index)
    if overflow == "drop":
        w = jnp.where((index >= 0) & (index < n_bins), w, 0.0)
    index = jnp.clip(index, 0, n_bins - 1)
    return jax.ops.segment_sum(w, index, num_segments=n_bins)


def _straight_through(
    x: jax.Array, w: jax.Array | None, binning: Binning, h: ArrayLike, overflow: Overflow
) -> jax.Array:
    soft = _kde(x, w, binning, h, overflow)
    hard = _hard(x, w, binning, overflow)
    # soft - soft is exactly zero: the value is the hard count, the gradient the KDE's
    return soft - jax.lax.stop_gradient(soft) + jax.lax.stop_gradient(hard)


Method = Callable[[jax.Array, jax.Array | None, Binning, ArrayLike, Overflow], jax.Array]
METHODS: dict[str, Method] = {
    "kde": _kde,
    "sigmoid": _sigmoid,
    "gaussian": _gaussian,
    "triangular": _triangular,
    "straight_through": _straight_through,
}
"""Registry of soft histogram methods: name -> fn(x, w, binning, bandwidth, overflow)."""


def _events_and_weights(
    x: ArrayLike, weights: ArrayLike | None, name: str
) -> tuple[jax.Array, jax.Array | None]:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if x.ndim != 1:
        raise ValueError(
            f"{name} expects 1-D events x, got shape {x.shape}; batch with jax.vmap instead"
        )
    if weights is None:
        return x, None
    w = jnp.asarray(weights, x.dtype)
    if w.shape != x.shape:
        raise ValueError(f"{name} weights shape {w.shape} does not match events x shape {x.shape}")
    return x, w


def hist(
    x: ArrayLike,
    bins: int | ArrayLike,
    *,
    bandwidth: ArrayLike,
    weights: ArrayLike | None = None,
    method: str = "kde",
    overflow: Overflow = "drop",
    density: bool = False,
    hard: bool = False,
    range: tuple[float, float] | None = None,
) -> jax.Array:
    """Differentiable (soft) histogram of weighted events.

    Args:
        x: (N,) event values (units of the binned variable). Batch with :func:`jax.vmap`.
        bins: (B+1,) strictly increasing edges (may be non-uniform, may be traced for
            learnable edges), or an int B together with ``range``.
        bandwidth: Kernel width h in units of x (> 0): the Gaussian sigma for ``"kde"`` and
            ``"gaussian"``, the logistic scale for ``"sigmoid"``, the tent half-width for
            ``"triangular"``. As h -> 0 the counts tend to the exact histogram.
        weights: (N,) event weights (e.g. luminosity x cross-section / generated events);
            default 1.
        method: One of :data:`METHODS`: ``"kde"``, ``"sigmoid"``, ``"gaussian"``,
            ``"triangular"``, ``"straight_through"``.
        overflow: ``"drop"``: mass outside the edges is lost (as numpy.histogram);
            ``"clip"``: it is added to the first / last bin, so that the counts sum to
            ``sum(weights)`` exactly for ``"kde"``, ``"sigmoid"``, ``"triangular"``,
            ``"straight_through"`` and ``hard=True`` (``"gaussian"`` adds the Gaussian tail
            mass beyond the edges; its centre sampling is not exactly normalised).
        density: If True, divide by the total and the bin widths (numpy's ``density``).
        hard: If True, the exact counts of ``numpy.histogram(x, edges, weights=w)``.
        range: ``(low, high)`` when ``bins`` is an int.

    Returns:
        (B,) soft counts (weighted), in the floating dtype of ``x``.

    Raises:
        ValueError: bins not strictly increasing, non-positive bandwidth, weights of another
            shape, x not 1-D, unknown method or overflow. Raised before any tracing.

    Example:
        >>> import jax.numpy as jnp, neosx as nx
        >>> x = jnp.array([0.1, 0.4, 0.45, 0.9])
        >>> nx.hist(x, 2, range=(0.0, 1.0), bandwidth=0.01, hard=True).tolist()
        [3.0, 1.0]
    """
    if method not in METHODS:
        raise ValueError(f"hist method must be one of {sorted(METHODS)}, got method={method!r}")
    if overflow not in _OVERFLOWS:
        raise ValueError(f"hist overflow must be one of {_OVERFLOWS}, got overflow={overflow!r}")
    x, w = _events_and_weights(x, weights, "hist")
    binning = make_binning(bins, range, x.dtype)
    if hard:
        counts = _hard(x, w, binning, overflow)
    else:
        _check_bandwidth(bandwidth)
        counts = METHODS[method](x, w, binning, bandwidth, overflow)
    if density:
        counts = counts / (jnp.sum(counts) * jnp.diff(binning.edges))
    return counts


def hist_sumw2(
    x: ArrayLike,
    bins: int | ArrayLike,
    *,
    bandwidth: ArrayLike,
    weights: ArrayLike,
    method: str = "kde",
    overflow: Overflow = "drop",
    hard: bool = False,
    range: tuple[float, float] | None = None,
) -> jax.Array:
    """Sum of squared weights per bin, ``sum_i w_i^2 k_ib``: the MC statistical variance.

    The kernel masses ``k_ib`` are those of :func:`hist` with the same arguments, so
    ``sqrt(hist_sumw2)`` is the per-bin uncertainty that a staterror / shapesys modifier
    needs (for ``hard=True``: exactly numpy's ``histogram(x, bins, weights=w**2)``).

    Args:
        x: (N,) event values. bins, bandwidth, method, overflow, hard, range: as in
            :func:`hist`.
        weights: (N,) event weights (required).

    Returns:
        (B,) sum of squared weights per bin.

    Raises:
        ValueError: as :func:`hist`.

    Example:
        >>> import jax.numpy as jnp, neosx as nx
        >>> x, w = jnp.array([0.1, 0.2, 0.7]), jnp.array([2.0, 1.0, 3.0])
        >>> nx.hist_sumw2(x, 2, range=(0, 1), bandwidth=0.1, weights=w, hard=True).tolist()
        [5.0, 9.0]
    """
    x, w = _events_and_weights(x, weights, "hist_sumw2")
    return hist(
        x, bins, bandwidth=bandwidth, weights=w**2, method=method, overflow=overflow,
        hard=hard, range=range,
    )


def softmax_hist(
    logits: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    hard: bool = False,
) -> jax.Array:
    """Soft assignment of events to classes (INFERNO's histogram): ``sum_i w_i softmax(l_i/T)``.

    Each event's class probabilities add up to one, so the counts sum to ``sum(weights)``.
    With ``hard=True`` each event goes to its arg-max class (the exact counterpart).

    Args:
        logits: (N, C) per-event scores for C classes (bins), e.g. a network's last layer.
        weights: (N,) event weights; default 1.
        temperature: Softmax temperature T > 0; T -> 0 approaches the hard assignment.
        hard: If True, counts of the arg-max class.

    Returns:
        (C,) counts per class.

    Raises:
        ValueError: logits not 2-D, weights of another length, non-positive temperature.

    Example:
        >>> import jax.numpy as jnp, neosx as nx
        >>> nx.softmax_hist(jnp.array([[5.0, 0.0], [0.0, 5.0], [4.0, 0.0]]), hard=True).tolist()
        [2.0, 1.0]
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"softmax_hist expects (N, C) logits, got shape {logits.shape}")
    if weights is None:
        w = jnp.ones(logits.shape[0], logits.dtype)
    else:
        w = jnp.asarray(weights, logits.dtype)
        if w.shape != logits.shape[:1]:
            raise ValueError(
                f"softmax_hist weights shape {w.shape} does not match logits {logits.shape[:1]}"
            )
    if hard:
        return w @ jax.nn.one_hot(jnp.argmax(logits, axis=1), logits.shape[1], dtype=w.dtype)
    if _is_concrete(temperature) and not np.all(np.asarray(temperature) > 0):
        raise ValueError(f"softmax_hist temperature must be > 0, got temperature={temperature}")
    return w @ jax.nn.softmax(logits / temperature, axis=1)
