"""The package as a new user gets it: a wheel built from this checkout, installed into a
fresh plain venv (its dependencies from the package index, nothing from this environment
or checkout: no dev extras such as pytest or s3fs in it), runs a small sweep from a
directory outside the checkout with the user's own config directory: a YAML landscape
and a Python ``_target_`` landscape in a user module. Proves the wheel carries the Hydra
config tree (``pipeline/conf``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.conftest import REPO
from tests.test_user_configs import MODULE, WELLS

pytestmark = pytest.mark.integration

TINY = ["mc.chains=64", "time.t_end=0.4", "time.snapshots=3", "density_grid.cells=60",
        "methods=[sgd,fp]", "cluster.n_workers=1"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SGDSWEEP_CONF", "PYTHONHOME")}
    t0 = time.perf_counter()
    # The wheel's contents do not depend on build isolation (setuptools from this environment
    # builds the same files; `pip install -e .` in CI exercises the isolated build).
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(root / "dist"), str(REPO)], cwd=root, env=env)
    wheel = next((root / "dist").glob("sgdsweep-*.whl"))
    # A plain venv with nothing in it (not even pip: this environment's pip installs into it,
    # resolving the wheel's declared dependencies from the package index). No byte-compiling
    # of the ~30,000 dependency files at install time: Python compiles what it imports.
    _run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], cwd=root, env=env)
    python = root / "venv" / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-compile", str(wheel)],
         cwd=root, env=env)
    listed = _run([sys.executable, "-m", "pip", "--python", str(python), "list", "--format=freeze"],
                  cwd=root, env=env).stdout
    assert "sgdsweep==" in listed and "pytest" not in listed and "s3fs" not in listed, listed
    print(f"wheel build + venv + install: {time.perf_counter() - t0:.1f} s")
    return python


def test_wheel_install_runs_a_sweep_with_user_configs(venv_python, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SGDSWEEP_CONF", "PYTHONHOME")}
    env.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    work = tmp_path / "elsewhere"
    (work / "my_conf" / "landscape").mkdir(parents=True)
    (work / "my_conf" / "landscape" / "my_wells.yaml").write_text(WELLS)
    (work / "my_conf" / "landscape" / "py_quadratics.yaml").write_text(
        "_target_: my_landscapes.two_quadratics\nname: py_quadratics\ndistance: 2.0\nn: 6\n")
    (work / "my_landscapes.py").write_text(MODULE)

    # Imports come from the venv, and the config tree from inside the installed package.
    where = _run([str(venv_python), "-c", "import pipeline, sgdsweep; from pipeline.config import CONF_DIR; "
                  "print(pipeline.__file__); print(sgdsweep.__file__); print(CONF_DIR)"], cwd=work, env=env)
    venv = venv_python.parent.parent
    for line in where.stdout.split():
        assert Path(line).is_relative_to(venv) and "site-packages" in line, where.stdout
    assert where.stdout.split()[-1].endswith("site-packages/pipeline/conf")

    job = _run([str(venv_python), "-m", "pipeline", "sweep", "--cfg", "job"], cwd=work, env=env)
    assert "seed_two_point" in job.stdout
    helped = _run([str(venv_python), "-m", "pipeline", "sweep", "-cd", "my_conf", "--help"],
                  cwd=work, env=env)
    assert "my_wells" in helped.stdout and "two_basin" in helped.stdout

    t0 = time.perf_counter()
    sweeps = (("my_wells", "grid.width_left=[0.2,0.4]"), ("py_quadratics", "grid.distance=[2.0]"))
    for landscape, axis in sweeps:
        _run([str(venv_python), "-m", "pipeline", "sweep", "-cd", "my_conf", f"landscape={landscape}",
              *TINY, "grid.lr=[0.05]", axis, f"store={landscape}.zarr"], cwd=work, env=env)
    print(f"two sweeps in the venv (fresh Numba compile): {time.perf_counter() - t0:.1f} s")

    wells = xr.open_zarr(str(work / "my_wells.zarr")).load()
    assert bool(wells.done.all()) and wells.attrs["landscape"] == "my_wells"
    np.testing.assert_array_equal(wells.width_left.values, [0.2, 0.4])
    mass = wells.density.sum("x") * wells.attrs["dx"] + wells.lost_fraction
    np.testing.assert_allclose(mass.values, 1.0, atol=1e-9)
    quad = xr.open_zarr(str(work / "py_quadratics.zarr")).load()
    assert bool(quad.done.all()) and quad.attrs["landscape"] == "two_quadratics"
    # the quadratic's loss on the grid is the exact mean of the six shifted parabolas
    x = quad.x.values
    shifts = np.linspace(-1, 1, 6)
    shifts *= 1.0 / shifts.std()  # population std distance/2 = 1
    exact = np.mean([0.5 * (x - s) ** 2 for s in shifts], axis=0)
    np.testing.assert_allclose(quad.loss.isel(lr=0, distance=0).values, exact, rtol=1e-12)
