"""Fokker–Planck operators (1-D and 2-D, Itô), probability currents, non-equilibrium measures, exact
mean first-passage times and closed-form references."""
