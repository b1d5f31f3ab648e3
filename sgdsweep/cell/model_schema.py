"""The store layout of a cell on a model with many parameters: dims and CF attributes.

Cell dims (after the sweep axes): ``method``, ``t`` (SDE time), ``x`` (the projection
grid, θ units), ``direction`` (top Hessian eigenvectors h1…hk of θ*, then the user's
u1…um), ``rank`` (Σ*'s top k eigenvalues), ``param`` and
``param2`` (parameter index; the union over the sweep's cells, NaN past a cell's d),
``kind`` (stationary references), ``quantile``.
"""

from __future__ import annotations

from sgdsweep.cell.schema import RUNTIME

#: Stationary references of the moments: SGD's exact discrete-time law, the Itô SDE's, Gibbs'.
MODEL_KINDS = ("sgd", "ito", "gibbs")
QUANTILES = (0.05, 0.5, 0.95)
#: Cell dims of model cells; sweep axes may not take these names.
MODEL_DIMS = ("method", "t", "x", "direction", "rank", "param", "param2", "kind", "quantile")


def variables(full_cov: bool) -> dict[str, tuple[str, ...]]:
    """Variable name -> cell dims. ``full_cov``: the covariance in full (d ≤ models.max_cov_dim)
    or its diagonal ``var``."""
    moment = ("method", "t")
    cov = {"cov": (*moment, "param", "param2")} if full_cov else {"var": (*moment, "param")}
    stat = {"stationary_cov": ("kind", "param", "param2")} if full_cov else \
        {"stationary_var": ("kind", "param")}
    return {
        "density": (*moment, "direction", "x"),
        "mean": (*moment, "param"),
        **cov,
        "proj_mean": (*moment, "direction"),
        "proj_var": (*moment, "direction"),
        "loss_mean": moment,
        "loss_quantile": (*moment, "quantile"),
        "grad_norm_mean": moment,
        "grad_norm_quantile": (*moment, "quantile"),
        "sharpness": moment,
        "lost_fraction": moment,
        "tail_index": ("method", "direction"),
        "tail_index_se": ("method", "direction"),
        "theta_star": ("param",),
        "loss_star": (),
        "grad_norm_star": (),
        "hessian_eig": ("direction",),
        "noise_proj": ("direction",),
        "noise_alignment": (),
        "noise_eig": ("rank",),
        "temperature": (),
        "temperature_direction": ("kind", "direction"),
        **stat,
        "stationary_proj_var": ("kind", "direction"),
        "stationary_excess_loss": ("kind",),
        "ms_edge": (),
        "gd_edge": (),
        "nonuniformity": (),
        "wme_edge": (),
        "one_step_edge": (),
        "kesten_index": (),
        RUNTIME: (),
    }


