"""Monte Carlo ensembles: compiled step kernels over independent chains, per-chain counter-based random
streams."""
