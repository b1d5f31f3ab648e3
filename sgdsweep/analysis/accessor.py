"""The ``ds.sgd`` accessor: what one computes by hand from a sweep store, done lazily.

(Above the usual module size on purpose: it is the one class behind ``ds.sgd``; each method
is a thin labelled wrapper over :mod:`sgdsweep.analysis.reductions`, :mod:`~sgdsweep.analysis.metrics`
or :mod:`~sgdsweep.analysis.potentials`, and splitting the class would scatter its API.)

Registered on ``import sgdsweep``. Works on a whole store opened with
:func:`sgdsweep.open_sweep` / ``xarray.open_zarr`` (Dask-backed: results stay lazy
until ``.compute()``), on any ``.sel``/``.isel`` subset of it, and on a single
``run_cell`` result (no sweep dimensions)::

    ds = sgdsweep.open_sweep("results/seed_two_point.zarr")
    ds.sgd.distance("sgd", "fp", metric="w1")             # (lr, …, t), lazy
    ds.sgd.sde_validity().compute()                        # TV(SGD, FP) at the last time
    ds.sel(lr=0.02).sgd.basin_ratio("sgd", "b1", "b0")     # wide pit over narrow pit
    ds.sgd.escape_validity()                               # Kramers, Xie et al., SDE vs SGD escape
    ds.sgd.effective_potential("ito")                      # −log p = ∫G/D + log D + const (1-D)
    ds.sgd.noise_coordinate()                              # φ = ∫dθ/√(2D): unit noise (1-D)

Names: a *source* is a dynamics in ``method`` (``sgd``, ``sde``, ``langevin``,
``gd``, ``fp``, ``fp_drift``, ``sgd_op``, ``gauss_step``, …) — a density over ``t`` — or
a stationary reference in ``kind`` (``ito``, ``stratonovich``, ``isothermal``,
``gibbs``, and ``sgd`` / ``gauss_step`` where those methods ran) — a density without
``t``. A name that is both (``sgd``: the Monte Carlo method and SGD's invariant law;
``gauss_step``) means the method; write ``stationary:sgd`` for the kind
(``distance_to_stationary`` does). Times: ``t=None`` keeps every snapshot, ``t="last"`` (or a negative
integer, counted from the end) picks a snapshot by position, any other number is
an SDE time t = η·step and picks the nearest snapshot. Cells not yet computed
(``done`` false) are NaN in every result.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from sgdsweep.analysis.metrics import DISTANCES
from sgdsweep.analysis.potentials import (
    NOISE_COORDINATE_FIELDS,
    POTENTIAL_PARTS,
    centre_log_densities,
    deepest_pair_log_ratio,
    ito_log_density,
    local_fit_residual,
    noise_coordinate_fields,
    potential_parts,
)
from sgdsweep.analysis.reductions import basin_integrals, fit_temperature
from sgdsweep.cell.schema import DONE, ERROR, METHOD_KINDS_ATTR, MIN_ESCAPES, failures

#: Prefix naming a stationary kind that shares its name with a method (``stationary:sgd``).
STATIONARY_PREFIX = "stationary:"

TimeSel = None | str | int | float
_SPACE = "_space"


@xr.register_dataset_accessor("sgd")
class SweepAccessor:
    """Analysis of a sweep store or of one cell; see the module docstring."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    # ------------------------------------------------------------------ layout

    @property
    def sweep_dims(self) -> tuple[str, ...]:
        """The sweep axes (the dims of ``done``; none for a single cell)."""
        if DONE in self._ds:
            return tuple(str(d) for d in self._ds[DONE].dims)
        return ()

    @property
    def methods(self) -> list[str]:
        return [str(m) for m in self._ds["method"].values] if "method" in self._ds.coords else []

    def method_kind(self, name: str) -> str:
        """``ensemble`` or ``density``: from the store's ``method_kinds`` attr, else the registry."""
        kinds = json.loads(self._ds.attrs.get(METHOD_KINDS_ATTR, "{}") or "{}")
        if name in kinds:
            return kinds[name]
        from sgdsweep.methods.registry import get_method

        return get_method(name).kind

    @property
    def kinds(self) -> list[str]:
        return [str(k) for k in self._ds["kind"].values] if "kind" in self._ds.coords else []

    @property
    def space_dims(self) -> tuple[str, ...]:
        """("x",) for 1-D landscapes, ("x", "y") for 2-D ones."""
        return ("x", "y") if "y" in self._ds["density"].dims else ("x",)

    @property
    def dx(self) -> float:
        """Density-grid spacing (θ units), from the ``x`` coordinate."""
        x = np.asarray(self._ds["x"].values, dtype=float)
        return float(x[1] - x[0])

    @property
    def cell_volume(self) -> float:
        """dx (1-D) or dx·dy (2-D): the measure of one density-grid cell."""
        vol = self.dx
        if "y" in self.space_dims:
            y = np.asarray(self._ds["y"].values, dtype=float)
            vol *= float(y[1] - y[0])
        return vol

    def _masked(self, da: xr.DataArray) -> xr.DataArray:
        if DONE in self._ds:
            return da.where(self._ds[DONE])
        return da

    def _at(self, da: xr.DataArray, t: TimeSel) -> xr.DataArray:
        if t is None or "t" not in da.dims:
            return da
        if isinstance(t, str):
            if t != "last":
                raise ValueError(f"t: expected None, 'last', a negative index or a time, got {t!r}")
            return da.isel(t=-1)
        if isinstance(t, int | np.integer) and t < 0:
            return da.isel(t=int(t))
        return da.sel(t=float(t), method="nearest")

    # ------------------------------------------------------------------ densities

    def source(self, name: str, t: TimeSel = None) -> xr.DataArray:
        """The density of a method (over ``t``) or of a stationary reference kind (no ``t``).

        ``stationary:KIND`` names the kind when a method has the same name.
        """
        if name.startswith(STATIONARY_PREFIX) and name[len(STATIONARY_PREFIX):] in self.kinds:
            da = self._ds["stationary"].sel(kind=name[len(STATIONARY_PREFIX):], drop=True)
        elif name in self.methods:
            da = self._ds["density"].sel({"method": name}, drop=True)
        elif name in self.kinds:
            da = self._ds["stationary"].sel(kind=name, drop=True)
        else:
            raise KeyError(f"{name!r}: neither a method ({', '.join(self.methods)}) "
                           f"nor a stationary kind ({', '.join(self.kinds) or 'none'}; "
                           f"'{STATIONARY_PREFIX}KIND' for a kind named like a method)")
        return self._masked(self._at(da, t))

    def marginal(self, axis: str = "x") -> xr.Dataset:
        """A 2-D store seen along one component: ``density`` and ``stationary`` integrated
        over the other axis (∫ p dθ_other), ``mean``/``std`` of that component, on the
        dimension ``x``, with ``lost_fraction`` and the bookkeeping; the 1-D tools
        (``distance`` incl. ``w1``, the 1-D figures) then apply. A 1-D dataset is returned
        unchanged. Lazy on Dask-backed data."""
        ds = self._ds
        if "y" not in self.space_dims:
            return ds
        if axis not in ("x", "y"):
            raise ValueError(f"axis: expected 'x' or 'y', got {axis!r}")
        other = "y" if axis == "x" else "x"
        c = np.asarray(ds[other].values, dtype=float)
        out = {name: ds[name].sum(other, skipna=False) * float(c[1] - c[0])
               for name in ("density", "stationary") if name in ds}
        out.update({name: ds[name].sel(axis=axis, drop=True) for name in ("mean", "std") if name in ds})
        out.update({name: ds[name] for name in ("lost_fraction", DONE, ERROR) if name in ds})
        res = xr.Dataset(out, attrs=dict(ds.attrs))
        if axis == "y":
            res = res.rename({"y": "x"})
        res.attrs["dx"] = float(np.diff(np.asarray(res["x"].values, dtype=float)[:2])[0])
        res.attrs["marginal_of"] = axis
        return res

    # ------------------------------------------------------------------ distances

    def distance(self, a: str, b: str = "fp", metric: str = "tv", t: TimeSel = None) -> xr.DataArray:
        """Distance between the densities of two sources (methods or stationary kinds).

        ``metric``: ``tv`` (½∫|p−q|, in [0, 1]), ``kl`` (KL(a‖b) of the normalised
        densities in nats, b floored at :data:`sgdsweep.analysis.metrics.KL_FLOOR`), ``w1``
        (Wasserstein-1, θ units; 1-D only: in 2-D use :meth:`marginal`) or ``hellinger`` (in [0, 1]); see
        :mod:`sgdsweep.analysis.metrics`. Lazy on Dask-backed data.
        """
        if metric not in DISTANCES:
            raise ValueError(f"metric: unknown {metric!r} (known: {', '.join(DISTANCES)})")
        space = self.space_dims
        if len(space) > 1 and metric == "w1":
            raise ValueError("metric: w1 is defined here for 1-D densities only; take it on "
                             "ds.sgd.marginal('x') or ('y') (the store's w1 is their mean)")
        p, q = self.source(a, t), self.source(b, t)
        if len(space) > 1:
            p, q = p.stack({_SPACE: space}), q.stack({_SPACE: space})
            core = _SPACE
        else:
            core = "x"
        fn = DISTANCES[metric]
        out = xr.apply_ufunc(
            fn, p, q, kwargs={"dx": self.cell_volume},
            input_core_dims=[[core], [core]], output_core_dims=[[]],
            dask="parallelized", output_dtypes=[float],
            dask_gufunc_kwargs={"allow_rechunk": True},
        )
        out.name = metric
        out.attrs = {"long_name": f"{metric} distance between {a} and {b}",
                     "units": "θ" if metric == "w1" else ("nat" if metric == "kl" else "1")}
        return out

    def distance_to_stationary(self, method: str = "sgd", kind: str = "gibbs", metric: str = "tv",
                               t: TimeSel = "last") -> xr.DataArray:
        """Distance of a method's density at time ``t`` from a stationary reference ``kind``."""
        if kind not in self.kinds:
            raise KeyError(f"{kind!r}: not a stationary kind ({', '.join(self.kinds) or 'none'})")
        return self.distance(method, STATIONARY_PREFIX + kind, metric=metric, t=t)

    def gibbs_distance(self, methods: list[str] | None = None, metric: str = "tv",
                       t: TimeSel = "last") -> xr.DataArray:
        """How far from Gibbs: distance of each method's long-run density from ``kind='gibbs'``.

        ``methods`` defaults to those of sgd, sde, fp, langevin, sgd_op, gauss_step present; result has a
        ``method`` dim. Langevin targets Gibbs exactly, so its value measures the
        Monte Carlo and finite-time error of the comparison itself.
        """
        if methods is None:
            methods = [m for m in ("sgd", "sde", "fp", "langevin", "sgd_op", "gauss_step")
                       if m in self.methods]
        parts = [self.distance_to_stationary(m, "gibbs", metric, t) for m in methods]
        out = xr.concat(parts, dim=xr.Variable("method", methods))
        out.name = f"{metric}_to_gibbs"
        out.attrs = {**parts[0].attrs, "long_name": f"{metric} distance to the Gibbs density"}
        return out

    def sde_validity(self, metric: str = "tv", t: TimeSel = "last", method: str = "sgd",
                     reference: str = "fp") -> xr.DataArray:
        """The SDE-validity map: distance between real SGD and the Itô FP density.

        Over every sweep dim present (lr × batch_size × …) at time ``t`` (default the
        last snapshot). Small values: the SDE / Fokker–Planck picture describes SGD.
        """
        out = self.distance(method, reference, metric=metric, t=t)
        out.name = f"sde_validity_{metric}"
        return out

    # ------------------------------------------------------------------ basins

    @property
    def basins(self) -> list[str]:
        return [str(b) for b in self._ds["basin"].values] if "basin" in self._ds.coords else []

    def basin_masses(self, source: str = "sgd", t: TimeSel = "last") -> xr.DataArray:
        """Probability mass per basin, dims (…, [t,] basin).

        For a method: the stored ``basin_mass`` (basins as ``run_cell`` defines them).
        For a stationary kind (e.g. ``gibbs``, or ``stationary:sgd``): ∫ p dθ over each basin of L, the basins
        being the intervals between the strict local maxima of the stored ``loss``
        (``run_cell``'s definition unless the landscape names its basins; named
        basins are matched to those intervals in left-to-right order).
        """
        if source in self.methods:
            da = self._ds["basin_mass"].sel({"method": source}, drop=True)
            return self._masked(self._at(da, t))
        p = self.source(source)
        n = len(self.basins)
        out = xr.apply_ufunc(
            basin_integrals, p, self._ds["loss"],
            kwargs={"x": np.asarray(self._ds["x"].values, float), "dx": self.dx, "n_basins": n},
            input_core_dims=[["x"], ["x"]], output_core_dims=[["basin"]],
            dask="parallelized", output_dtypes=[float],
            dask_gufunc_kwargs={"output_sizes": {"basin": n}, "allow_rechunk": True},
        )
        out = out.assign_coords(basin=self._ds["basin"].values)
        out.name = "basin_mass"
        out.attrs = {"long_name": f"probability mass per basin ({source})", "units": "1"}
        return self._masked(out)

    def basin_ratio(self, source: str = "sgd", numerator: str | None = None,
                    denominator: str | None = None, t: TimeSel = "last") -> xr.DataArray:
        """Mass in basin ``numerator`` over mass in basin ``denominator``.

        Defaults: the right-most basin over the left-most (for the bundled
        seed_two_point and two_basin landscapes at default widths: wide over narrow).
        NaN (not inf, and no division warning) where the denominator basin holds no mass
        — every chain left it, or a stationary law vanishes there — as the ratio is then
        undefined; compare :meth:`basin_masses` directly there.
        """
        names = self.basins
        numerator = names[-1] if numerator is None else numerator
        denominator = names[0] if denominator is None else denominator
        m = self.basin_masses(source, t)
        den = m.sel(basin=denominator, drop=True)
        out = m.sel(basin=numerator, drop=True) / den.where(den > 0)
        out.name = "basin_ratio"
        out.attrs = {"long_name": f"mass({numerator}) / mass({denominator}) ({source})", "units": "1",
                     "comment": f"NaN where {denominator} holds no mass (the ratio is undefined)"}
        return out

    # ------------------------------------------------------------------ temperature

    def effective_temperature(self, source: str = "sgd", t: TimeSel = "last",
                              basin: str | None = None, rel_floor: float = 1e-3) -> xr.DataArray:
        """Effective temperature T_eff: the density fitted to p ∝ exp(−L/T).

        Weighted least squares of log p(θ) against L(θ) over the grid cells with
        p ≥ ``rel_floor``·max p (restricted to one ``basin`` if given), weights p:
        T_eff = −1/slope. Exact for Gibbs densities (returns T); for a quadratic
        L = h θ²/2 and a Gaussian density of variance s², T_eff = h s². Where the
        density is not of Gibbs form the fit is a summary, not a temperature —
        compare with :meth:`gibbs_distance`. NaN when fewer than 3 cells qualify.
        """
        p = self.source(source, t)
        if basin is None:
            idx = None
        elif basin in self.basins:
            idx = self.basins.index(basin)
        else:
            raise KeyError(f"{basin!r}: unknown basin ({', '.join(self.basins)})")
        out = xr.apply_ufunc(
            fit_temperature, p, self._ds["loss"],
            kwargs={"x": np.asarray(self._ds["x"].values, float), "basin": idx, "rel_floor": rel_floor},
            input_core_dims=[["x"], ["x"]], output_core_dims=[[]],
            dask="parallelized", output_dtypes=[float],
            dask_gufunc_kwargs={"allow_rechunk": True},
        )
        out.name = "effective_temperature"
        out.attrs = {"long_name": f"effective temperature of {source} (fit of log p vs L)", "units": "1"}
        return out

    # ------------------------------------------------------------------ potentials

    def _stationary_1d(self, kind: str) -> xr.DataArray:
        if "y" in self.space_dims:
            raise ValueError("kind: the 1-D decomposition needs a 1-D store; in 2-D use local_potential_fit")
        if kind not in self.kinds:
            raise KeyError(f"{kind!r}: not a stationary kind ({', '.join(self.kinds) or 'none'})")
        return self.source(STATIONARY_PREFIX + kind)

    def _per_x(self, fn: Any, fields: tuple[str, ...], dim: str, *args: xr.DataArray) -> xr.Dataset:
        x = np.asarray(self._ds["x"].values, float)
        out = xr.apply_ufunc(
            fn, *args, kwargs={"x": x},
            input_core_dims=[["x"]] * len(args), output_core_dims=[[dim, "x"]],
            dask="parallelized", output_dtypes=[float],
            dask_gufunc_kwargs={"output_sizes": {dim: len(fields)}, "allow_rechunk": True},
        )
        return out.assign_coords({dim: list(fields)}).to_dataset(dim)

    def effective_potential(self, kind: str = "ito") -> xr.Dataset:
        """−log p of stationary ``kind`` beside its 1-D Itô decomposition (nats, over ``x``).

        ``total`` = −log p, ``drift_part`` = ∫ G/D dθ from the grid's left end (trapezoid),
        ``noise_part`` = log D (D = η Σ_b / 2, the stored ``diffusion``), ``residual`` =
        total − drift_part − noise_part, the constant of ``total`` chosen so the residual has
        zero p-weighted mean. For ``ito`` the residual is the grid error (O(dx²)); for
        ``gibbs`` or ``sgd`` it is how far that law is from the Itô one. ``loss_over_t`` =
        L/T (T the cell's ``temperature``), the Gibbs potential, for comparison. NaN where
        p < 1e-12 max p.
        """
        p = self._stationary_1d(kind)
        out = self._per_x(potential_parts, POTENTIAL_PARTS, "part", p, self._ds["grad_mean"],
                          self._ds["diffusion"])
        out["loss_over_t"] = self._masked(self._ds["loss"] / self._ds["temperature"])
        for name in (*POTENTIAL_PARTS, "loss_over_t"):
            out[name].attrs = {"long_name": f"{name.replace('_', ' ')} of −log p ({kind})", "units": "nat"}
        return out

    def noise_coordinate(self, kind: str = "ito") -> xr.Dataset:
        """The coordinate φ = ∫ dθ / sqrt(2D) in which the SDE's noise is dW everywhere.

        Over ``x`` (θ): ``phi`` (0 where D is largest), ``drift`` = −(G + D′/2)/sqrt(2D),
        the Itô drift of φ, and ``density`` = p·sqrt(2D), stationary ``kind`` as a density
        in φ (∫ density dφ = ∫ p dθ). The φ-SDE dφ = drift dt + dW has constant diffusion ½:
        its stationary law is ∝ exp(2 ∫ drift dφ), Gibbs-like in φ.
        """
        p = self._stationary_1d(kind)
        out = self._per_x(noise_coordinate_fields, NOISE_COORDINATE_FIELDS, "field", p,
                          self._ds["grad_mean"], self._ds["diffusion"])
        out["phi"].attrs = {"long_name": "noise coordinate φ = ∫ dθ/sqrt(2D)", "units": "sqrt(t)"}
        out["drift"].attrs = {"long_name": "Itô drift of φ, −(G + D′/2)/sqrt(2D)", "units": "sqrt(t)/t"}
        out["density"].attrs = {"long_name": f"stationary density in φ ({kind})", "units": "1/φ"}
        return out

    def centre_density_ratio(self, kind: str = "ito", numerator: str | None = None,
                             denominator: str | None = None) -> xr.DataArray:
        """log10 of p at the bottom of one basin over p at the bottom of another (stationary
        ``kind``).

        Default: the left over the right of the two deepest minima of L in each cell
        (:func:`sgdsweep.analysis.potentials.deepest_pair_log_ratio`), whatever shallower
        basins lie between them; with ``numerator`` and ``denominator`` the bottoms of those
        named basins (:func:`~sgdsweep.analysis.potentials.centre_log_densities`). Bottoms are
        the zeros of G. For ``ito`` log p comes from the closed form −∫ G/D − log D on the
        stored G and D (:func:`~sgdsweep.analysis.potentials.ito_log_density`), so ratios beyond
        1e308, where the stored density underflows to 0, stay finite; other kinds use log of
        the stored density (±inf where one bottom holds no mass).
        """
        x = np.asarray(self._ds["x"].values, float)
        if kind == "ito":
            self._stationary_1d(kind)
            logp = xr.apply_ufunc(ito_log_density, self._ds["grad_mean"], self._ds["diffusion"],
                                  kwargs={"x": x}, input_core_dims=[["x"], ["x"]], output_core_dims=[["x"]],
                                  dask="parallelized", output_dtypes=[float],
                                  dask_gufunc_kwargs={"allow_rechunk": True})
            logp = self._masked(logp)
        else:
            with np.errstate(divide="ignore"):
                logp = np.log(self._stationary_1d(kind))
        core = [["x"]] * 3
        if numerator is None and denominator is None:
            diff = xr.apply_ufunc(deepest_pair_log_ratio, logp, self._ds["grad_mean"], self._ds["loss"],
                                  kwargs={"x": x}, input_core_dims=core, output_core_dims=[[]],
                                  dask="parallelized", output_dtypes=[float],
                                  dask_gufunc_kwargs={"allow_rechunk": True})
            what = "left / right of the two deepest minima"
        else:
            names = self.basins
            numerator = names[0] if numerator is None else numerator
            denominator = names[-1] if denominator is None else denominator
            n = len(names)
            c = xr.apply_ufunc(
                centre_log_densities, logp, self._ds["grad_mean"], self._ds["loss"],
                kwargs={"x": x, "n_basins": n}, input_core_dims=core, output_core_dims=[["basin"]],
                dask="parallelized", output_dtypes=[float],
                dask_gufunc_kwargs={"output_sizes": {"basin": n}, "allow_rechunk": True},
            ).assign_coords(basin=names)
            diff = c.sel(basin=numerator, drop=True) - c.sel(basin=denominator, drop=True)
            what = f"{numerator} / {denominator}"
        out = diff / np.log(10.0)
        out.name = "centre_density_log10_ratio"
        out.attrs = {"long_name": f"log10 ratio of p at the bottoms, {what} ({kind})", "units": "1"}
        return out

    def local_potential_fit(self, kind: str = "ito", rel_floor: float = 1e-3) -> xr.Dataset:
        """How well a local function of L, G, Σ describes −log p of stationary ``kind`` (2-D).

        Least squares of −log p on the features 1, L, ‖G‖², tr Σ, log(Σ_xx Σ_yy) (the stored
        ``loss``, ``grad_mean``, ``grad_var``) over the cells with p ≥ ``rel_floor``·max p,
        weighted by p. ``residual`` (x, y): −log p minus the fit (nats, NaN outside the
        cells used); ``rms_residual``: its p-weighted root mean square. A stationary law with
        no probability current has a potential of this kind only if the features span it;
        one with a circulating current has none at all.
        """
        if "y" not in self.space_dims:
            raise ValueError("local_potential_fit: needs a 2-D store (x, y)")
        if kind not in self.kinds:
            raise KeyError(f"{kind!r}: not a stationary kind ({', '.join(self.kinds) or 'none'})")
        p = self.source(STATIONARY_PREFIX + kind)
        g2 = (self._ds["grad_mean"] ** 2).sum("axis")
        var = self._ds["grad_var"]
        feats = [self._ds["loss"], g2, var.sum("axis"), np.log(var.sel(axis="x") * var.sel(axis="y"))]
        core = [["x", "y"]] * (1 + len(feats))
        res, rms = xr.apply_ufunc(
            local_fit_residual, p, *feats, kwargs={"rel_floor": rel_floor},
            input_core_dims=core, output_core_dims=[["x", "y"], []],
            dask="parallelized", output_dtypes=[float, float],
            dask_gufunc_kwargs={"allow_rechunk": True}, vectorize=True,
        )
        out = xr.Dataset({"residual": self._masked(res), "rms_residual": self._masked(rms)})
        out["residual"].attrs = {"long_name": f"−log p ({kind}) minus its best local fit", "units": "nat"}
        out["rms_residual"].attrs = {"long_name": "p-weighted rms of the local-fit residual", "units": "nat"}
        return out

    # ------------------------------------------------------------------ escapes

    def escape_summary(self) -> xr.Dataset:
        """Escape statistics per method beside the exact SDE passage time: one row per cell
        and method in ``.to_dataframe()``.

        ``method``: the Monte Carlo methods, then the one-step operators that stored an
        exact passage time (``sgd_op``: real SGD's, ``gauss_step``); the Fokker–Planck
        methods have none and are left out. Per method: ``escape_time`` (Monte Carlo: the
        censoring-aware estimate ``escape_time_mle`` — total time at risk / escapes, the
        chains still waiting counted as censored (:mod:`sgdsweep.montecarlo.escapes`) — or,
        in stores written before it existed, the mean over the escaped chains; operators:
        the exact mean passage time of their chain), ``exact`` (True for the operators),
        ``escaped_fraction``, ``escape_time_mean`` (the mean over the chains that escaped by
        the last snapshot only: biased low when ``escaped_fraction`` < 1, without bound),
        ``escape_time_mle_se`` its standard error, ``escape_count`` and ``too_few_escapes``
        (fewer than :data:`~sgdsweep.cell.schema.MIN_ESCAPES` escapes: the estimate says
        little) for the Monte Carlo methods, ``escape_steps_operator`` (operators, in SGD
        steps) and ``ratio_to_exact`` = escape_time / escape_time_exact. Per cell:
        ``escape_time_exact`` (the Itô SDE's mean first-passage time from the initial law),
        ``escape_time_exact_error`` (its relative grid error, where stored),
        ``escape_threshold`` and ``start_basin``: the basin the chains start in (the one
        holding most of the initial law), which the threshold — the barrier top next to it
        — bounds. Times in t = η·step.
        """
        ds = self._ds
        needed = ("escape_time_mean", "escaped_fraction", "escape_time_exact")
        missing = [v for v in needed if v not in ds]
        if missing:
            raise KeyError(f"{missing[0]!r}: this dataset holds no escape statistics")
        mc = [m for m in self.methods if self.method_kind(m) == "ensemble"]
        ops = []
        if "escape_time_operator" in ds:  # exact passage times of the one-step chains
            ops = [m for m in self.methods if self.method_kind(m) == "density"
                   and bool(np.isfinite(np.asarray(ds["escape_time_operator"].sel({"method": m}).values,
                                                   float)).any())]
        rows = mc + ops
        is_op = xr.DataArray([m in ops for m in rows], dims="method", coords={"method": rows})
        mean = self._masked(ds["escape_time_mean"].sel({"method": rows})).where(~is_op)
        censored = "escape_time_mle" in ds
        estimate = (self._masked(ds["escape_time_mle"].sel({"method": rows})).where(~is_op) if censored
                    else mean)
        if ops:
            op_time = self._masked(ds["escape_time_operator"].sel({"method": rows}))
            time = xr.where(is_op, op_time, estimate)
        else:
            time = estimate
        out = xr.Dataset({
            "escape_time": time.assign_attrs(
                long_name="mean escape time: Monte Carlo " + ("censoring-aware estimate" if censored
                                                            else "mean over the escaped chains")
                + ", or the operator's exact time", units="1"),
            "exact": is_op.assign_attrs(long_name="escape_time is an exact passage time (an operator)"),
            "escaped_fraction": self._masked(ds["escaped_fraction"].sel({"method": rows})).where(~is_op)
            .assign_attrs(ds["escaped_fraction"].attrs),
            "escape_time_mean": mean.assign_attrs(ds["escape_time_mean"].attrs),
            "escape_time_exact": self._masked(ds["escape_time_exact"]),
        })
        for name in ("escape_time_mle", "escape_time_mle_se", "escape_count"):
            if name in ds:
                out[name] = (self._masked(ds[name].sel({"method": rows})).where(~is_op)
                             .assign_attrs(ds[name].attrs))
        if "escape_count" in out:
            out["too_few_escapes"] = (out["escape_count"] < MIN_ESCAPES) & ~is_op
            out["too_few_escapes"].attrs = {"long_name": f"fewer than {MIN_ESCAPES} chains escaped"}
        if ops:
            out["escape_steps_operator"] = self._masked(ds["escape_steps_operator"].sel({"method": rows}))
        for name in ("escape_threshold", "escape_time_exact_error"):
            if name in ds:
                out[name] = self._masked(ds[name])
        if "basin_mass" in ds and "t" in ds["basin_mass"].dims and len(self.basins):
            m0 = ds["basin_mass"].isel({"t": 0, "method": 0}, drop=True)
            start = xr.apply_ufunc(lambda a: np.asarray(self.basins, dtype=object)[np.argmax(a, axis=-1)],
                                   m0, input_core_dims=[["basin"]], dask="parallelized",
                                   output_dtypes=[object])
            out["start_basin"] = start.assign_attrs(
                long_name="basin holding most of the initial law (the escape starts there)")
        ratio = out["escape_time"] / out["escape_time_exact"]
        out["ratio_to_exact"] = ratio.assign_attrs(
            long_name=("censoring-aware mean escape time" if censored
                       else "mean escape time over escaped chains")
            + " (operators: exact) / exact SDE passage time", units="1")
        return out

    def escape_validity(self, operator: str = "sgd_op", direction: int = 1) -> xr.Dataset:
        """The escape-time validity map: each approximation over SGD's exact escape time.

        Exact times (t = η·step, from the cell's initial law to ``escape_threshold``): the
        Itô SDE's ``escape_time_exact`` (``sde_time``) and SGD's own ``escape_time_operator``
        of method ``operator`` (``sgd_time``). Approximations
        (:mod:`sgdsweep.fokker_planck.escape_rates`) from the stored ``loss``, ``grad_mean``
        and ``diffusion`` through :func:`~sgdsweep.fokker_planck.escape_rates.barrier_geometry`
        (the lowest minimum before the threshold in ``direction`` and the highest point of L
        between it and the threshold): ``kramers_time`` (D frozen at the minimum) and
        ``xie_time`` (Xie, Sato & Sugiyama in terms of D_a, D_s, s = abs(H_s)/(H_a + abs(H_s))).
        Ratios ``sde_over_sgd``, ``kramers_over_sgd``, ``xie_over_sgd``, ``kramers_over_sde``,
        ``xie_over_sde``, and the geometry (``curvature_min``, ``curvature_top``, ``barrier``,
        ``diffusion_min``, ``diffusion_top``, ``lr_curvature`` = η H_a, above 2 where GD is
        unstable in the minimum). Inf where a time is infinite (SGD that cannot climb out:
        trapped).
        """
        from sgdsweep.fokker_planck import escape_rates as er

        ds = self._ds
        for name in ("escape_time_exact", "escape_threshold", "diffusion"):
            if name not in ds:
                raise KeyError(f"{name!r}: this dataset holds no 1-D escape times")
        if "escape_time_operator" not in ds or operator not in self.methods:
            raise KeyError(f"{operator!r}: no operator escape time in this dataset (run method {operator})")
        geo_keys = ("curvature_min", "curvature_top", "barrier", "diffusion_min", "diffusion_top")
        x = np.asarray(ds["x"].values, float)

        def geometry(loss, grad, diff, thr):
            g = er.barrier_geometry(x, loss, grad, diff, float(thr), direction) if np.isfinite(thr) else {}
            vals = [g.get(k, np.nan) for k in geo_keys]
            h_a, h_s, dl, d_a, d_s = vals
            ok = all(np.isfinite(v) for v in vals) and h_a > 0 and h_s < 0 and dl > 0 and d_a > 0 and d_s > 0
            kr = er.kramers_at_minimum(h_a, h_s, dl, d_a) if ok else np.nan
            xi = er.xie_escape_time_from_diffusion(h_a, h_s, dl, d_a, d_s) if ok else np.nan
            return np.array([*vals, kr, xi])

        names = (*geo_keys, "kramers_time", "xie_time")
        thr = ds["escape_threshold"]
        arr = xr.apply_ufunc(geometry, ds["loss"], ds["grad_mean"], ds["diffusion"], thr,
                             input_core_dims=[["x"], ["x"], ["x"], []], output_core_dims=[["q"]],
                             vectorize=True, dask="parallelized", output_dtypes=[float],
                             dask_gufunc_kwargs={"output_sizes": {"q": len(names)}})
        out = arr.assign_coords(q=list(names)).to_dataset("q")
        out["sde_time"] = ds["escape_time_exact"]
        out["sgd_time"] = ds["escape_time_operator"].sel({"method": operator}, drop=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            for a, b in (("sde", "sgd"), ("kramers", "sgd"), ("xie", "sgd"),
                         ("kramers", "sde"), ("xie", "sde")):
                out[f"{a}_over_{b}"] = out[f"{a}_time"] / out[f"{b}_time"]
        out["lr_curvature"] = out["curvature_min"] * out["lr"] if "lr" in out.coords else np.nan
        for name in out.data_vars:
            unit = "t" if name.endswith("_time") else "1"
            out[name].attrs = {"long_name": name.replace("_", " "), "units": unit}
        return xr.Dataset({k: self._masked(v) for k, v in out.data_vars.items()})

    # ------------------------------------------------------------------ interactive

    def explore(self, methods: tuple[str, ...] = ("fp", "sgd", "sde")) -> Any:
        """An interactive view for Jupyter: sliders over the sweep axes and time, the
        selected cell's densities redrawn on change (needs ipywidgets; see
        :mod:`sgdsweep.analysis.explore`, which raises an ImportError with the install hint)."""
        from sgdsweep.analysis.explore import explore

        return explore(self._ds, methods)

    # ------------------------------------------------------------------ bookkeeping

    def failures(self) -> list[dict[str, Any]]:
        """Cells recorded as failed: their sweep coordinates and message (computed eagerly)."""
        return [{"cell": where, "error": msg} for where, msg in failures(self._ds)]

    def progress(self) -> tuple[int, int]:
        """(cells done, cells total)."""
        if DONE not in self._ds:
            return (1, 1)
        done = np.asarray(self._ds[DONE].values, dtype=bool)
        return int(done.sum()), int(done.size)
