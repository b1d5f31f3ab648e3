"""The ``ds.sgd`` accessor against hand-computed values on small synthetic sweeps.

The synthetic store has the layout of a real one (sweep dims lr × batch_size,
then method, t, x / kind, x / basin, plus done/error) with densities whose
distances, basin masses and temperatures are known in closed form.
"""

from __future__ import annotations

import json
import warnings

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

import sgdsweep.analysis.accessor  # noqa: F401  (registers ds.sgd)
from sgdsweep.analysis.reductions import open_sweep

X_LO, X_HI, NX = -4.0, 4.0, 801  # odd: θ = 0 is a cell centre
DX = (X_HI - X_LO) / NX
X = X_LO + DX * (np.arange(NX) + 0.5)
LRS = [0.01, 0.02, 0.04]
BATCHES = [1, 2]
TIMES = [0.0, 1.0, 2.0]
METHODS = ["sgd", "sde", "fp"]
KINDS = ["ito", "gibbs"]
T_GIBBS = 0.3


def gaussian(mu: float, s: float) -> np.ndarray:
    return np.exp(-0.5 * ((X - mu) / s) ** 2) / (s * np.sqrt(2 * np.pi))


def uniform(lo: float, hi: float) -> np.ndarray:
    inside = (X > lo) & (X < hi)
    return inside / (inside.sum() * DX)


def double_well() -> np.ndarray:
    """L = (θ² − 1)²: minima at ±1, one strict local maximum at θ = 0 (a cell centre)."""
    return (X**2 - 1) ** 2


def synthetic(done_all: bool = True) -> xr.Dataset:
    """densities: fp = N(0, 0.5) at every t; sgd = fp shifted right by (i_lr + 1) cells at
    the last t (identical to fp before); sde = uniform on [-3,-2] (disjoint from
    uniform on [2, 3] used nowhere else); stationary gibbs ∝ exp(-L/T)."""
    shape = (len(LRS), len(BATCHES), len(METHODS), len(TIMES), NX)
    dens = np.zeros(shape)
    fp = gaussian(0.0, 0.5)
    for i in range(len(LRS)):
        for j in range(len(BATCHES)):
            dens[i, j, 2] = fp
            dens[i, j, 0] = fp
            dens[i, j, 0, -1] = np.roll(fp, i + 1)
            dens[i, j, 1] = uniform(-3.0, -2.0)
    L = double_well()
    gibbs = np.exp(-L / T_GIBBS)
    gibbs /= gibbs.sum() * DX
    stat = np.zeros((len(LRS), len(BATCHES), len(KINDS), NX))
    stat[:, :, 0] = uniform(2.0, 3.0)
    stat[:, :, 1] = gibbs
    bm = np.zeros((len(LRS), len(BATCHES), len(METHODS), len(TIMES), 2))
    bm[..., 0], bm[..., 1] = 0.25, 0.75
    done = np.ones((len(LRS), len(BATCHES)), bool)
    error = np.full(done.shape, "", dtype="<U40")
    if not done_all:
        done[2, 1] = False
        error[2, 1] = "cell failed: boom"
    sweep = ("lr", "batch_size")
    esc_mean = np.zeros((len(LRS), len(BATCHES), len(METHODS)))
    esc_mean[..., 0], esc_mean[..., 1], esc_mean[..., 2] = 6.0, 4.0, np.nan
    ds = xr.Dataset(
        {
            "density": ((*sweep, "method", "t", "x"), dens),
            "stationary": ((*sweep, "kind", "x"), stat),
            "basin_mass": ((*sweep, "method", "t", "basin"), bm),
            "loss": ((*sweep, "x"), np.broadcast_to(L, (len(LRS), len(BATCHES), NX)).copy()),
            "escape_time_mean": ((*sweep, "method"), esc_mean),
            "escaped_fraction": ((*sweep, "method"), np.ones_like(esc_mean)),
            "escape_time_exact": (sweep, np.full(done.shape, 2.0)),
            "done": (sweep, done),
            "error": (sweep, error),
        },
        coords={"lr": LRS, "batch_size": BATCHES, "method": METHODS, "t": TIMES, "x": X,
                "kind": KINDS, "basin": ["b0", "b1"]},
    )
    return ds


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("acc") / "synthetic.zarr"
    ds = synthetic(done_all=False)
    chunks = {"lr": 1, "batch_size": 1}
    ds.chunk(chunks).to_zarr(str(path), zarr_format=3, consolidated=True)
    return str(path)


