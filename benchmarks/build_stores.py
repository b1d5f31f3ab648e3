"""Run the experiment configs (and the default sweep) into one directory of stores.

Used to check that a refactoring changes no number: build the stores once from the
old code and once from the new, then compare them with ``compare_stores.py``.
The sizes are reduced (chains, t_end) so that one pass takes minutes on 2 cores;
the same overrides are used for both sides.

    PYTHONPATH=OLD_CHECKOUT python benchmarks/build_stores.py OUT_DIR_A
    PYTHONPATH=.            python benchmarks/build_stores.py OUT_DIR_B
    python benchmarks/compare_stores.py OUT_DIR_A OUT_DIR_B
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

# The seed model's grid and the operator settings these stores were first built with, pinned
# so that a change of the shipped defaults (conf/domain/, conf/config.yaml) does not read as
# a changed number.
SEED_GRID = ["density_grid.lower=-1.0", "density_grid.upper=4.0", "density_grid.cells=250",
             "operator.relaxation=true"]

CASES: dict[str, list[str]] = {
    "default": [*SEED_GRID, "methods=[sgd,sde,langevin,gd,fp,fp_drift]"],
    "seed_validation": ["+experiment=seed_validation"],
    "ou_variance": ["+experiment=ou_variance", "mc.chains=1000"],
    "flat_minima": ["+experiment=flat_minima", "time.t_end=100.0", "mc.chains=400"],
    "escape": ["+experiment=escape", "mc.chains=500"],
    # Sampling schemes and the 2-D path, which the experiments above do not reach.
    "sampling": ["landscape=quadratic", "grid.batch_size=[2,3]",
                 "grid.sampling=[without_replacement,reshuffle]", "methods=[sgd,fp]",
                 "density_grid.lower=-4.0", "density_grid.upper=4.0", "density_grid.cells=250",
                 "init.mean=0.0", "init.std=0.175", "mc.chains=300"],
    "twod": ["landscape=anisotropic_2d", "methods=[sgd,sde,langevin,gd]", "init.mean=0.0",
             "init.std=0.2", "density_grid.lower=-3.0", "density_grid.upper=3.0",
             "density_grid.cells=40", "mc.chains=300", "time.t_end=2.0"],
    # The one-step operators and the modified equation (1-D), which no experiment runs.
    "operators": [*SEED_GRID, "methods=[sgd,fp,sgd_op,gauss_step,sme2,fp_sme2]", "grid.lr=[0.01,0.02]",
                  "mc.chains=300", "time.t_end=2.0"],
    # SGD's exact operator on the seed landscape over (lr, b), 2-D operator, the SVAG ladder.
    "sgd_op": [*SEED_GRID, "methods=[sgd,sgd_op,fp]", "grid.lr=[0.02,0.04]", "grid.batch_size=[1,2]",
               "mc.chains=300", "time.t_end=2.0"],
    "twod_op": ["landscape=anisotropic_2d", "methods=[sgd,fp,sgd_op,fp_sme2]", "init.mean=0.0",
                "init.std=0.2", "density_grid.lower=-3.0", "density_grid.upper=3.0",
                "density_grid.cells=30", "mc.chains=300", "time.t_end=2.0", "grid.lr=[0.05,0.1]",
                "operator.relaxation=true"],
    "svag": [*SEED_GRID, "methods=[sgd,svag,sde,sme2,fp,fp_sme2]", "+grid.svag.l=[1,4]",
             "grid.lr=[0.02,0.04]",
             "mc.chains=300", "time.t_end=2.0"],
}


def main(out: str, names: list[str]) -> int:
    root = Path(os.environ.get("PYTHONPATH", ".").split(os.pathsep)[0]).resolve()
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    rc = 0
    for name in names or list(CASES):
        cmd = [sys.executable, "-m", "pipeline", "sweep", *CASES[name],
               f"store={out_dir / name}.zarr", "overwrite=true", "cluster.n_workers=2",
               "cluster.dashboard_address=null"]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        print(f"{name}: exit {r.returncode}, {time.perf_counter() - t0:.1f} s", flush=True)
        if r.returncode:
            print(r.stdout[-2000:], r.stderr[-2000:])
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
