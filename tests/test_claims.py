"""The published-claim experiments at reduced size (docs/experiments_claims.md).

References are independent of the code under test: closed forms, scipy quadrature of the
Itô stationary formula on the landscape itself, the double-integral first-passage time,
and Itô's lemma.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad, trapezoid
from scipy.optimize import brentq

import sgdsweep
from sgdsweep.errors import ConfigError
from sgdsweep.fokker_planck import escape_rates as er
from sgdsweep.fokker_planck.references import mean_first_passage_time
from sgdsweep.landscapes.landscape import build_landscape
from sgdsweep.landscapes.noise import diffusion as sde_diffusion


def _twin_wells(r: float) -> dict:
    """conf/landscape/twin_wells.yaml with width_left = 0.25 r."""
    dps = []
    for s, c in ((-0.175, -3.0), (-0.125, 3.0), (-0.075, 3.0), (-0.025, -3.0),
                 (0.025, 3.0), (0.075, -3.0), (0.125, -3.0), (0.175, 3.0)):
        dps.append([{"kind": "gaussian", "amplitude": -1.0, "centre": -1.5 + s, "width": 0.25 * r},
                    {"kind": "gaussian", "amplitude": -1.0, "centre": 1.5 + s, "width": 0.25},
                    {"kind": "quadratic", "curvature": 0.1, "centre": c}])
    return {"dim": 1, "datapoints": dps}


def _noisy_two_basin(width_left: float) -> dict:
    """conf/landscape/noisy_two_basin.yaml with width_left filled in."""
    dps = []
    for s, c in ((-0.175, 6.0), (-0.125, -6.0), (-0.075, 6.0), (-0.025, -6.0),
                 (0.025, -6.0), (0.075, 6.0), (0.125, -6.0), (0.175, 6.0)):
        dps.append([{"kind": "gaussian", "amplitude": -1.0, "centre": -1.0 + s, "width": width_left},
                    {"kind": "gaussian", "amplitude": -1.0, "centre": 1.0 + s, "width": 0.6},
                    {"kind": "quadratic", "curvature": 0.2, "centre": c}])
    return {"dim": 1, "datapoints": dps}


def _cell(landscape: dict, lr: float, methods: list[str], **extra) -> dict:
    cell = {"landscape": landscape, "lr": lr, "batch_size": 1, "methods": methods,
            "time": {"t_end": 1.0, "snapshots": 2}, "operator": {"relaxation": False}}
    cell.update(extra)
    return cell


# --------------------------------------------------------------------------- escape formulas


def test_kramers_ratio_to_exact_passage_time_tends_to_one_linearly_in_d():
    """L = θ⁴/4 − θ²/2, constant D: exact MFPT from −1 to +1 (reflecting at −3) over Kramers'
    2π/sqrt(2·1)·exp(1/(4D)). The first correction of Laplace's method is O(D/ΔL): each
    halving of D must halve r − 1 (to within the next order)."""
    excess = []
    for d in (1 / 16, 1 / 32, 1 / 64, 1 / 128):
        exact = mean_first_passage_time(-1.0, -3.0, 1.0, lambda y: y**3 - y, lambda y, d=d: d + 0 * y)
        excess.append(exact / er.kramers_at_minimum(2.0, -1.0, 0.25, d) - 1.0)
    excess = np.asarray(excess)
    assert np.all(excess > 0) and np.all(np.diff(excess) < 0)
    assert excess[-1] < 0.015
    halving = excess[1:] / excess[:-1]
    assert np.all((halving > 0.4) & (halving < 0.6))
    assert abs(halving[-1] - 0.5) < abs(halving[0] - 0.5)  # the O(D²) term fades


def test_xie_formula_is_the_theorem_and_its_exponent_is_exact_on_two_quadratics():
    """Written in D it is Theorem 3.2 when D = ηH/(2b); and on a C¹ pair of quadratics with D
    constant on each piece (D_a, D_s), ∫_a^s G/D = ΔL (s/D_a + (1 − s)/D_s) with
    s = |H_s|/(H_a + |H_s|) exactly (quadrature of the piecewise path)."""
    h_a, h_s, lr, b, dl = 8.0, -3.0, 0.1, 4, 0.7
    lit = er.xie_sato_sugiyama_escape_time(h_a, h_s, dl, lr, b)
    viad = er.xie_escape_time_from_diffusion(h_a, h_s, dl, lr * h_a / (2 * b), lr * abs(h_s) / (2 * b))
    assert lit == pytest.approx(viad, rel=1e-14)
    assert lit == pytest.approx(2 * math.pi / 3.0 * math.exp(2 * b * dl / lr * (3 / 11 / 8 + 8 / 11 / 3)),
                                rel=1e-12)
    # Path: minimum at 0, junction c, top at m; slopes match at c and the heights add to ΔL.
    c = math.sqrt(2 * dl / (h_a * (1 + h_a / abs(h_s))))
    m = c + h_a * c / abs(h_s)
    d_a, d_s = 0.05, 0.11

    def g_over_d(y):
        return h_a * y / d_a if y < c else abs(h_s) * (m - y) / d_s

    integral = quad(g_over_d, 0.0, c)[0] + quad(g_over_d, c, m)[0]
    s = er.path_parameter(h_a, h_s)
    assert integral == pytest.approx(dl * (s / d_a + (1 - s) / d_s), rel=1e-10)
    assert er.xie_escape_time_from_diffusion(h_a, h_s, dl, d_a, d_s) == pytest.approx(
        2 * math.pi / 3.0 * math.exp(integral), rel=1e-9)
    with pytest.raises(ConfigError, match=r"^diffusion_min: must be > 0"):
        er.kramers_at_minimum(h_a, h_s, dl, -1.0)
    with pytest.raises(ConfigError, match=r"^s: must lie in"):
        er.xie_escape_time_from_diffusion(h_a, h_s, dl, d_a, d_s, s=1.5)


def test_validity_map_cell_recomputed_from_the_landscape():
    """One cell of kramers_validity (width 0.3, η = 0.4, b = 1): the accessor's geometry and
    Kramers/Xie times against the landscape's own minimum, top, Hessian and Σ (root finding
    on G, no grid); SDE time against the double-integral MFPT from the minimum; the ratios
    are the quotients of the stored exact times."""
    land_cfg, lr = _noisy_two_basin(0.3), 0.4
    ds = sgdsweep.run_cell(_cell(land_cfg, lr, ["fp", "sgd_op"],
                                 init={"kind": "normal", "mean": -1.0, "std": 0.02},
                                 density_grid={"lower": -3.0, "upper": 3.0, "cells": 240},
                                 escape={"threshold": 0.40833}))
    v = ds.sgd.escape_validity()
    land = build_landscape(land_cfg)

    def ev(y):
        return land.evaluate(np.atleast_1d(np.asarray(y, float)))

    def G(y):
        return ev(y)["grad"][:, 0]

    def D(y):
        return sde_diffusion(ev(y)["cov"][:, 0, 0], lr, 1.0)

    a = brentq(lambda y: G(y)[0], -1.3, -0.7)
    s = brentq(lambda y: G(y)[0], -0.6, 0.3)
    h_a, h_s = ev(a)["hess"][0, 0, 0], ev(s)["hess"][0, 0, 0]
    dl = ev(s)["loss"][0] - ev(a)["loss"][0]
    d_a, d_s = D(a)[0], D(s)[0]
    dx = 6.0 / 240
    for name, exact in (("curvature_min", h_a), ("curvature_top", h_s), ("barrier", dl),
                        ("diffusion_min", d_a), ("diffusion_top", d_s)):
        assert float(v[name]) == pytest.approx(exact, rel=0.02, abs=dx**2), name
    kr = er.kramers_at_minimum(h_a, h_s, dl, d_a)
    xi = er.xie_escape_time_from_diffusion(h_a, h_s, dl, d_a, d_s)
    # ΔL/D_a ≈ 0.7: the exponent's grid error dx²·O(1) moves the times by well under 3 %.
    assert float(v["kramers_time"]) == pytest.approx(kr, rel=0.03)
    assert float(v["xie_time"]) == pytest.approx(xi, rel=0.05)
    sde = mean_first_passage_time(a, -3.0, 0.40833, G, D)
    assert float(v["sde_time"]) == pytest.approx(sde, rel=0.01)
    sgd = float(ds["escape_time_operator"].sel({"method": "sgd_op"}))
    assert float(v["kramers_over_sgd"]) == pytest.approx(float(v["kramers_time"]) / sgd, rel=1e-14)
    assert float(v["sde_over_sgd"]) == pytest.approx(float(ds["escape_time_exact"]) / sgd, rel=1e-14)
    # Headline of the full run at this cell: Kramers within 2× of SGD, Xie–Sato–Sugiyama not.
    assert 0.5 < float(v["kramers_over_sgd"]) < 2.0
    assert float(v["xie_over_sgd"]) > 2.0
    assert float(v["lr_curvature"]) > 2.0 if "lr" in v.coords else True


# --------------------------------------------------------------------------- seed claims


def _bottom(land, lo: float, hi: float) -> float:
    return brentq(lambda y: land.evaluate(np.array([y]))["grad"][0, 0], lo, hi)


def test_width_ratio_density_ratio_against_quadrature_and_gibbs():
    """Seed claim (a) at r = 2, η = 0.05, b = 1: log10 p(wide centre)/p(narrow centre) of the
    Itô law against scipy quadrature of −∫G/D − log D between the two bottoms on the
    landscape itself, and of Gibbs against exp(−ΔL/T) at the cell's T."""
    lr, r = 0.05, 2.0
    land_cfg = _twin_wells(r)
    ds = sgdsweep.run_cell(_cell(land_cfg, lr, ["fp"], init={"kind": "uniform", "lower": -3.5, "upper": 2.5},
                                 density_grid={"lower": -4.5, "upper": 3.0, "cells": 300}))
    land = build_landscape(land_cfg)
    cw, cn = _bottom(land, -1.8, -1.2), _bottom(land, 1.3, 1.7)

    def ev(y):
        return land.evaluate(np.array([y]))

    def D(y):
        return sde_diffusion(ev(y)["cov"][0, 0, 0], lr, 1.0)

    integral, _ = quad(lambda y: ev(y)["grad"][0, 0] / D(y), cw, cn, limit=2000, epsabs=0, epsrel=1e-10)
    log_ratio = (integral - math.log(D(cw) / D(cn))) / math.log(10)  # log p_w − log p_n = ∫_w^n G/D − …
    got = float(ds.sgd.centre_density_ratio("ito"))
    # Trapezoid on dx = 0.025 of an integrand with |G/D|'' ≲ 1e5 over 4 θ units: well below 1 %.
    assert got == pytest.approx(log_ratio, rel=0.01)
    assert log_ratio > math.log10(math.exp(4.0))  # far beyond the post's e⁴
    T = float(ds["temperature"])
    gibbs = -(ev(cw)["loss"][0] - ev(cn)["loss"][0]) / T / math.log(10)
    # log p = −L/T is quadratic; linear interpolation between the two cells around a bottom
    # errs by at most H dx²/(8T) nats per bottom.
    dx = 7.5 / 300
    h_max = max(ev(cw)["hess"][0, 0, 0], ev(cn)["hess"][0, 0, 0])
    tol = 2 * h_max * dx**2 / (8 * T) / math.log(10)
    assert abs(float(ds.sgd.centre_density_ratio("gibbs")) - gibbs) <= tol + 1e-9