def test_tv_of_disjoint_uniforms_is_one():
    ds = synthetic()
    tv = ds.sgd.distance("sde", "ito", metric="tv")  # uniform[-3,-2] vs uniform[2,3]
    np.testing.assert_allclose(tv.values, 1.0, atol=1e-12)
    assert set(tv.dims) == {"lr", "batch_size", "t"}


def test_w1_of_shift_by_k_cells_is_k_dx():
    ds = synthetic()
    w1 = ds.sgd.distance("sgd", "fp", metric="w1", t="last")
    for i in range(len(LRS)):
        # the Gaussian's tails are < 1e-15 at the grid edges, so the shift is exact
        np.testing.assert_allclose(w1.isel(lr=i).values, (i + 1) * DX, rtol=1e-9)
    w1_0 = ds.sgd.distance("sgd", "fp", metric="w1", t=0.0)
    np.testing.assert_allclose(w1_0.values, 0.0, atol=1e-15)


def test_kl_identical_zero_and_gaussians_closed_form():
    ds = synthetic()
    assert float(np.abs(ds.sgd.distance("sgd", "fp", metric="kl", t=1.0)).max()) < 1e-12
    m1, s1, m2, s2 = 0.2, 0.5, -0.3, 0.6  # tails beyond ±4 < 1e-9
    one = xr.Dataset(
        {"density": (("method", "t", "x"), np.stack([gaussian(m1, s1), gaussian(m2, s2)])[:, None, :])},
        coords={"method": ["sgd", "fp"], "t": [0.0], "x": X},
    )
    kl = float(one.sgd.distance("sgd", "fp", metric="kl", t="last"))
    exact = np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    assert kl == pytest.approx(exact, abs=1e-6)
    assert one.sgd.sweep_dims == ()


def test_hellinger_known_values():
    mu, s = 0.7, 0.4
    one = xr.Dataset(
        {"density": (("method", "t", "x"), np.stack([gaussian(0, s), gaussian(mu, s)])[:, None, :])},
        coords={"method": ["sgd", "fp"], "t": [0.0], "x": X},
    )
    h = float(one.sgd.distance("sgd", "fp", metric="hellinger", t="last"))
    # H² = 1 − exp(−Δμ²/(8σ²)) for equal-variance Gaussians
    assert h == pytest.approx(np.sqrt(1 - np.exp(-(mu**2) / (8 * s**2))), abs=1e-9)
    ds = synthetic()
    np.testing.assert_allclose(ds.sgd.distance("sde", "ito", metric="hellinger").values, 1.0, atol=1e-12)


def test_gibbs_distance_and_sde_validity_dims():
    ds = synthetic()
    gd = ds.sgd.gibbs_distance(metric="tv")
    assert list(gd.method.values) == ["sgd", "sde", "fp"]
    assert set(gd.dims) == {"method", "lr", "batch_size"}
    # TV(fp, gibbs) by direct quadrature, same in every cell
    g = ds.stationary.isel(lr=0, batch_size=0).sel(kind="gibbs").values
    expected = 0.5 * np.abs(gaussian(0, 0.5) - g).sum() * DX
    np.testing.assert_allclose(gd.sel({"method": "fp"}).values, expected, rtol=1e-12)
    sv = ds.sgd.sde_validity(metric="w1")
    assert sv.dims == ("lr", "batch_size")
    np.testing.assert_allclose(sv.sel(batch_size=2).values, [DX, 2 * DX, 3 * DX], rtol=1e-9)


def test_basin_masses_of_gibbs_and_stored():
    ds = synthetic()
    stored = ds.sgd.basin_masses("sgd")
    np.testing.assert_allclose(stored.sel(basin="b1").values, 0.75)
    gm = ds.sgd.basin_masses("gibbs")
    # symmetric double well; the cell at the barrier top θ = 0 belongs to the right basin
    p0 = float(ds.stationary.isel(lr=0, batch_size=0).sel(kind="gibbs").sel(x=0.0, method="nearest"))
    np.testing.assert_allclose(gm.sel(basin="b0").values, 0.5 * (1 - p0 * DX), rtol=1e-12)
    np.testing.assert_allclose(gm.sel(basin="b1").values, 0.5 * (1 + p0 * DX), rtol=1e-12)
    assert list(gm.basin.values) == ["b0", "b1"]
    # uniform[2,3] (kind ito) lies wholly in the right basin
    np.testing.assert_allclose(ds.sgd.basin_masses("ito").sel(basin="b1").values, 1.0, atol=1e-12)
    np.testing.assert_allclose(ds.sgd.basin_ratio("sgd", "b1", "b0").values, 3.0)
    np.testing.assert_allclose(ds.sgd.basin_ratio("sgd").values, 3.0)  # right over left by default


