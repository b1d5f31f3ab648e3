"""A method from outside the package: heavy-ball gradient descent (Polyak momentum).

θ_{k+1} = θ_k − η G(θ_k) + β (θ_k − θ_{k−1}), θ_{−1} = θ_0, on the cell's shared initial
ensemble, in plain NumPy. It registers its own config section (``heavy_ball.momentum``)
and one extra per-cell variable, the way a new method module does
(see "Adding a method" in docs/guide/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sgdsweep import ConfigError, Variable, register_method, register_section


@dataclass
class HeavyBallConf:
    momentum: float = 0.5  # β, dimensionless, in [0, 1)

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"heavy_ball.momentum: must be in [0, 1), got {self.momentum!r}")


register_section("heavy_ball", HeavyBallConf)


def fill_heavy_ball(ctx, ds, name):
    cell = ctx.cell
    beta = cell.sections["heavy_ball"].momentum
    grid = ctx.grid
    x = ctx.initial_positions[:, 0].copy()
    prev = x.copy()
    lost = np.zeros(x.shape, dtype=bool)
    density, mean, std, lost_fraction, basin_mass = [], [], [], [], []
    step = 0
    for target in cell.steps:
        while step < target:
            g = cell.landscape.evaluate(x)["grad"][:, 0]
            x, prev = x - cell.lr * g + beta * (x - prev), x
            lost |= ~((grid.lower <= x) & (x <= grid.upper))
            step += 1
        live = x[~lost]
        k = np.clip(np.floor((live - grid.lower) / grid.dx).astype(int), 0, grid.cells - 1)
        density.append(np.bincount(k, minlength=grid.cells) / (x.size * grid.dx))
        mean.append(live.mean())
        std.append(live.std())
        lost_fraction.append(lost.mean())
        b = np.searchsorted(ctx.basins.edges, live, side="right")
        basin_mass.append(np.bincount(b, minlength=len(ctx.basins.names)) / x.size)
    sel = {"method": name}
    ds["density"].loc[sel] = np.array(density)
    ds["mean"].loc[sel] = mean
    ds["std"].loc[sel] = std
    ds["lost_fraction"].loc[sel] = lost_fraction
    ds["basin_mass"].loc[sel] = np.array(basin_mass)
    ds["heavy_ball_speed"] = ((), float(np.abs(x - prev).mean() / cell.lr),
                              ds["heavy_ball_speed"].attrs)


register_method(
    name="heavy_ball", kind="ensemble", fill=fill_heavy_ball, dims=(1,), reads=("lr", "heavy_ball"),
    fills=("density", "mean", "std", "lost_fraction", "basin_mass"),
    variables={"heavy_ball_speed": Variable((), "mean |θ_k − θ_{k−1}| / η at the last snapshot")},
    summary="heavy-ball gradient descent (test plugin)", time="t = η·step",
)
