"""SGD's one-step transfer operators (1-D and 2-D), their assembly, minibatch enumeration and the
Markov-chain solves (stationary law, relaxation, escape)."""
