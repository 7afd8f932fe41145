"""Speed and peak memory of differentiable histograms: neosx vs relaxed vs a dense jnp formula.

Every implementation computes the binned Gaussian KDE (bKDE) of unweighted events ``x``,

    counts_b = sum_i [Phi((e_{b+1} - x_i) / h) - Phi((e_b - x_i) / h)],

with uniform edges ``e = linspace(0, 1, B + 1)`` and bandwidth ``h = factor * (1 / B)``, and the
benchmark times ``jax.value_and_grad(lambda x: sum(counts(x) ** 2))`` in float64:

- ``neosx``: ``neosx.hist(x, edges, bandwidth=h)`` (default method ``"kde"``);
- ``relaxed``: ``relaxed.hist(x, edges, h)`` from relaxed 0.4.0 (gradhep/relaxed), the anchor,
  which materialises the (B + 1) x N matrix of CDFs;
- ``naive``: the formula above written densely in ``jax.numpy`` (an N x (B + 1) matrix).

Events are ``uniform`` on [0, 1] by default (every bin populated, no event outside the edges);
``--data normal`` draws N(0.5, 0.2) clipped to [0, 1] instead. Edges and bandwidth are concrete
(closed over), as in an analysis with fixed binning.

Each (implementation, N, B) case runs in a fresh Python subprocess, so its peak memory is its own.
The child imports JAX (x64 on) and the implementation, creates the events (fixed seed) and records
its resident set size (RSS) as the baseline; it then times the first ``jit`` call (trace + XLA
compile + one run), times the steady state (median of at least 3 calls and at least 0.5 s of
calls, each ending with ``block_until_ready``) and reports its peak RSS (``ru_maxrss``) and the
increment over the baseline, with the loss value and gradient norm for an accuracy check, as JSON
on stdout. The parent kills a case that runs past ``--timeout`` or whose RSS passes
``--mem-cap-gib`` and prints one Markdown table (stdout) that can be pasted into
``docs/performance.md``; progress goes to stderr.

relaxed is no dependency of neosx; install it in a separate virtual environment. From the
repository root::

    python3 -m venv ../bench-venv
    ../bench-venv/bin/pip install -e . relaxed==0.4.0
    ../bench-venv/bin/python benchmarks/bench_hist.py --quick      # smoke test, about a minute
    ../bench-venv/bin/python benchmarks/bench_hist.py > /tmp/bench_hist_full.md   # full grid

The full grid takes about 5 minutes on 2 cores and needs about 15 GiB of free memory (relaxed and
the dense formula at 1e6 events x 200 bins).

Without relaxed installed the script still runs; its columns read ``n/a``.

``--learnable`` measures instead what training studies run: learnable (traced) edges, or a
traced (annealed) bandwidth on uniform edges, for which ``neosx.hist`` takes its windowed
path (:mod:`neosx.relax._kde_window`). It times, in one process and in alternating rounds,
value+grad of the same loss w.r.t. the events and the edges (or the bandwidth) for neosx,
for the exact dense path that ``neosx.hist`` took before (the formula over checkpointed
chunks of 8 192 events, ``neosx.relax.hist._chunked_event_sum``) and for the naive dense
formula above (one N x (B + 1) matrix); it reports the median of each and the median over
rounds of the paired ratios, which drift of a shared machine's speed does not move::

    python benchmarks/bench_hist.py --learnable --events 1e6 --bins 20 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np
from _machine import machine_lines
from jax.scipy.special import ndtr

LEARNABLE_ROUNDS = 5

HistFn = Callable[[jax.Array, np.ndarray, float], jax.Array]
"""``(events (N,), edges (B + 1,), bandwidth) -> counts (B,)``."""

MIN_REPEATS = 3
MIN_TOTAL_S = 0.5
REL_DIFF_TOL = 1e-9
FULL_EVENTS = (10_000, 100_000, 1_000_000)
FULL_BINS = (10, 100, 200)
QUICK_EVENTS = (10_000, 100_000)
QUICK_BINS = (10, 100)
_POLL_S = 0.1
_MIB = 2**20


def _naive_hist(x: jax.Array, edges: np.ndarray, bandwidth: float) -> jax.Array:
    """The bKDE formula, densely: Phi at every (event, edge) pair, differenced along the bins."""
    cdf = ndtr((edges[None, :] - x[:, None]) / bandwidth)
    return jnp.sum(cdf[:, 1:] - cdf[:, :-1], axis=0)


def _load_neosx() -> HistFn:
    import neosx

    def hist(x: jax.Array, edges: np.ndarray, bandwidth: float) -> jax.Array:
        return neosx.hist(x, edges, bandwidth=bandwidth)

    return hist


def _load_relaxed() -> HistFn:
    import relaxed

    def hist(x: jax.Array, edges: np.ndarray, bandwidth: float) -> jax.Array:
        return relaxed.hist(x, edges, bandwidth)

    return hist


def _load_naive() -> HistFn:
    return _naive_hist


IMPLEMENTATIONS: dict[str, Callable[[], HistFn]] = {
    "neosx": _load_neosx,
    "relaxed": _load_relaxed,
    "naive": _load_naive,
}
"""Name -> loader; a loader imports its package (raising ImportError if absent)."""

DATA: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "uniform": lambda rng, n: rng.uniform(0.0, 1.0, n),
    "normal": lambda rng, n: np.clip(rng.normal(0.5, 0.2, n), 0.0, 1.0),
}
"""Event distributions on the histogram range [0, 1]."""


@dataclass(frozen=True)
class Case:
    """One benchmark point, sent to the child process as JSON."""

    impl: str
    events: int
    bins: int
    bandwidth_factor: float
    data: str
    seed: int


@dataclass(frozen=True)
class Measurement:
    """What a child reports for one case (times in seconds, memory in MiB)."""

    first_call_s: float
    median_s: float
    repeats: int
    baseline_mib: float
    peak_mib: float
    xla_mib: float
    value: float
    grad_norm: float

    @property
    def increment_mib(self) -> float:
        """Peak RSS above the baseline (after imports and data, before compiling)."""
        return self.peak_mib - self.baseline_mib


Outcome = Measurement | str
"""A measurement, or why there is none: ``"timeout"``, ``"OOM"``, ``"error"``."""


def _peak_rss_mib() -> float:
    """Peak RSS of this process (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024) / _MIB


