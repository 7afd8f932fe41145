"""`HistFactory`: a pyhf-format statistical model compiled once, evaluated by pure JAX."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pyhf
from jax import Array
from jax.typing import ArrayLike

from neosx.histfactory import likelihood
from neosx.histfactory._checks import (
    check_interpcodes,
    check_values,
    check_within_bounds,
    checked_data,
    checked_shape,
    is_traced,
)
from neosx.histfactory.config import HistFactoryConfig
from neosx.histfactory.layout import Layout, compile_layout
from neosx.histfactory.likelihood import OverrideSlot, Prepared
from neosx.histfactory.spec import pyhf_boundary, resolve_source
from neosx.histfactory.yields import parse_histograms

__all__ = ["HistFactory"]

Yields = Mapping[str, Mapping[str, Any]] | Prepared

#: What a concrete override value must be, by the kind of data it replaces: yields and Σw²
#: (or absolute uncertainties) >= 0, normsys factors > 0 (pyhf takes their logarithms).
_BOUND = {"data": "nonnegative", "histosys": "nonnegative", "staterror": "nonnegative",
          "shapesys": "nonnegative", "normsys": "positive"}


def _require_float64() -> None:
    if jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
        raise RuntimeError(
            "HistFactory likelihoods need float64, but JAX runs in float32: call "
            'jax.config.update("jax_enable_x64", True) at start-up (or set JAX_ENABLE_X64=1)'
        )


def _prepare(layout: Layout, slots: tuple[OverrideSlot, ...], values: Any) -> Prepared:
    return likelihood.prepare(layout, likelihood.apply_overrides(layout, slots, values))


def _expected_data(
    layout: Layout, include_auxdata: bool, pars: Array, prepared: Prepared
) -> Array:
    main = jnp.sum(likelihood.rates_by_sample(layout, pars, prepared), axis=0)
    if not include_auxdata:
        return main
    return jnp.concatenate([main, likelihood.expected_auxdata(layout, pars, prepared)])


#: Fields of :class:`Prepared` that are finite for valid yields, and what it means if not.
_PREPARED_CAUSES = (
    (("nominal", "histosys_delta"), "the yields (nominal or histosys templates) are not finite"),
    (("normal_scale", "normal_log_norm"), "a staterror or Gaussian width is 0 or not finite"),
    (("poisson_factor", "auxdata"), "a shapesys scale factor or auxiliary datum is not finite"),
)


@jax.tree_util.register_pytree_node_class
class HistFactory:
    """A HistFactory model (pyhf semantics) whose likelihood is a pure JAX function.

    The spec is validated by pyhf's schema and compiled once: parameter order, bounds,
    inits, auxiliary data and constraint widths come from a ``pyhf.Model`` built on the
    spec's yields; the modifier layout becomes static index arrays. ``expected_data`` and
    ``logpdf`` are then pure functions of the parameters and, optionally, of **yields
    overrides** replacing the spec's numbers with (traced) arrays.

    **Yields overrides** use the nested format of :mod:`neosx.histfactory.yields`::

        yields = {
            "SR": {
                "signal": sig,                                    # nominal (n_bins,)
                "bkg": {
                    "data": bkg,                                  # nominal (n_bins,)
                    "histosys": {"jes": {"hi_data": up, "lo_data": down}},
                    "normsys": {"xsec": {"hi": 1.1, "lo": 0.9}},  # scalars
                    "staterror": {"staterror_SR": {"sumw2": w2}}, # or the uncertainty
                    "shapesys": {"bkg_mc": unc},                  # absolute uncertainty
                },
            },
        }

    Every field is optional; whatever is not given comes from the spec. ``yields`` may also
    be the result of :meth:`prepare`, which applies an override once for many evaluations
    (as fits do). Quantities that depend on the yields are recomputed from the overrides as
    pyhf would on a spec rebuilt with them: histosys deltas use the current nominal,
    staterror widths are ``sqrt(Σ_samples Σw²) / Σ_samples nominal`` per bin, shapesys
    ``tau = nominal² / Σw²`` (which is also the shapesys auxiliary data, see :meth:`auxdata`).
    Where the measurement sets ``sigmas`` (staterror) or ``factors`` / ``auxdata``
    (shapesys), those win, as in pyhf.

    The model is a pytree without leaves (hashed by identity), so it can be passed to
    ``jax.jit``-ed functions as an ordinary argument.

    Attributes:
        config: The :class:`HistFactoryConfig` (parameter order, bounds, inits, auxdata...).
        spec: The model spec (``{"channels": ..., "parameters": ...}``) that was compiled.
        pyhf_model: The ``pyhf.Model`` built on the spec's yields (the reference; e.g.
            ``workspace.data(model.pyhf_model)`` orders observations as this model does).

    Args:
        source: A pyhf workspace (``pyhf.Workspace`` or its JSON dict), a model spec
            ``{"channels": ..., "parameters": ...}``, or a ``pyhf.Model`` (e.g.
            ``workspace.model(patches=[patch])``).
        poi_name: Parameter of interest; default the measurement's (workspace), the
            model's (``pyhf.Model``), or ``"mu"`` if a model spec declares it, else none.
        measurement: Measurement name or index of a workspace (default the first).
        modifier_settings: pyhf's interpolation settings, e.g.
            ``{"normsys": {"interpcode": "code1"}, "histosys": {"interpcode": "code0"}}``;
            default pyhf's (normsys code4, histosys code4p). As in pyhf, a type missing
            from a given mapping gets pyhf's class default (code1 / code0).

    Raises:
        ValueError: If pyhf rejects the input (schema, measurement, POI), an array has the
            wrong length (naming channel, sample and modifier), a yield, histosys template
            or staterror / shapesys uncertainty is negative or not finite, a normsys factor
            is not > 0, a channel or sample name repeats, the measurement's bounds have
            lower > upper (or an init lies outside them), or an interpolation code is not
            supported (normsys: code1, code4; histosys: code0, code4p).

    Example:
        >>> import jax
        >>> jax.config.update("jax_enable_x64", True)
        >>> spec = {"channels": [{"name": "SR", "samples": [
        ...     {"name": "sig", "data": [5.0], "modifiers": [
        ...         {"name": "mu", "type": "normfactor", "data": None}]},
        ...     {"name": "bkg", "data": [50.0], "modifiers": [
        ...         {"name": "unc", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}]}]}]}
        >>> model = HistFactory(spec)
        >>> model.config.par_order, model.config.poi_index
        (('mu', 'unc'), 0)
        >>> pars = jax.numpy.array([1.0, 0.0])
        >>> model.expected_data(pars).tolist()
        [55.0, 0.0]
        >>> float(model.expected_data(pars, yields={"SR": {"sig": [10.0]}})[0])
        60.0
    """

    def __init__(
        self,
        source: Any,
        *,
        poi_name: str | None = None,
        measurement: str | int | None = None,
        modifier_settings: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        spec, poi, settings = resolve_source(source, poi_name=poi_name, measurement=measurement)
        settings = dict(modifier_settings) if modifier_settings is not None else settings
        check_interpcodes(settings)
        with pyhf_boundary("the model spec"):
            kwargs = {} if settings is None else {"modifier_settings": settings}
            self.pyhf_model = pyhf.Model(spec, poi_name=poi, validate=False, **kwargs)
        self.spec: Mapping[str, Any] = self.pyhf_model.spec
        self._layout = compile_layout(self.spec, self.pyhf_model)
        self.config = HistFactoryConfig.from_pyhf(self.pyhf_model, self._layout)
        check_within_bounds(
            "suggested_init", self.config.suggested_init, self.config.suggested_bounds,
            self.config.par_names,
        )
        self._site_modifiers = {
            (channel["name"], sample["name"]): [(m["type"], m["name"]) for m in sample["modifiers"]]
            for channel in self.spec["channels"]
            for sample in channel["samples"]
        }
        layout = self._layout
        self._prepare = jax.jit(functools.partial(_prepare, layout), static_argnums=0)
        self._logpdf = jax.jit(functools.partial(likelihood.logpdf, layout), static_argnums=3)
        self._expected = jax.jit(functools.partial(_expected_data, layout), static_argnums=0)
        self._by_sample = jax.jit(functools.partial(likelihood.rates_by_sample, layout))
        self._constraint = jax.jit(functools.partial(likelihood.constraint_logpdf, layout))
        self._information = jax.jit(functools.partial(likelihood.constraint_information, layout))

    def __repr__(self) -> str:
        c = self.config
        return (
            f"HistFactory(channels={list(c.channels)}, samples={list(c.samples)}, "
            f"npars={c.npars}, poi={c.poi_name!r})"
        )

    def tree_flatten(self) -> tuple[tuple[()], HistFactory]:
        """Flatten as a pytree without leaves (the model is static)."""
        return (), self

    @classmethod
    def tree_unflatten(cls, model: HistFactory, _: tuple[()]) -> HistFactory:
        """Rebuild from :meth:`tree_flatten`."""
        return model

    @functools.cached_property
    def kinked_parameters(self) -> np.ndarray:
        """Indices of the parameters whose interpolation has a kink at 0 (histosys code0,
        normsys code1: piecewise in alpha), where the likelihood's slope may jump and a fit
        cannot see a second minimum from the curvature."""
        layout = self._layout
        kinked = [layout.histosys_par] if layout.histosys_code == "code0" else []
        kinked += [layout.normsys_par] if layout.normsys_code == "code1" else []
        return np.unique(np.concatenate([np.zeros(0, int), *kinked]).astype(int))

    @functools.cached_property
    def gaussian_constraints(self) -> tuple[np.ndarray, np.ndarray]:
        """``(positions in the auxiliary data, parameter indices)`` of the Gaussian-constrained
        parameters, in pyhf's auxiliary-data order; every other auxiliary datum is a Poisson
        constraint's (shapesys)."""
        return np.asarray(self._layout.normal_aux), np.asarray(self._layout.normal_par)

    @functools.cached_property
    def _spec_prepared(self) -> Prepared:
        """:meth:`prepare` of the spec's own yields, as constants (computed once)."""
        # compiled and run ahead of time: concrete even when first needed under a trace
        prepared = self._prepare.lower((), ()).compile()(())
        return Prepared(*(np.asarray(field) for field in prepared))

    _UNPACKED = ("histosys_delta",)
    """Fields of the spec's prepared yields that stay constants of their own when traced."""

    @functools.cached_property
    def _spec_packed(self) -> np.ndarray:
        """The fields of :attr:`_spec_prepared` but :attr:`_UNPACKED`, raveled end to end."""
        prepared = self._spec_prepared
        return np.concatenate([
            np.ravel(value) for name, value in zip(Prepared._fields, prepared, strict=True)
            if name not in self._UNPACKED
        ])

    def _prepared_for(self, yields: Yields | None, *operands: Any) -> Prepared:
        """:meth:`prepare` of ``yields``, as a function of ``operands`` should use it.

        Traced, the spec's own yields are constants of the compiled program, and XLA's CPU
        runtime spends ~0.1 us per constant buffer at every call; it also cuts them into
        more constants (one per normsys interpolation coefficient: 13 in the 3-bin
        displaced-leptons logpdf). So they enter as one constant behind an optimisation
        barrier, sliced into the fields after it. One field stays a constant of its own: the
        histosys deltas, a matrix product's operand, which a slice would copy at every call.
        Same process, two cores: logpdf of displaced leptons 9.1 -> 7.5 us, of the 10-bin
        synthetic model 8.7 -> 7.0 us, of ttbar 16.3 -> 14.1 us, of 1000 bins 22.5 -> 21.6 us
        (with the Gaussian widths a constant of their own as well; now that the prepared
        yields hold their logarithms, they are packed too).
        """
        prepared = self.prepare(yields)
        if prepared is not self._spec_prepared or not is_traced(*operands):
            return prepared
        packed = jax.lax.optimization_barrier(jnp.asarray(self._spec_packed))
        fields, start = [], 0
        for name, value in zip(Prepared._fields, prepared, strict=True):
            if name not in self._UNPACKED:
                value = jnp.reshape(packed[start : start + value.size], value.shape)
                start += value.size
            fields.append(value)
        return Prepared(*fields)

    def prepare(self, yields: Yields | None = None) -> Prepared:
        """Apply a yields override once, for many evaluations of the likelihood.

        Everything of the likelihood that depends on the yields but not on the parameters
        (histosys deltas, normsys interpolation coefficients, staterror widths, shapesys
        scale factors and auxiliary data) is computed here. Every method taking ``yields``
        also takes the result, so a fit prepares the yields once instead of at every step.

        Args:
            yields: A yields override (see the class docstring), an already prepared one
                (returned as it is), or ``None`` (the spec's yields).

        Returns:
            A :class:`~neosx.histfactory.likelihood.Prepared` pytree of arrays,
            differentiable w.r.t. the override.

        Raises:
            ValueError: If the override does not fit the model (names, shapes), or a
                concrete value is invalid: a yield, template or Σw² (uncertainty) negative
                or not finite, a normsys factor not > 0. Traced values are not checked.
            RuntimeError: If JAX runs in float32.

        Example:
            >>> prepared = model.prepare({"SR": {"sig": [10.0]}})  # doctest: +SKIP
            >>> model.logpdf(pars, data, yields=prepared)  # doctest: +SKIP
        """
        _require_float64()
        if isinstance(yields, Prepared):
            return yields
        if yields is None:
            return self._spec_prepared
        slots, values = self._overrides(yields)
        return self._prepare(slots, values)

    def _overrides(
        self, yields: Mapping[str, Mapping[str, Any]]
    ) -> tuple[tuple[OverrideSlot, ...], tuple[Any, ...]]:
        """Check a yields override against the model and map it to layout slots."""
        slots, values = [], []
        for (channel, sample), entry in parse_histograms(yields).items():
            path = f"yields['{channel}']['{sample}']"
            if channel not in self.config.channel_nbins:
                raise ValueError(
                    f"yields: unknown channel '{channel}'; the model's channels are "
                    f"{list(self.config.channels)}"
                )
            if (channel, sample) not in self._site_modifiers:
                present = [s for c, s in self._site_modifiers if c == channel]
                raise ValueError(
                    f"{path}: channel '{channel}' has no sample '{sample}'; its samples are "
                    f"{present}"
                )
            nbins = (self.config.channel_nbins[channel],)
            requests = [(("data", channel, sample), entry.data, nbins, False, path)]
            for (mtype, name), fields in entry.modifiers.items():
                if (mtype, name) not in self._site_modifiers[channel, sample]:
                    same_type = [n for t, n in self._site_modifiers[channel, sample] if t == mtype]
                    raise ValueError(
                        f"{path}['{mtype}']['{name}']: sample '{sample}' in channel "
                        f"'{channel}' has no {mtype} modifier '{name}'; its {mtype} "
                        f"modifiers are {same_type}"
                    )
                for field, value in fields.items():
                    suffix = "" if field == "uncertainty" else f"['{field}']"
                    requests.append(
                        (
                            (mtype, name, channel, sample, "sumw2" if suffix == "" else field),
                            value,
                            () if mtype == "normsys" else nbins,
                            field == "uncertainty",
                            f"{path}['{mtype}']['{name}']{suffix}",
                        )
                    )
            for key, value, shape, square, where in requests:
                if value is not None:
                    value = checked_shape(where, value, (shape,))
                    check_values(where, value, bound=_BOUND[key[0]])
                    values.append(value)
                    slots.append((*self._layout.slots[key], square))
        return tuple(slots), tuple(values)

    def _pars(self, pars: ArrayLike) -> Array:
        _require_float64()
        pars = checked_shape("pars", pars, ((self.config.npars,),))
        return jnp.asarray(pars, dtype=jnp.float64)

    def expected_rates_by_sample(self, pars: ArrayLike, yields: Yields | None = None) -> Array:
        """Expected rate of every sample in every bin.

        Args:
            pars: Parameters (npars,), ordered as ``config.par_names``.
            yields: Optional yields override (see the class docstring).

        Returns:
            Rates (n_samples, nmaindata) in events; rows follow ``config.samples``.

        Raises:
            ValueError: If ``pars`` or the override do not fit the model.
            RuntimeError: If JAX runs in float32.

        Example:
            With ``model`` of the class example:

            >>> model.expected_rates_by_sample(model.config.suggested_init)  # doctest: +SKIP
            Array([[50.], [ 5.]], dtype=float64)
        """
        pars = self._pars(pars)
        return self._by_sample(pars, self._prepared_for(yields, pars))

    def expected_data(
        self, pars: ArrayLike, yields: Yields | None = None, include_auxdata: bool = True
    ) -> Array:
        """Expected main counts, followed by the expected auxiliary data.

        Equals ``pyhf.Model.expected_data``: main bins in ``config.channels`` order, then
        theta (Gaussian) and gamma * tau (Poisson constraints) in pyhf's auxdata order.
        Negative expected counts are returned as they are.

        Args:
            pars: Parameters (npars,), ordered as ``config.par_names``.
            yields: Optional yields override (see the class docstring).
            include_auxdata: Whether to append the expected auxiliary data.

        Returns:
            (nmaindata + nauxdata,) or (nmaindata,) expected counts.

        Raises:
            ValueError: If ``pars`` or the override do not fit the model.
            RuntimeError: If JAX runs in float32.

        Example:
            With ``model`` of the class example:

            >>> model.expected_data(model.config.suggested_init)  # doctest: +SKIP
            Array([55.,  0.], dtype=float64)
        """
        pars = self._pars(pars)
        return self._expected(bool(include_auxdata), pars, self._prepared_for(yields, pars))

    def auxdata(self, yields: Yields | None = None) -> Array:
        """Observed auxiliary data implied by the yields.

        Equals ``config.auxdata`` without override; with one, the shapesys entries become
        the overridden ``tau = nominal² / Σw²`` (pyhf's auxdata of the rebuilt spec).

        Args:
            yields: Optional yields override (see the class docstring).

        Returns:
            (nauxdata,) auxiliary data.

        Raises:
            ValueError: If the override does not fit the model.
            RuntimeError: If JAX runs in float32.

        Example:
            With ``model`` of the class example (one normsys, auxiliary datum 0):

            >>> model.auxdata()  # doctest: +SKIP
            Array([0.], dtype=float64)
        """
        return jnp.asarray(self.prepare(yields).auxdata)

    def logpdf(self, pars: ArrayLike, data: ArrayLike, yields: Yields | None = None) -> Array:
        """Log-likelihood of the data: Poisson main term plus constraint terms (pyhf's).

        Returns a scalar (pyhf returns shape (1,)). Called eagerly (concrete inputs), a
        negative expected rate raises ``ValueError`` naming channel, bin, sample and the
        histosys modifiers pulling it down; under ``jax.jit`` / ``vmap`` / ``grad`` the
        value is then NaN (no check, so fits can back off from such points).

        Args:
            pars: Parameters (npars,), ordered as ``config.par_names``.
            data: Observed main counts then auxiliary data (nmaindata + nauxdata,), as
                pyhf; or the main counts only (nmaindata,), completed with
                :meth:`auxdata` of the same yields.
            yields: Optional yields override (see the class docstring).

        Returns:
            Scalar log-likelihood.

        Raises:
            ValueError: If ``pars``, ``data`` or the override do not fit the model, or (eager
                calls) ``data`` is not finite, a main count is negative, or an expected
                rate is negative.
            RuntimeError: If JAX runs in float32.

        Example:
            With ``model`` of the class example:

            >>> init = model.config.suggested_init  # doctest: +SKIP
            >>> round(float(model.logpdf(init, model.expected_data(init))), 6)  # doctest: +SKIP
            -3.843059
            >>> round(float(model.logpdf(init, [60.0])), 6)  # main counts only  # doctest: +SKIP
            -4.107121
        """
        return self._evaluate(pars, data, yields, relative=False)

    def constraint_logpdf(
        self, auxdata: ArrayLike, pars: ArrayLike, yields: Yields | None = None
    ) -> Array:
        """Log-likelihood of the auxiliary data alone, as pyhf's ``Model.constraint_logpdf``.

        Args:
            auxdata: (nauxdata,) auxiliary measurements.
            pars: Parameters (npars,).
            yields: Optional yields override (staterror / shapesys widths follow it).

        Returns:
            Scalar: the Gaussian and Poisson constraint terms, each a function of one
            parameter (so its Hessian is diagonal).
        """
        pars = self._pars(pars)
        auxdata = checked_shape("auxdata", auxdata, ((self.config.nauxdata,),))
        prepared = self._prepared_for(yields, pars, auxdata)
        return self._constraint(pars, jnp.asarray(auxdata, jnp.float64), prepared)

    def constraint_information(self, pars: ArrayLike, yields: Yields | None = None) -> Array:
        """Expected Fisher information of the constraint terms (diagonal), at ``pars``.

        ``1 / sigma**2`` for Gaussian-constrained parameters, ``tau / gamma`` for Poisson
        ones (shapesys), 0 for free ones: the Hessian of ``-constraint_logpdf`` on the
        Asimov auxiliary data of ``pars``.

        Args:
            pars: Parameters (npars,).
            yields: Optional yields override (staterror / shapesys widths follow it).

        Returns:
            (npars,) the diagonal of the information matrix.
        """
        pars = self._pars(pars)
        return self._information(pars, self._prepared_for(yields, pars))

    def log_likelihood_ratio(
        self, pars: ArrayLike, data: ArrayLike, yields: Yields | None = None
    ) -> Array:
        """``log L(pars) - log L(saturated)``, summed term by term: what fits should minimise.

        Poisson terms are ``n (log1p(u) - u)`` with ``u = (rate - n) / n`` and Gaussian
        constraints drop their normalisation, so the value differs from :meth:`logpdf` by a
        function of ``data`` and ``yields`` only: differences between parameter points,
        gradients and Hessians w.r.t. ``pars`` are the same, but without the huge constants
        (a shapesys with ``tau = 2.5e11`` adds 6.5e12 to the logpdf, whose float64 spacing
        of 1e-3 would swamp a test statistic). Arguments, errors: as :meth:`logpdf`.

        Returns:
            Scalar, <= 0 (0 at the saturated point).
        """
        return self._evaluate(pars, data, yields, relative=True)

    def _evaluate(self, pars: ArrayLike, data: ArrayLike, yields: Yields | None,
                  relative: bool) -> Array:
        pars = self._pars(pars)
        # values only in eager calls: inside a fit (traced pars) the data need no re-check
        data = checked_data(self.config, data, values=not is_traced(pars))
        data = jnp.asarray(data, dtype=jnp.float64)
        prepared = self._prepared_for(yields, pars, data)
        value, min_rate = self._logpdf(pars, data, prepared, relative)
        if not is_traced(pars, data, prepared) and min_rate < 0:
            raise self._negative_rate_error(pars, prepared)
        return value

    def diagnose(
        self, pars: ArrayLike, data: ArrayLike, yields: Yields | None = None
    ) -> tuple[str, ...]:
        """Why the log-likelihood is not finite at ``pars``: one line per cause found.

        For error messages (:class:`~neosx.infer.FitError` names them). Looks for non-finite
        yields, normsys factors <= 0 (non-finite logarithms), zero or non-finite constraint
        widths, invalid data, negative expected rates and empty bins holding data. Needs
        concrete inputs (eager calls).

        Args:
            pars: Parameters (npars,).
            data: Main counts, optionally followed by the auxiliary data.
            yields: Optional yields override, or an already prepared one (unchecked).

        Returns:
            The causes found, possibly none.
        """
        pars = self._pars(pars)
        prepared = self.prepare(yields)
        finite = {name: np.isfinite(value) for name, value in prepared._asdict().items()}
        causes = [
            message for names, message in _PREPARED_CAUSES
            if not all(finite[name].all() for name in names)
        ]
        for row in np.flatnonzero(~finite["normsys"].all(axis=(0, 2))):
            name = self.config.par_names[self._layout.normsys_par[row]]
            causes.append(f"normsys '{name}': a factor (hi or lo) is <= 0 or not finite")
        for check in (lambda: check_values("pars", pars, bound="finite"),
                      lambda: checked_data(self.config, data)):
            try:
                check()
            except ValueError as error:
                causes.append(str(error))
        if causes:
            return tuple(causes)
        rates = np.asarray(self._by_sample(pars, prepared)).sum(axis=0)
        if (rates < 0).any():
            return (str(self._negative_rate_error(pars, prepared)).replace("\n", "; "),)
        main = np.asarray(data)[: self.config.nmaindata]
        for global_bin in np.flatnonzero((rates == 0) & (main > 0)):
            channel, local = self._channel_bin(global_bin)
            causes.append(
                f"channel '{channel}' bin {local}: expected rate 0 but {main[global_bin]:.6g} "
                "observed (log-likelihood -inf)"
            )
        return tuple(causes)

    def _channel_bin(self, global_bin: int) -> tuple[str, int]:
        """``(channel, bin within it)`` of a global main bin."""
        slices = self.config.channel_slices
        channel = next(c for c in self.config.channels if global_bin < slices[c].stop)
        return channel, int(global_bin - slices[channel].start)

    def _negative_rate_error(self, pars: Array, prepared: Prepared) -> ValueError:
        """Describe where and why expected rates are negative."""
        rates = np.asarray(self._by_sample(pars, prepared))
        nominal = np.asarray(prepared.nominal)
        layout, config = self._layout, self.config
        lines = []
        for global_bin in np.flatnonzero(rates.sum(axis=0) < 0):
            channel, local = self._channel_bin(global_bin)
            lines.append(
                f"channel '{channel}' bin {local}: expected {rates[:, global_bin].sum():.6g}"
            )
            for s in np.flatnonzero(rates[:, global_bin] < 0):
                sample_bin = s * layout.n_bins + global_bin
                rows = np.flatnonzero(layout.histosys_mask[:, sample_bin])
                pulls = ", ".join(
                    f"'{layout.histosys_names[r]}' (alpha={pars[layout.histosys_par[r]]:.3g})"
                    for r in rows
                )
                lines.append(
                    f"  sample '{config.samples[s]}': {rates[s, global_bin]:.6g} from nominal "
                    f"{nominal[sample_bin]:.6g}; histosys: {pulls or 'none'}"
                )
        return ValueError(
            "negative expected rates, the Poisson likelihood is undefined (pyhf returns NaN; "
            "so does neosx under jax transformations):\n" + "\n".join(lines)
        )