def test_effective_potential_decomposition_and_noise_coordinate():
    """Seed claims (b) and (c) on twin wells at r = 1.5, η = 0.1: −log p − ∫G/D − log D of
    the Itô law (scipy-independent Simpson quadrature, ``analytic_stationary``) is constant up
    to the trapezoid's grid error, which falls at least 2× when dx halves; the stored FP law
    obeys it to its own grid error; Gibbs does not. The noise coordinate φ has
    (dφ/dθ)² 2D = 1 (unit noise), its density integrates to 1, and the Itô law in φ is
    ∝ exp(2∫ drift dφ), the stationary law of dφ = drift dt + dW (Itô's lemma)."""
    from sgdsweep.analysis.potentials import potential_parts
    from sgdsweep.fokker_planck.references import analytic_stationary
    from sgdsweep.landscapes.grid import Grid1D

    worst = []
    for cells in (300, 600):
        ds = sgdsweep.run_cell(_cell(_twin_wells(1.5), 0.1, ["fp"],
                                     init={"kind": "uniform", "lower": -3.5, "upper": 2.5},
                                     density_grid={"lower": -4.5, "upper": 3.0, "cells": cells}))
        exact = analytic_stationary(build_landscape(_twin_wells(1.5)), Grid1D(-4.5, 3.0, cells), 0.1, 1.0)
        p = ds["stationary"].sel(kind="ito").values
        main = p > 1e-3 * p.max()
        res = potential_parts(exact, ds["grad_mean"].values, ds["diffusion"].values, ds["x"].values)[3]
        worst.append(np.nanmax(np.abs(res[main])))
    assert worst[0] < 0.15 and worst[1] < worst[0] / 2
    pot = ds.sgd.effective_potential("ito")  # the stored FP null vector at 600 cells
    assert np.nanmax(np.abs(pot["residual"].values[main])) < 0.25
    assert np.nanmax(np.abs(ds.sgd.effective_potential("gibbs")["residual"].values)) > 1.0

    nc = ds.sgd.noise_coordinate("ito")
    x = ds["x"].values
    phi, drift, dens = nc["phi"].values, nc["drift"].values, nc["density"].values
    D = ds["diffusion"].values
    unit = np.gradient(phi, x) ** 2 * 2 * D
    assert np.allclose(unit[main], 1.0, rtol=0.02)
    assert trapezoid(dens, phi) == pytest.approx(1.0, abs=2e-3)
    logq = 2 * np.concatenate(([0.0], np.cumsum(0.5 * (drift[1:] + drift[:-1]) * np.diff(phi))))
    # The Itô law itself (Simpson quadrature) carried into φ; the stored FP law differs from
    # it by its own grid error (≈ 0.13 nats at 600 cells).
    diff = np.log(exact[main] * np.sqrt(2 * D[main])) - logq[main]
    assert np.ptp(diff) < 0.05


