"""Conventions of the stationary density of a 1-D diffusion with state-dependent D.

The stationary density of dθ = −G dt + sqrt(2D) dW with zero flux is
p ∝ D^(−α) exp(−∫ G/D dθ): α = 1 for Itô (the SGD SDE: noise evaluated at the current
point), ½ for Stratonovich, 0 for the isothermal (Gibbs-like) reading.
"""

#: Convention name -> the power α of p ∝ D^(−α) exp(−∫G/D).
CONVENTIONS = {"ito": 1.0, "stratonovich": 0.5, "isothermal": 0.0}
