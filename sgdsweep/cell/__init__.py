"""One grid point: the cell's config schema, its lazily computed context, ``run_cell`` and the store's
names."""
