"""Checks of the inputs pyhf refuses (or silently mis-handles), run before tracing.

Shapes are static, so they are checked on every call, traced or not. Values are checked only
where they are concrete: under ``jax.jit`` / ``grad`` / ``vmap`` they are tracers, the checks
are skipped, and invalid values give NaN (as in pyhf's numpy backend). Each helper raises a
one-line ``ValueError`` naming the argument (or spec field), the entry and its value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from neosx.histfactory.interpolation import HISTOSYS_CODES, NORMSYS_CODES

if TYPE_CHECKING:
    from neosx.histfactory.config import HistFactoryConfig

__all__ = [
    "check_interpcodes",
    "check_parameters",
    "check_unique",
    "check_values",
    "check_within_bounds",
    "checked_data",
    "checked_shape",
    "is_traced",
]


def is_traced(*trees: Any) -> bool:
    """Whether any leaf of ``trees`` is a JAX tracer (its value unknown until run time)."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(trees))


def checked_shape(name: str, value: Any, shapes: tuple[tuple[int, ...], ...]) -> Any:
    """``value`` as an array (numpy and jax arrays pass as they are) of one of ``shapes``.

    Raises:
        ValueError: ``"{name} has shape (5,), expected (6,)"``.
    """
    if not isinstance(value, jax.Array | np.ndarray):
        value = jnp.asarray(value, dtype=jnp.float64)  # also stacks lists of tracers
    if tuple(value.shape) not in shapes:
        expected = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {expected}")
    return value


def _entry(name: str, shape: tuple[int, ...], flat: int) -> str:
    return name if not shape else f"{name}[{', '.join(map(str, np.unravel_index(flat, shape)))}]"


#: What :func:`check_values` requires of every entry besides being finite, as a test of the
#: entries (or of their minimum), and the message if it fails.
_BOUNDS = {
    "finite": (lambda x: x > -np.inf, ""),
    "nonnegative": (lambda x: x >= 0, "is negative"),
    "positive": (lambda x: x > 0, "must be > 0"),
}


def check_values(name: str, value: Any, *, bound: str = "nonnegative") -> None:
    """Raise unless every entry of a concrete ``value`` is finite and within ``bound``.

    Tracers pass unchecked.

    Args:
        name: Argument or spec field, for the message.
        value: Array-like.
        bound: ``"nonnegative"`` (>= 0), ``"positive"`` (> 0) or ``"finite"`` (any sign).

    Raises:
        ValueError: e.g. ``"yields['SR']['bkg'][0] = -50.0 is negative"``.
    """
    if is_traced(value):
        return
    array = np.asarray(value, dtype=np.float64)
    accept, problem = _BOUNDS[bound]
    if array.size == 0 or (accept(array.min()) and array.max() < np.inf):  # NaN fails both
        return
    invalid = ~(np.isfinite(array) & accept(array))
    flat = int(np.flatnonzero(invalid.ravel())[0])
    number = float(array.ravel()[flat])
    if not np.isfinite(number):
        problem = "is not finite"
    raise ValueError(f"{_entry(name, array.shape, flat)} = {number!r} {problem}")


def checked_data(config: HistFactoryConfig, data: Any, *, values: bool = True) -> Any:
    """``data`` checked to be (nmaindata + nauxdata,) or (nmaindata,) and, where concrete and
    ``values`` is set, finite with main counts >= 0.

    Auxiliary data of Gaussian constraints may be negative (the Asimov data of a pulled
    nuisance parameter); main counts may not (pyhf's fits fail on them).

    Raises:
        ValueError: e.g. ``"data has shape (6,), expected (7,) or (2,)"``, ``"data[0] = -1.0
            is negative"``.
    """
    n_main, n_all = config.nmaindata, config.nmaindata + config.nauxdata
    data = checked_shape("data", data, ((n_all,), (n_main,)))
    if values and not is_traced(data):
        array = np.asarray(data, dtype=np.float64)
        check_values("data", array, bound="finite")
        check_values("data", array[:n_main])
    return data


def check_within_bounds(
    name: str, values: Any, bounds: np.ndarray, labels: Sequence[str]
) -> None:
    """Raise unless each entry of a concrete ``values`` lies in its ``[lower, upper]``.

    pyhf refuses a fit whose initial or fixed values lie outside the bounds; so does neosx.
    Tracers pass unchecked.

    Args:
        name: Argument name, for the message.
        values: (n,) or () values.
        bounds: (n, 2) bounds.
        labels: (n,) parameter names, for the message.

    Raises:
        ValueError: e.g. ``"init[2] = -5.0 (parameter 'mu') is outside its bounds [0.0, 10.0]"``.
    """
    if is_traced(values):
        return
    array = np.asarray(values, dtype=np.float64)
    flat = np.broadcast_to(array, (len(labels),))
    outside = ~((bounds[:, 0] <= flat) & (flat <= bounds[:, 1]))  # NaN is outside
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        entry = _entry(name, array.shape, i if array.ndim else 0)
        raise ValueError(
            f"{entry} = {float(flat[i])!r} (parameter '{labels[i]}') is outside its bounds "
            f"{bounds[i].tolist()}"
        )


def check_unique(what: str, names: Iterable[str]) -> None:
    """Raise if ``names`` repeat one (pyhf would silently keep only the last of them).

    Raises:
        ValueError: e.g. ``"channel 'SR': sample name 'bkg' appears more than once"``.
    """
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} name {name!r} appears more than once")
        seen.add(name)


def check_parameters(parameters: Sequence[Mapping[str, Any]]) -> None:
    """Check a measurement's parameter settings: ordered bounds, positive widths.

    Raises:
        ValueError: e.g. ``"parameters['lumi']: bounds[0] = [1.1, 0.9] has lower > upper"``.
    """
    for parameter in parameters:
        where = f"parameters['{parameter['name']}']"
        for i, (lower, upper) in enumerate(parameter.get("bounds", ())):
            if not lower <= upper:
                raise ValueError(
                    f"{where}: bounds[{i}] = {[lower, upper]} has lower > upper (or is NaN)"
                )
        if "sigmas" in parameter:
            check_values(f"{where}: sigmas", parameter["sigmas"], bound="positive")


#: Interpolation codes neosx implements, by modifier type.
_CODES: dict[str, Mapping[str, Any]] = {"normsys": NORMSYS_CODES, "histosys": HISTOSYS_CODES}


def check_interpcodes(settings: Mapping[str, Mapping[str, str]] | None) -> None:
    """Check pyhf ``modifier_settings``: each interpolation code is one neosx implements.

    pyhf refuses unknown codes with an ``AssertionError`` and no message; here the message
    names the setting. (pyhf also has histosys ``code2``, which neosx does not implement.)

    Raises:
        ValueError: e.g. ``"modifier_settings['histosys']['interpcode']: histosys
            interpolation 'code9' is not supported; use one of ['code0', 'code4p']"``.
    """
    for mtype, codes in _CODES.items():
        code = (settings or {}).get(mtype, {}).get("interpcode")
        if code is not None and code not in codes:
            raise ValueError(
                f"modifier_settings['{mtype}']['interpcode']: {mtype} interpolation {code!r} "
                f"is not supported; use one of {sorted(codes)}"
            )
