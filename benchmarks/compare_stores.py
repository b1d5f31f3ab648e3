"""Compare two directories of sweep stores (or two stores) variable by variable, bit for bit.

Every variable present in the first store must be in the second with the same dims,
coordinates and bytes (NaN equal to NaN; strings: the same decoded text, whatever their
Zarr data type); ``runtime`` (wall time) is skipped.
Variables only in the second store (new ones) are listed, not compared.

    python benchmarks/compare_stores.py OLD NEW
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import xarray as xr

SKIP = {"runtime"}


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bytes for numbers; equal decoded values for strings (fixed-width ``<U`` of
    older stores, variable-length ``string`` of newer ones)."""
    if a.dtype.kind in "UOT" and b.dtype.kind in "UOT":
        return a.shape == b.shape and a.astype(object).tolist() == b.astype(object).tolist()
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return a.tobytes() == b.tobytes() or bool(
            np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b)))
    return bool(np.array_equal(a, b))


def compare(old: Path, new: Path) -> list[str]:
    a, b = xr.open_zarr(old), xr.open_zarr(new)
    problems = []
    for name in a.coords:
        if name not in b.coords or not same(a[name].values, b[name].values):
            problems.append(f"{old.name}: coordinate {name} differs")
    for name in a.data_vars:
        if name in SKIP:
            continue
        if name not in b:
            problems.append(f"{old.name}: {name} missing")
        elif a[name].dims != b[name].dims or a[name].shape != b[name].shape:
            problems.append(f"{old.name}: {name} dims {dict(a[name].sizes)} != {dict(b[name].sizes)}")
        elif not same(a[name].values, b[name].values):
            diff = np.nanmax(np.abs(a[name].values.astype(float) - b[name].values.astype(float))) \
                if a[name].dtype.kind in "fb" else "?"
            problems.append(f"{old.name}: {name} differs (max |diff| {diff})")
    extra = sorted(set(b.data_vars) - set(a.data_vars))
    n_done = int(a["done"].sum())
    new = f"; new in the second: {', '.join(extra)}" if extra else ""
    print(f"{old.name}: {len(a.data_vars) - len(SKIP & set(a.data_vars))} variables compared, "
          f"{n_done}/{a['done'].size} cells done{new}")
    return problems


def main(old: str, new: str) -> int:
    o, n = Path(old), Path(new)
    pairs = [(o, n)] if o.suffix == ".zarr" else [(p, n / p.name) for p in sorted(o.glob("*.zarr"))]
    problems = []
    for p, q in pairs:
        if not q.exists():
            problems.append(f"{q}: missing")
            continue
        problems += compare(p, q)
    for line in problems:
        print("DIFFERENT:", line)
    print("identical" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
