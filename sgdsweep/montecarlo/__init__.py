"""Monte Carlo ensembles: compiled step kernels over independent chains, per-chain counter-based random
streams."""

from sgdsweep.montecarlo.run import EnsembleResult, run_ensemble, simulate

__all__ = ["EnsembleResult", "run_ensemble", "simulate"]