ATTRS: dict[str, dict[str, str]] = {
    "x": {"long_name": "projection (θ − θ*)·v_k on a Hessian eigenvector (cell centre)", "units": "θ"},
    "direction": {"long_name": "direction v_k of the projections: h1…hk the Hessian's eigenvectors at θ* "
                  "(h1: the largest eigenvalue), u1…um the unit vectors of models.project_on"},
    "param": {"long_name": "parameter index"},
    "param2": {"long_name": "parameter index (second axis of a covariance)"},
    "kind": {"long_name": "stationary reference: sgd (exact discrete-time SGD, least squares), "
             "ito (exact moments of the Itô SDE, least squares), gibbs (T·H*⁻¹)"},
    "quantile": {"long_name": "quantile over the chains", "units": "1"},
    "rank": {"long_name": "rank of an eigenvalue of Σ* (1: the largest)", "units": "1"},
    "density": {"long_name": "probability density of the projection (θ − θ*)·v_k", "units": "1/θ"},
    "mean": {"long_name": "ensemble mean of θ", "units": "θ"},
    "cov": {"long_name": "ensemble covariance of θ (population, over chains not lost)", "units": "θ²"},
    "var": {"long_name": "ensemble variance of each parameter (population, over chains not lost)",
            "units": "θ²"},
    "proj_mean": {"long_name": "ensemble mean of (θ − θ*)·v_k", "units": "θ"},
    "proj_var": {"long_name": "ensemble variance of (θ − θ*)·v_k", "units": "θ²"},
    "loss_mean": {"long_name": "mean training loss L(θ) over the chains", "units": "loss"},
    "loss_quantile": {"long_name": "quantiles of the training loss over the chains", "units": "loss"},
    "grad_norm_mean": {"long_name": "mean |G(θ)| over the chains (full-batch gradient)", "units": "loss/θ"},
    "grad_norm_quantile": {"long_name": "quantiles of |G(θ)| over the chains", "units": "loss/θ"},
    "sharpness": {"long_name": "mean top Hessian eigenvalue over models.sharpness_chains chains "
                  "(Lanczos on Hessian-vector products)", "units": "loss/θ²"},
    "lost_fraction": {"long_name": "fraction of chains diverged (non-finite or |θ_k| > models.bound)",
                      "units": "1"},
    "tail_index": {"long_name": "Hill tail index of |(θ − θ*)·v_k| at the last snapshot "
                   "(top models.hill_frac of the chains)", "units": "1"},
    "tail_index_se": {"long_name": "standard error α/√k of the Hill tail index", "units": "1"},
    "theta_star": {"long_name": "reference minimum θ* (full-batch solve)", "units": "θ"},
    "loss_star": {"long_name": "training loss at θ*", "units": "loss"},
    "grad_norm_star": {"long_name": "|G(θ*)| reached by the full-batch solve", "units": "loss/θ"},
    "hessian_eig": {"long_name": "curvature λ_k = v_kᵀH*v_k at θ*: the Hessian eigenvalue along "
                    "h-directions, the Rayleigh quotient along u-directions", "units": "loss/θ²"},
    "noise_proj": {"long_name": "per-sample gradient variance along v_k at θ*: v_kᵀ Σ* v_k "
                   "(population)", "units": "(loss/θ)²"},
    "noise_alignment": {"long_name": "noise–Hessian alignment tr(Σ*H*) / (‖Σ*‖_F ‖H*‖_F)", "units": "1"},
    "noise_eig": {"long_name": "top eigenvalues of Σ*, the per-sample gradient covariance at θ* (population; "
                  "dense for d ≤ 300, Lanczos beyond), largest first", "units": "(loss/θ)²"},
    "temperature": {"long_name": "Langevin / Gibbs temperature T (default tr D(θ*) / d, "
                    "D = η Σ_b / 2)", "units": "loss"},
    "temperature_direction": {"long_name": "temperature λ_k · var_k that a Gibbs law would need to "
                              "match the reference's variance along v_k (h-directions only: NaN along "
                              "u-directions, where λ_k · var_k is no temperature)", "units": "loss"},
    "stationary_cov": {"long_name": "stationary covariance of θ of the reference (NaN where no "
                       "exact one exists)", "units": "θ²"},
    "stationary_var": {"long_name": "stationary variance of each parameter of the reference",
                       "units": "θ²"},
    "stationary_proj_var": {"long_name": "stationary variance of (θ − θ*)·v_k of the reference",
                            "units": "θ²"},
    "stationary_excess_loss": {"long_name": "stationary mean of L(θ) − L(θ*) of the reference: "
                               "½ tr(H* C) (exact for least squares, whose loss is quadratic)",
                               "units": "loss"},
    "ms_edge": {"long_name": "mean-square stability edge: the largest η at which SGD's second moment "
                "stays bounded (exact, least squares; NaN otherwise)", "units": "1"},
    "gd_edge": {"long_name": "gradient descent's stability edge 2 / λ_max(H*)", "units": "1"},
    "nonuniformity": {"long_name": "non-uniformity s = λ_max((1/n) Σ H_i² − H²)^½ of the per-sample "
                      "Hessians H_i at θ* (Wu, Ma & E 2018)", "units": "loss/θ²"},
    "wme_edge": {"long_name": "Wu–Ma–E bound min(2/λ_max, 1/(s√c)), c the batch factor (√b/s drawing "
                 "with replacement)", "units": "1"},
    "one_step_edge": {"long_name": "largest η with λ_max((I − ηH)² + η²c Σ_H) ≤ 1 (Wu–Ma–E's sufficient "
                      "condition; a lower bound of the mean-square edge; NaN where H* is not positive "
                      "definite or d > 2000)", "units": "1"},
    "kesten_index": {"long_name": "exact stationary tail index α of SGD with b = 1 on one parameter: "
                     "E|1 − η a_B|^α = 1 (Kesten–Goldie; NaN otherwise)", "units": "1"},
    RUNTIME: {"long_name": "wall time of run_cell", "units": "s"},
}