def test_effective_temperature():
    ds = synthetic()
    np.testing.assert_allclose(ds.sgd.effective_temperature("gibbs").values, T_GIBBS, rtol=1e-9)
    np.testing.assert_allclose(ds.sgd.effective_temperature("gibbs", basin="b1").values, T_GIBBS,
                               rtol=1e-9)
    # quadratic loss h θ²/2 and a Gaussian density of std s: T_eff = h s²
    h, s = 2.0, 0.5
    one = xr.Dataset(
        {"density": (("method", "t", "x"), gaussian(0, s)[None, None, :]),
         "loss": (("x",), 0.5 * h * X**2)},
        coords={"method": ["sgd"], "t": [0.0], "x": X},
    )
    assert float(one.sgd.effective_temperature("sgd")) == pytest.approx(h * s**2, rel=1e-9)


def test_escape_summary_ratio():
    es = synthetic().sgd.escape_summary()
    assert list(es.method.values) == ["sgd", "sde"]
    np.testing.assert_allclose(es.ratio_to_exact.sel({"method": "sgd"}).values, 3.0)
    np.testing.assert_allclose(es.ratio_to_exact.sel({"method": "sde"}).values, 2.0)


def test_bad_names_raise():
    ds = synthetic()
    with pytest.raises(KeyError, match="neither a method"):
        ds.sgd.distance("sgdx", "fp")
    with pytest.raises(ValueError, match="metric"):
        ds.sgd.distance("sgd", "fp", metric="l2")
    with pytest.raises(ValueError, match="t:"):
        ds.sgd.distance("sgd", "fp", t="first")


def test_lazy_on_zarr_store_masks_undone_and_works_on_subsets(store):
    ds = open_sweep(store)
    assert isinstance(ds["density"].data, dsa.Array)
    calls = {
        "tv": ds.sgd.distance("sgd", "fp", metric="w1"),
        "validity": ds.sgd.sde_validity(metric="w1"),
        "gibbs": ds.sgd.gibbs_distance(),
        "basins": ds.sgd.basin_masses("gibbs"),
        "ratio": ds.sgd.basin_ratio("sgd"),
        "teff": ds.sgd.effective_temperature("gibbs"),
    }
    for name, da in calls.items():
        assert isinstance(da.data, dsa.Array), name
    v = calls["validity"].compute()
    assert np.isnan(v.sel(lr=0.04, batch_size=2))  # not done: masked
    np.testing.assert_allclose(v.sel(lr=0.04, batch_size=1), 3 * DX, rtol=1e-9)
    np.testing.assert_allclose(calls["teff"].sel(lr=0.01).values, T_GIBBS, rtol=1e-9)
    # a .sel subset computes the same numbers as the full result
    sub = ds.sel(lr=[0.02], batch_size=1).sgd.sde_validity(metric="w1")
    assert isinstance(sub.data, dsa.Array)
    np.testing.assert_allclose(sub.values, [2 * DX], rtol=1e-9)
    assert ds.sgd.progress() == (5, 6)
    fails = ds.sgd.failures()
    assert fails == [{"cell": {"lr": 0.04, "batch_size": 2}, "error": "cell failed: boom"}]