def test_local_potential_fit_fails_only_where_the_current_circulates():
    """2-D seed claim (b), reduced nonequilibrium_2d: tilt 0° (Σ commutes with H: no current,
    −log p a diagonal quadratic spanned by L and |G|²) is fitted to the grid error; at 30°
    the current circulates and the best local fit misses by far more."""
    rms = {}
    for tilt in (0.0, 30.0):
        ds = sgdsweep.run_cell({
            "landscape": {"_target_": "sgdsweep.landscapes.tilted.tilted_quadratic", "tilt": tilt,
                          "h_x": 1.0, "h_y": 2.0, "spread": 2.0, "aspect": 0.6, "n": 8},
            "lr": 0.4, "batch_size": 1, "methods": ["fp"],
            "init": {"kind": "normal", "mean": [1.0, 1.0], "std": [0.3, 0.3]},
            "density_grid": {"lower": -4.0, "upper": 4.0, "cells": [60, 40]},
            "time": {"t_end": 0.8, "snapshots": 2}, "fp": {"dt": 0.2}})
        rms[tilt] = (float(ds.sgd.local_potential_fit("ito")["rms_residual"]),
                     abs(float(ds["stationary_circulation"])))
    assert rms[0.0][1] < 1e-3 * rms[30.0][1]
    assert rms[30.0][0] > 5 * rms[0.0][0]
