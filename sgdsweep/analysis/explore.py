"""``ds.sgd.explore()``: a small interactive view of a sweep for Jupyter (ipywidgets).

Sliders over every sweep axis and over the snapshot time, a choice of methods, and the
densities of the selected cell (:func:`sgdsweep.analysis.plots.cell_densities`) redrawn on every
change. ipywidgets is optional (``pip install ipywidgets`` or the ``explore`` extra);
without it :func:`explore` raises an ImportError that says so, and everything else of
sgdsweep works as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

HINT = ("ds.sgd.explore() needs ipywidgets: pip install ipywidgets (or pip install "
        "'sgdsweep[explore]'); the static figures of sgdsweep.analysis.plots need nothing more")


def explore(ds: xr.Dataset, methods: tuple[str, ...] = ("fp", "sgd", "sde")) -> Any:
    """An ipywidgets box: one slider per sweep axis, a time slider, a method selector, and
    the figure of the selected cell (``box.figure``, redrawn on every change)."""
    try:
        import ipywidgets as w
    except ImportError as exc:
        raise ImportError(HINT) from exc
    from sgdsweep.analysis import plots

    acc = ds.sgd
    sliders = {d: w.SelectionSlider(options=[(plots._fmt(v), v) for v in ds[d].values], description=d,
                                    continuous_update=False) for d in acc.sweep_dims}
    times = [float(t) for t in ds["t"].values]
    sliders["t"] = w.SelectionSlider(options=[(f"{t:.3g}", t) for t in times], value=times[-1],
                                     description="t", continuous_update=False)
    chosen = [m for m in methods if m in acc.methods] or acc.methods[:1]
    picker = w.SelectMultiple(options=acc.methods, value=tuple(chosen), description="methods", rows=4)
    out = w.Output()
    box = w.VBox([w.HBox([w.VBox(list(sliders.values())), picker]), out])

    def draw(_change: Any = None) -> None:
        sel = {d: [sliders[d].value] for d in acc.sweep_dims}
        cell = ds.sel(sel) if sel else ds
        t = sliders["t"].value
        index = int(np.argmin(np.abs(np.asarray(times) - t)))
        box.figure = plots.cell_densities(cell, t=index - len(times), methods=picker.value)
        with out:
            out.clear_output(wait=True)
            from IPython.display import display

            display(box.figure)

    for control in (*sliders.values(), picker):
        control.observe(draw, names="value")
    box.sliders, box.picker = sliders, picker
    draw()
    return box