def _rss_mib(pid: int | str = "self") -> float | None:
    """Current RSS of a process from ``/proc`` (Linux); None where unavailable."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / _MIB


def run_case(case: Case) -> Measurement:
    """Measure one case in this process (the child side); see the module docstring."""
    jax.config.update("jax_enable_x64", True)
    hist = IMPLEMENTATIONS[case.impl]()
    edges = np.linspace(0.0, 1.0, case.bins + 1)
    bandwidth = case.bandwidth_factor / case.bins
    x = jax.device_put(DATA[case.data](np.random.default_rng(case.seed), case.events))
    x.block_until_ready()
    baseline = _rss_mib()
    baseline_mib = _peak_rss_mib() if baseline is None else baseline

    def loss(events: jax.Array) -> jax.Array:
        return jnp.sum(hist(events, edges, bandwidth) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    start = time.perf_counter()
    value, grad = jax.block_until_ready(value_and_grad(x))
    first_call_s = time.perf_counter() - start

    times: list[float] = []
    total_s = 0.0
    while len(times) < MIN_REPEATS or total_s < MIN_TOTAL_S:
        start = time.perf_counter()
        jax.block_until_ready(value_and_grad(x))
        times.append(time.perf_counter() - start)
        total_s += times[-1]

    peak_mib = _peak_rss_mib()
    # the computation's own buffers as XLA plans them (temporaries + outputs): memory of the
    # algorithm, free of the compiler's RSS that the peak column also contains
    memory = value_and_grad.lower(x).compile().memory_analysis()
    xla_mib = (memory.temp_size_in_bytes + memory.output_size_in_bytes) / _MIB
    return Measurement(
        first_call_s=first_call_s,
        median_s=float(np.median(times)),
        repeats=len(times),
        baseline_mib=baseline_mib,
        peak_mib=peak_mib,
        xla_mib=xla_mib,
        value=float(value),
        grad_norm=float(jnp.linalg.norm(grad)),
    )


def _run_child(case: Case, timeout_s: float, mem_cap_mib: float) -> Outcome:
    """Run one case in a fresh interpreter, killing it past the time or memory cap."""
    command = [sys.executable, os.path.abspath(__file__), "--case", json.dumps(asdict(case))]
    deadline = time.monotonic() + timeout_s
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        while True:
            try:
                stdout, stderr = child.communicate(timeout=_POLL_S)
                break
            except subprocess.TimeoutExpired:
                killed = None
                if time.monotonic() > deadline:
                    killed = "timeout"
                elif (_rss_mib(child.pid) or 0.0) > mem_cap_mib:
                    killed = "OOM"
                if killed is not None:
                    child.kill()
                    child.communicate()
                    return killed
    if child.returncode == 0:
        return Measurement(**json.loads(stdout.strip().splitlines()[-1]))
    if child.returncode == -signal.SIGKILL or "RESOURCE_EXHAUSTED" in stderr:
        return "OOM"
    print(f"  {case.impl} failed (exit {child.returncode}):\n{stderr[-2000:]}", file=sys.stderr)
    return "error"


def _unavailable(impl: str) -> str | None:
    """Why an implementation cannot run in this environment, or None if it can."""
    try:
        IMPLEMENTATIONS[impl]()
    except (ImportError, AttributeError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def _version_line(impls: Sequence[str], skipped: dict[str, str]) -> str:
    versions = []
    for impl in impls:
        if impl in skipped:
            versions.append(f"{impl} not run ({skipped[impl]})")
        elif impl != "naive":
            versions.append(f"{impl} {sys.modules[impl].__version__}")
    return "- versions: " + (", ".join(versions) if versions else "-")


def _ratio(numerator: Outcome | None, denominator: Outcome | None, attr: str) -> str:
    if not (isinstance(numerator, Measurement) and isinstance(denominator, Measurement)):
        return "n/a"
    low = getattr(denominator, attr)
    return f"{getattr(numerator, attr) / low:.1f}x" if low > 0 else "n/a"


def _spread(outcomes: Sequence[Outcome | None], attr: str) -> str:
    """Largest relative difference of ``attr`` among the implementations that ran."""
    values = [getattr(o, attr) for o in outcomes if isinstance(o, Measurement)]
    if len(values) < 2:
        return "n/a"
    return f"{(max(values) - min(values)) / max(abs(v) for v in values):.1e}"


def _format_ms(seconds: float) -> str:
    """Milliseconds to 3 significant digits, without an exponent."""
    milliseconds = seconds * 1e3
    return f"{milliseconds:.3g}" if milliseconds < 1e3 else f"{milliseconds:,.0f}"


def _impl_cells(outcome: Outcome | None) -> list[str]:
    if outcome is None:
        return ["n/a"] * 5
    if isinstance(outcome, str):
        return ["—", outcome, "—", "—", "—"]
    return [
        f"{outcome.first_call_s:.2f}",
        _format_ms(outcome.median_s),
        f"{outcome.peak_mib:.0f}",
        f"{outcome.increment_mib:.0f}",
        f"{outcome.xla_mib:.1f}",
    ]


def format_table(results: dict[tuple[int, int], dict[str, Outcome]]) -> list[str]:
    """The Markdown table: per-implementation columns, then ratios against neosx."""
    header = ["N", "B"]
    for impl in IMPLEMENTATIONS:
        header += [
            f"{impl} 1st call s", f"{impl} ms", f"{impl} peak MiB", f"{impl} Δ MiB",
            f"{impl} XLA MiB",
        ]
    for other in IMPLEMENTATIONS:
        if other != "neosx":
            header += [f"time {other}/neosx", f"Δ mem {other}/neosx", f"XLA mem {other}/neosx"]
    header += ["max rel. diff value", "max rel. diff ‖∇‖"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (events, bins), row in results.items():
        cells = [f"{events:,}", str(bins)]
        for impl in IMPLEMENTATIONS:
            cells += _impl_cells(row.get(impl))
        for other in IMPLEMENTATIONS:
            if other != "neosx":
                cells += [
                    _ratio(row.get(other), row.get("neosx"), "median_s"),
                    _ratio(row.get(other), row.get("neosx"), "increment_mib"),
                    _ratio(row.get(other), row.get("neosx"), "xla_mib"),
                ]
        outcomes = list(row.values())
        cells += [_spread(outcomes, "value"), _spread(outcomes, "grad_norm")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _accuracy_note(results: dict[tuple[int, int], dict[str, Outcome]]) -> str:
    """One line: which cases, if any, disagree by more than ``REL_DIFF_TOL``."""
    spreads = {
        f"N={events:,} B={bins} {attr}": spread
        for (events, bins), row in results.items()
        for attr in ("value", "grad_norm")
        if (spread := _spread(list(row.values()), attr)) != "n/a"
    }
    if not spreads:
        return "Accuracy not checked: no case ran with two or more implementations."
    worst = [
        f"{case}: {spread}" for case, spread in spreads.items() if float(spread) > REL_DIFF_TOL
    ]
    if worst:
        return f"Relative differences above {REL_DIFF_TOL:g}: " + "; ".join(worst) + "."
    return (
        f"Accuracy: in all {len(spreads) // 2} cases compared, the implementations agree to"
        f" {REL_DIFF_TOL:g} (value and gradient norm)."
    )


def _learnable_losses(
    x: jax.Array, bins: int, bandwidth: float
) -> dict[str, tuple[Callable[..., tuple[jax.Array, ...]], tuple[jax.Array, ...]]]:
    """Name -> (jitted value+grad of sum(counts²) w.r.t. all its arguments, arguments)."""
    import importlib

    import neosx

    hist_module = importlib.import_module("neosx.relax.hist")
    dense_path, cdf = hist_module._chunked_event_sum, hist_module.gaussian_cdf
    uniform = np.linspace(0.0, 1.0, bins + 1)

    def dense(x: jax.Array, edges: jax.Array, h: jax.Array) -> jax.Array:
        sums = dense_path(lambda xc: cdf((edges[None, :] - xc[:, None]) / h), x, jnp.ones_like(x))
        return jnp.diff(sums)

    counts: dict[str, tuple[Callable[..., jax.Array], tuple[jax.Array, ...]]] = {
        "neosx edges": (lambda x, e: neosx.hist(x, e, bandwidth=bandwidth), (x, uniform)),
        "dense edges": (lambda x, e: dense(x, e, bandwidth), (x, uniform)),
        "naive edges": (lambda x, e: _naive_hist(x, e, bandwidth), (x, uniform)),
        "neosx h": (lambda x, h: neosx.hist(x, uniform, bandwidth=h), (x, bandwidth)),
        "dense h": (lambda x, h: dense(x, uniform, h), (x, bandwidth)),
    }
    return {
        name: (
            jax.jit(jax.value_and_grad(
                lambda *a, f=f: jnp.sum(f(*a) ** 2), argnums=tuple(range(len(args)))
            )),
            tuple(jnp.asarray(a) for a in args),
        )
        for name, (f, args) in counts.items()
    }


def run_learnable(
    events: Sequence[int], bins: Sequence[int], factor: float, data: str, seed: int, rounds: int
) -> list[str]:
    """Paired timing of learnable edges / traced bandwidth (see the module docstring)."""
    jax.config.update("jax_enable_x64", True)
    header = [
        "| N | B | path | compile s | neosx ms | dense ms | naive ms | dense/neosx (paired) |"
        " naive/neosx (paired) | max rel. diff value, ∇ vs dense |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n_events in events:
        x = jax.device_put(DATA[data](np.random.default_rng(seed), n_events))
        for n_bins in bins:
            losses = _learnable_losses(x, n_bins, factor / n_bins)
            compile_s, results = {}, {}
            for name, (fn, args) in losses.items():
                start = time.perf_counter()
                results[name] = jax.block_until_ready(fn(*args))
                compile_s[name] = time.perf_counter() - start
            times = {name: [] for name in losses}
            for _ in range(rounds):  # alternating rounds: every implementation once per round
                for name, (fn, args) in losses.items():
                    # an untimed call first: the naive formula's gigabytes of temporaries
                    # would otherwise slow down whichever call follows them
                    jax.block_until_ready(fn(*args))
                    start = time.perf_counter()
                    jax.block_until_ready(fn(*args))
                    times[name].append(time.perf_counter() - start)
                print(f"  N={n_events:,} B={n_bins} round done", file=sys.stderr, flush=True)
            t = {name: np.asarray(v) for name, v in times.items()}
            for path in ("edges", "h"):
                ours, dense = results[f"neosx {path}"], results[f"dense {path}"]
                diff = max(
                    float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
                    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(dense), strict=True)
                )
                naive = t.get(f"naive {path}")
                cells = [
                    f"{n_events:,}", str(n_bins), "learnable edges" if path == "edges"
                    else "traced bandwidth", f"{compile_s[f'neosx {path}']:.2f}",
                    _format_ms(np.median(t[f"neosx {path}"])),
                    _format_ms(np.median(t[f"dense {path}"])),
                    "—" if naive is None else _format_ms(np.median(naive)),
                    f"{np.median(t[f'dense {path}'] / t[f'neosx {path}']):.1f}x",
                    "—" if naive is None else f"{np.median(naive / t[f'neosx {path}']):.1f}x",
                    f"{diff:.1e}",
                ]
                header.append("| " + " | ".join(cells) + " |")
    return header


def _count(text: str) -> int:
    """An event or bin count; accepts ``100000`` and ``1e5``."""
    value = float(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(value)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small grid for a smoke test: N in {QUICK_EVENTS}, B in {QUICK_BINS}",
    )
    parser.add_argument(
        "--events", type=_count, nargs="+", help=f"event counts N (default {FULL_EVENTS})"
    )
    parser.add_argument(
        "--bins", type=_count, nargs="+", help=f"bin counts B (default {FULL_BINS})"
    )
    parser.add_argument(
        "--impls",
        nargs="+",
        choices=list(IMPLEMENTATIONS),
        default=list(IMPLEMENTATIONS),
        help="implementations to run (default all)",
    )
    parser.add_argument(
        "--bandwidth-factor",
        type=float,
        default=1.0,
        help="bandwidth in units of the bin width (default 1)",
    )
    parser.add_argument(
        "--data",
        choices=list(DATA),
        default="uniform",
        help="event distribution on [0, 1] (default uniform)",
    )
    parser.add_argument("--seed", type=int, default=0, help="event seed (default 0)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds per case before it is killed (default 300)",
    )
    parser.add_argument(
        "--mem-cap-gib",
        type=float,
        default=20.0,
        help="RSS per case before it is killed as OOM (default 20 GiB)",
    )
    parser.add_argument(
        "--learnable",
        action="store_true",
        help="paired in-process timing of learnable edges and a traced bandwidth against the"
        " dense paths (default grid N=1e6, B in 20 100)",
    )
    parser.add_argument(
        "--rounds", type=int, default=LEARNABLE_ROUNDS,
        help=f"alternating rounds for --learnable (default {LEARNABLE_ROUNDS})",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _header_lines(args: argparse.Namespace, skipped: dict[str, str]) -> list[str]:
    """Title, command line, machine, versions and setup, as Markdown."""
    return [
        "## Differentiable histogram: value+grad of sum(counts²) w.r.t. the events\n",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        *machine_lines(),
        _version_line(args.impls, skipped),
        f"- events: {args.data} on [0, 1] (seed {args.seed}), unweighted;"
        f" edges linspace(0, 1, B+1); bandwidth {args.bandwidth_factor:g} x bin width; float64",
        "- one fresh process per case; '1st call' = trace + compile + one run; 'ms' = median"
        f" steady-state call (≥ {MIN_REPEATS} calls and ≥ {MIN_TOTAL_S} s); 'peak' = ru_maxrss"
        " (JAX included); 'Δ' = peak - RSS after imports and data, before compiling (it"
        " includes XLA's compiler, ~90 MiB for every implementation); 'XLA' = the compiled"
        " computation's temporary + output buffers (compiled.memory_analysis());"
        f" limits {args.timeout:g} s and {args.mem_cap_gib:g} GiB per case\n",
    ]


def run_grid(
    cases: Sequence[Case], timeout_s: float, mem_cap_mib: float
) -> dict[tuple[int, int], dict[str, Outcome]]:
    """Run every case in its own process, reporting progress on stderr."""
    results: dict[tuple[int, int], dict[str, Outcome]] = {}
    for index, case in enumerate(cases, start=1):
        label = f"[{index}/{len(cases)}] {case.impl} N={case.events:,} B={case.bins}"
        print(label, end=" ... ", file=sys.stderr, flush=True)
        outcome = _run_child(case, timeout_s, mem_cap_mib)
        results.setdefault((case.events, case.bins), {})[case.impl] = outcome
        if isinstance(outcome, Measurement):
            outcome_text = f"{_format_ms(outcome.median_s)} ms, +{outcome.increment_mib:.0f} MiB"
        else:
            outcome_text = outcome
        print(outcome_text, file=sys.stderr, flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Run the grid (or, with the internal ``--case``, one case) and print the report."""
    args = _parse_args(argv)
    if args.case is not None:
        print(json.dumps(asdict(run_case(Case(**json.loads(args.case))))))
        return
    if args.learnable:
        lines = run_learnable(
            args.events or (1_000_000,), args.bins or (20, 100), args.bandwidth_factor,
            args.data, args.seed, args.rounds,
        )
        print(
            "## Learnable edges / traced bandwidth: value+grad of sum(counts²), paired rounds\n",
            f"- command: `{shlex.join(['python', *sys.argv])}`", *machine_lines(),
            f"- events: {args.data} on [0, 1] (seed {args.seed}); edges linspace(0, 1, B+1)"
            f" (traced for 'learnable edges'); bandwidth {args.bandwidth_factor:g} x bin width"
            f" (traced for 'traced bandwidth'); float64; {args.rounds} alternating rounds,"
            " medians; ratios are medians of the per-round ratios\n", *lines, sep="\n",
        )
        return

    skipped = {impl: reason for impl in args.impls if (reason := _unavailable(impl))}
    for impl, reason in skipped.items():
        print(
            f"note: {impl} is not importable here, its columns read n/a ({reason})", file=sys.stderr
        )
    header = _header_lines(args, skipped)
    cases = [
        Case(impl, n_events, n_bins, args.bandwidth_factor, args.data, args.seed)
        for n_events in args.events or (QUICK_EVENTS if args.quick else FULL_EVENTS)
        for n_bins in args.bins or (QUICK_BINS if args.quick else FULL_BINS)
        for impl in args.impls
        if impl not in skipped
    ]
    results = run_grid(cases, args.timeout, args.mem_cap_gib * 1024)
    print(*header, *format_table(results), "", _accuracy_note(results), sep="\n")


if __name__ == "__main__":
    main()