def test_open_sweep_rejects_non_stores(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_sweep(tmp_path / "missing.zarr")
    xr.Dataset({"a": ("x", [1.0])}).to_zarr(str(tmp_path / "other.zarr"))
    with pytest.raises(ValueError, match="not a sweep store"):
        open_sweep(tmp_path / "other.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a"):
        open_sweep(tmp_path / "plain")


def _escape_store() -> xr.Dataset:
    """Two cells (lr) of methods sgd, sde (ensembles), fp (no passage time) and sgd_op (an
    exact one); the initial law sits in basin b1."""
    methods = ["sgd", "sde", "fp", "sgd_op"]
    kinds = {"sgd": "ensemble", "sde": "ensemble", "fp": "density", "sgd_op": "density"}
    lrs = [0.01, 0.02]
    bm = np.zeros((2, 4, 2, 2))
    bm[:, :, 0] = [0.1, 0.9]  # t = 0: most of the initial law in b1
    bm[:, :, 1] = [0.5, 0.5]
    nan = np.nan
    ds = xr.Dataset(
        {"escape_time_mean": (("lr", "method"), [[6.0, 4.0, nan, nan], [3.0, 2.0, nan, nan]]),
         "escaped_fraction": (("lr", "method"), [[1.0, 0.5, nan, nan], [1.0, 1.0, nan, nan]]),
         "escape_time_operator": (("lr", "method"), [[nan, nan, nan, 5.0], [nan, nan, nan, 2.5]]),
         "escape_steps_operator": (("lr", "method"), [[nan, nan, nan, 500.0], [nan, nan, nan, 125.0]]),
         "escape_time_exact": (("lr",), [2.0, 1.0]),
         "escape_threshold": (("lr",), [1.2, 1.2]),
         "basin_mass": (("lr", "method", "t", "basin"), bm),
         "done": (("lr",), [True, True])},
        coords={"lr": lrs, "method": methods, "t": [0.0, 1.0], "basin": ["b0", "b1"]},
        attrs={"method_kinds": json.dumps(kinds)})
    return ds


def test_escape_summary_one_row_per_method_with_operators_and_start_basin():
    es = _escape_store().sgd.escape_summary().compute()
    assert list(es.method.values) == ["sgd", "sde", "sgd_op"]  # fp has no passage time: no row
    assert list(es.exact.values) == [False, False, True]
    np.testing.assert_array_equal(es.escape_time.sel(lr=0.01).values, [6.0, 4.0, 5.0])
    np.testing.assert_array_equal(es.ratio_to_exact.sel(lr=0.02).values, [3.0, 2.0, 2.5])
    np.testing.assert_array_equal(es.escape_steps_operator.sel({"method": "sgd_op"}).values, [500.0, 125.0])
    assert np.isnan(es.escaped_fraction.sel({"method": "sgd_op"})).all()
    assert list(es.start_basin.values) == ["b1", "b1"]
    df = es.to_dataframe()
    assert len(df) == 6 and df.index.is_unique  # 2 cells × 3 methods, each once


def test_basin_ratio_is_nan_without_warning_where_the_denominator_is_empty():
    ds = synthetic()
    ds["basin_mass"][{"lr": 0}] = 0.0  # no mass in either basin at lr = 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ratio = ds.sgd.basin_ratio("sgd").values
    assert np.isnan(ratio[0]).all()
    np.testing.assert_allclose(ratio[2], 3.0)
    ds["basin_mass"].loc[{"lr": 0.02, "basin": "b0"}] = 0.0
    assert np.isnan(ds.sgd.basin_ratio("sgd").sel(lr=0.02)).all()
    assert "NaN where b0 holds no mass" in ds.sgd.basin_ratio("sgd").attrs["comment"]


def test_escape_summary_uses_the_censoring_aware_estimate():
    """With ``escape_time_mle`` stored, ``ratio_to_exact`` is its ratio (not the escaped-only
    mean's) and cells with fewer than MIN_ESCAPES escapes are flagged."""
    from sgdsweep.cell.schema import MIN_ESCAPES

    ds = synthetic()
    shape = ds["escape_time_mean"].shape
    mle = np.full(shape, 10.0)
    count = np.full(shape, 500.0)
    count[0, 0, 1] = MIN_ESCAPES - 1
    ds["escape_time_mle"] = (ds["escape_time_mean"].dims, mle)
    ds["escape_time_mle_se"] = (ds["escape_time_mean"].dims, mle / np.sqrt(count))
    ds["escape_count"] = (ds["escape_time_mean"].dims, count)
    es = ds.sgd.escape_summary()
    np.testing.assert_allclose(es.ratio_to_exact.values, 5.0)  # 10 / exact 2
    few = es.too_few_escapes.values
    assert few[0, 0, 1] and few.sum() == 1
    np.testing.assert_allclose(es.escape_time_mle_se.values[0, 0, 0], 10.0 / np.sqrt(500.0))
