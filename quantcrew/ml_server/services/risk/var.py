"""Value-at-Risk and CVaR (expected shortfall) of a portfolio return series.

Conventions shared by every function here: ``pnl`` is the portfolio's periodic SIMPLE return
(oldest first); a loss is ``-return``, so VaR and CVaR are POSITIVE numbers for a losing tail,
as fractions of portfolio value. ``VaR_a`` is the a-quantile of the loss and ``CVaR_a`` the
mean loss at or beyond it (expected shortfall), so ``CVaR_a >= VaR_a``.

Horizons (``horizon`` periods):

* historical: overlapping ``horizon``-period COMPOUNDED returns ``prod(1 + r) - 1`` when at
  least :data:`MIN_OVERLAPPING_WINDOWS` (100) such windows exist, else the one-period VaR and
  CVaR scaled by ``sqrt(horizon)`` (:func:`historical_horizon_rule` says which);
* parametric normal: mean ``horizon * mu``, volatility ``sqrt(horizon) * sigma`` (exact for
  i.i.d. normal returns summed over the horizon);
* parametric t: the same square-root-of-time scaling of the fitted location and scale (a sum
  of t variables is not t; this is the usual approximation);
* Monte Carlo: draws from N(horizon * mean, horizon * cov);
* filtered historical: bootstrap of standardised GARCH residuals through the GARCH recursion,
  compounding the simulated returns.

:mod:`quantcrew.ml_server.services.risk.service` runs them on a request's portfolio and builds
the reply; :mod:`quantcrew.ml_server.services.risk.backtest` runs them on rolling windows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.risk import GarchModel
from quantcrew.ml_server.services.risk.garch import GarchParams, fit_garch, garch_filter

__all__ = [
    "MC_BLOCK_PATHS",
    "MIN_OVERLAPPING_WINDOWS",
    "T_DF_BOUNDS",
    "HorizonRule",
    "VarCvar",
    "factor_from_covariance",
    "filtered_historical_var",
    "fit_student_t",
    "historical_horizon_rule",
    "historical_var",
    "monte_carlo_var",
    "parametric_normal_var",
    "parametric_t_var",
    "tail_measures",
]

FloatArray = npt.NDArray[np.float64]
HorizonRule = Literal["single_period", "overlapping", "sqrt_time"]

MIN_OVERLAPPING_WINDOWS = 100
"""Historical VaR over h > 1 periods uses overlapping h-period returns when at least this many exist."""
T_DF_BOUNDS = (2.1, 100.0)
"""Degrees of freedom of the fitted Student t are clipped to this range."""
MC_BLOCK_PATHS = 32_768
"""Monte Carlo paths per random block: block b draws from ``SFC64(SeedSequence(seed).spawn(n_blocks)[b])``."""


@dataclass(frozen=True)
class VarCvar:
    """VaR and CVaR at one confidence level (positive loss fractions)."""

    level: float
    var: float
    cvar: float


# ---------------------------------------------------------------------------------------------
# historical


def historical_horizon_rule(n_obs: int, horizon: int) -> HorizonRule:
    """Which horizon rule :func:`historical_var` applies to ``n_obs`` returns over ``horizon`` periods."""
    if horizon == 1:
        return "single_period"
    return "overlapping" if n_obs - horizon + 1 >= MIN_OVERLAPPING_WINDOWS else "sqrt_time"


def historical_var(pnl: FloatArray, levels: Sequence[float], horizon: int = 1) -> list[VarCvar]:
    """Empirical VaR / CVaR of the observed returns.

    Args:
        pnl: Portfolio periodic simple returns, oldest first, shape (n,), n >= 2.
        levels: Confidence levels strictly inside (0, 1).
        horizon: Periods; see :func:`historical_horizon_rule` for how h > 1 is handled.

    Returns:
        One :class:`VarCvar` per level, in the order given. VaR is the linearly interpolated
        empirical quantile of the losses, CVaR the mean of the losses at or beyond it.
    """
    x = _series(pnl, min_rows=2)
    _check_levels(levels)
    _check_horizon(horizon)
    rule = historical_horizon_rule(x.shape[0], horizon)
    if rule == "overlapping":
        # a direct product (not exp of summed log1p) so that a return <= -100 % (leverage) stays finite
        windows = np.lib.stride_tricks.sliding_window_view(1.0 + x, horizon).prod(axis=1) - 1.0
        return tail_measures(-windows, levels)
    one = tail_measures(-x, levels)
    if rule == "single_period":
        return one
    root = math.sqrt(horizon)
    return [VarCvar(e.level, e.var * root, e.cvar * root) for e in one]


def tail_measures(losses: FloatArray, levels: Sequence[float]) -> list[VarCvar]:
    """Empirical VaR and CVaR (mean loss at or beyond the VaR) of a loss sample.

    The quantile is the Weibull plotting position ``p (n + 1)`` (interpolated), unbiased for
    the level's exceedance probability; numpy's default ``1 + p (n - 1)`` sits inside the
    sample and is exceeded about 1.2 % of the time at 99 % on 500 observations.
    """
    q = np.quantile(losses, list(levels), method="weibull")
    out = []
    for level, var in zip(levels, q, strict=True):
        tail = losses[losses >= var]
        cvar = float(tail.mean()) if tail.size else float(var)
        out.append(VarCvar(float(level), float(var), max(cvar, float(var))))
    return out


# ---------------------------------------------------------------------------------------------
# parametric


def parametric_normal_var(mu: float, sigma: float, levels: Sequence[float], horizon: int = 1) -> list[VarCvar]:
    """Closed-form VaR / CVaR of normal returns N(mu, sigma^2) per period.

    ``VaR = -h mu + sqrt(h) sigma z_a`` and ``CVaR = -h mu + sqrt(h) sigma phi(z_a) / (1 - a)``;
    e.g. N(0, 0.01^2) at 95 %: VaR 0.0164485, CVaR 0.0206271.
    """
    _check_levels(levels)
    _check_horizon(horizon)
    if not (math.isfinite(mu) and math.isfinite(sigma)) or sigma < 0.0:
        raise InvalidInputError(f"data: portfolio mean {mu} and volatility {sigma} must be finite, volatility >= 0",
                                details=[{"loc": ["data"], "msg": "invalid portfolio moments"}])
    m, s = horizon * mu, math.sqrt(horizon) * sigma
    out = []
    for level in levels:
        z = float(special.ndtri(level))
        pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        out.append(VarCvar(float(level), -m + s * z, -m + s * pdf / (1.0 - level)))
    return out


def fit_student_t(pnl: FloatArray) -> tuple[float, float, float]:
    """Maximum-likelihood Student t fit ``(df, loc, scale)`` with df clipped to [2.1, 100].

    A profile likelihood: for each df, loc and scale come from the EM (iteratively reweighted)
    fixed point of the t likelihood; df maximises the profile over log(df) on the bounds. It
    agrees with ``scipy.stats.t.fit`` to optimiser tolerance and is several times faster,
    which matters to a rolling backtest.
    """
    x = _series(pnl, min_rows=3)
    scale0 = float(np.std(x))
    if scale0 == 0.0:
        raise InvalidInputError("data: the portfolio return series is constant; a t distribution cannot be fitted",
                                details=[{"loc": ["data", "values"], "msg": "constant series"}])
    med = float(np.median(x))

    def loc_scale(df: float) -> tuple[float, float]:
        loc, s2 = med, scale0 * scale0
        for _ in range(200):
            d2 = (x - loc) ** 2 / s2
            w = (df + 1.0) / (df + d2)
            new_loc = float(np.dot(w, x) / w.sum())
            new_s2 = float(np.dot(w, (x - new_loc) ** 2) / x.shape[0])
            done = abs(new_loc - loc) <= 1e-10 * scale0 and abs(new_s2 - s2) <= 1e-9 * s2
            loc, s2 = new_loc, new_s2
            if done:
                break
        return loc, math.sqrt(s2)

    def neg_loglik(log_df: float) -> float:
        df = math.exp(log_df)
        loc, scale = loc_scale(df)
        return -float(np.sum(stats.t.logpdf(x, df, loc=loc, scale=scale)))

    lo, hi = math.log(T_DF_BOUNDS[0]), math.log(T_DF_BOUNDS[1])
    res = optimize.minimize_scalar(neg_loglik, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    df = float(min(max(math.exp(float(res.x)), T_DF_BOUNDS[0]), T_DF_BOUNDS[1]))
    loc, scale = loc_scale(df)
    return df, loc, scale


def parametric_t_var(pnl: FloatArray, levels: Sequence[float], horizon: int = 1) -> tuple[list[VarCvar], float]:
    """VaR / CVaR of a Student t fitted to the returns by maximum likelihood.

    Closed forms for ``r = loc + scale * T_df``: ``VaR = -loc + scale * t_a`` and
    ``CVaR = -loc + scale * f(t_a) (df + t_a^2) / ((df - 1)(1 - a))`` with ``t_a`` the a-quantile
    and ``f`` the density of the standard t. Horizon h scales loc by h and scale by sqrt(h).

    Returns:
        ``(estimates, df)``: one :class:`VarCvar` per level, and the fitted degrees of freedom.
    """
    _check_levels(levels)
    _check_horizon(horizon)
    df, loc, scale = fit_student_t(pnl)
    m, s = horizon * loc, math.sqrt(horizon) * scale
    out = []
    for level in levels:
        q = float(stats.t.ppf(level, df))
        shortfall = float(stats.t.pdf(q, df)) * (df + q * q) / ((df - 1.0) * (1.0 - level))
        out.append(VarCvar(float(level), -m + s * q, -m + s * shortfall))
    return out, df


# ---------------------------------------------------------------------------------------------
# Monte Carlo


def factor_from_covariance(cov: FloatArray) -> tuple[FloatArray, bool]:
    """A matrix ``L`` with ``L @ L.T == cov``: Cholesky, or eigen-decomposition with negative eigenvalues clipped.

    Returns:
        ``(L, clipped)``; ``clipped`` is True when Cholesky failed (a singular or slightly
        indefinite matrix) and the eigenvalue route was used.
    """
    c = np.asarray(cov, dtype=np.float64)
    try:
        chol: FloatArray = np.asarray(np.linalg.cholesky(c), dtype=np.float64)
        return chol, False
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh((c + c.T) / 2.0)
        clipped: FloatArray = vecs * np.sqrt(np.clip(vals, 0.0, None))
        return clipped, True


def monte_carlo_var(
    weights: FloatArray,
    mean: FloatArray,
    cov: FloatArray,
    levels: Sequence[float],
    *,
    horizon: int = 1,
    n_paths: int = 100_000,
    seed: int = 0,
    chunk_size: int = 250_000,
    device: str = "cpu",
) -> list[VarCvar]:
    """VaR / CVaR of the portfolio ``w`` under multivariate normal returns N(h * mean, h * cov).

    Each path draws ``z ~ N(0, I_k)`` and the asset returns ``r = h mean + L z`` with
    ``L L^T = h cov`` (Cholesky, eigenvalue clipping for a singular matrix); the portfolio loss
    is ``-(w . r) = -(w . h mean) - (L^T w) . z``. Reducing by ``b = L^T w`` first makes a path
    cost one k-vector dot product instead of a k x k product, with identical results. (The
    portfolio return is then exactly normal and a closed form exists; the simulation is kept
    honest, drawing and reducing every z, so that it can be checked against that closed form.)

    Memory stays bounded whatever ``n_paths``: the normals are drawn block by block (at most
    ``chunk_size`` paths of k normals alive at a time, float32) and only the n_paths portfolio
    losses (float64, 8 MB per million) are kept, for exact empirical quantiles.

    Reproducibility: on CPU the paths are cut into fixed blocks of :data:`MC_BLOCK_PATHS`
    paths; block b draws from an SFC64 generator seeded by ``SeedSequence(seed).spawn(n_blocks)[b]``,
    in pieces of at most ``chunk_size`` rows from that one generator, so the answer depends on
    ``seed`` and ``n_paths`` only, not on ``chunk_size`` nor on the number of threads (blocks
    run on a thread pool: numpy releases the GIL while drawing). On ``cuda*`` devices torch
    draws the normals (seeded ``torch.Generator``): reproducible on that device, but a
    different stream from the CPU one.

    Args:
        weights: Portfolio weights, shape (k,).
        mean: Mean return per period, shape (k,).
        cov: Covariance per period, shape (k, k), positive semi-definite.
        levels: Confidence levels strictly inside (0, 1).
        horizon: Periods.
        n_paths: Simulated paths (>= 1).
        seed: Seed of the draws.
        chunk_size: Most paths whose normals are held in memory at once.
        device: ``"cpu"`` (numpy) or ``"cuda"`` / ``"cuda:N"`` (torch).

    Returns:
        One :class:`VarCvar` per level.
    """
    _check_levels(levels)
    _check_horizon(horizon)
    w = np.asarray(weights, dtype=np.float64).ravel()
    mu = np.asarray(mean, dtype=np.float64).ravel()
    c = np.asarray(cov, dtype=np.float64)
    k = w.shape[0]
    if mu.shape != (k,) or c.shape != (k, k):
        raise InvalidInputError(
            f"data: weights ({k}), mean {mu.shape} and covariance {c.shape} do not agree",
            details=[{"loc": ["weights"], "msg": "shape mismatch"}])
    if n_paths < 1 or chunk_size < 1:
        raise InvalidInputError("n_paths: n_paths and chunk_size must be positive",
                                details=[{"loc": ["n_paths"], "msg": "must be positive"}])
    factor, _ = factor_from_covariance(c * horizon)
    b = factor.T @ w
    shift = -float(np.dot(w, mu)) * horizon
    if device.startswith("cuda"):
        losses = _mc_losses_torch(b, shift, n_paths=n_paths, seed=seed, chunk_size=chunk_size, device=device)
    else:
        losses = _mc_losses_numpy(b, shift, n_paths=n_paths, seed=seed, chunk_size=chunk_size)
    return tail_measures(losses, levels)


def _mc_losses_numpy(b: FloatArray, shift: float, *, n_paths: int, seed: int, chunk_size: int) -> FloatArray:
    k = b.shape[0]
    b32 = b.astype(np.float32)
    losses = np.empty(n_paths, dtype=np.float64)
    n_blocks = -(-n_paths // MC_BLOCK_PATHS)
    seeds = np.random.SeedSequence(seed).spawn(n_blocks)
    piece = min(chunk_size, MC_BLOCK_PATHS)

    def run_block(i: int) -> None:
        rng = np.random.Generator(np.random.SFC64(seeds[i]))  # SFC64: the fastest of numpy's bit generators
        start, stop = i * MC_BLOCK_PATHS, min((i + 1) * MC_BLOCK_PATHS, n_paths)
        for lo in range(start, stop, piece):
            hi = min(lo + piece, stop)
            z = rng.standard_normal((hi - lo, k), dtype=np.float32)
            losses[lo:hi] = z @ b32
        losses[start:stop] = shift - losses[start:stop]

    # every worker holds one piece of normals: keep workers * piece <= chunk_size
    workers = max(1, min(os.cpu_count() or 1, n_blocks, chunk_size // piece))
    if workers == 1:
        for i in range(n_blocks):
            run_block(i)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(run_block, range(n_blocks)))
    return losses


def _mc_losses_torch(b: FloatArray, shift: float, *, n_paths: int, seed: int, chunk_size: int,
                     device: str) -> FloatArray:
    import torch  # server-side only, and only on a GPU path

    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    bt = torch.as_tensor(b, dtype=torch.float32, device=device)
    out = torch.empty(n_paths, dtype=torch.float64, device=device)
    for lo in range(0, n_paths, chunk_size):
        hi = min(lo + chunk_size, n_paths)
        z = torch.randn((hi - lo, b.shape[0]), generator=gen, device=device, dtype=torch.float32)
        out[lo:hi] = (z @ bt).to(torch.float64)
    losses: FloatArray = (shift - out).cpu().numpy().astype(np.float64)
    return losses


# ---------------------------------------------------------------------------------------------
# filtered historical simulation


def filtered_historical_var(
    pnl: FloatArray,
    levels: Sequence[float],
    *,
    horizon: int = 1,
    n_paths: int = 10_000,
    seed: int = 0,
    params: GarchParams | None = None,
    garch_model: GarchModel = "gjr",
) -> tuple[list[VarCvar], GarchParams]:
    """Filtered historical simulation (Barone-Adesi et al.) on a GARCH(1,1)-t volatility.

    The returns are filtered by GARCH (fitted here unless ``params`` is given), giving
    standardised residuals ``e_t`` and the forecast ``sigma_{T+1}``. Horizon 1 is exact, no
    simulation: the loss sample is ``-(mu + sigma_{T+1} e_t)`` over the observed residuals.
    Horizon h > 1 bootstraps residuals (``n_paths`` paths, ``seed``) through the GARCH
    recursion, compounding the simulated returns ``prod(1 + r) - 1``.

    Returns:
        ``(estimates, params)``: one :class:`VarCvar` per level and the parameters used (check
        ``params.fallback``: EWMA when the fit failed).

    Raises:
        InvalidInputError: fewer than 250 observations when a fit is needed (field ``data``).
    """
    _check_levels(levels)
    _check_horizon(horizon)
    x = _series(pnl, min_rows=2)
    if params is None:
        params = fit_garch(x, model=garch_model)
    sigma, resid = garch_filter(x, params)
    sigma_next = float(sigma[-1])
    if horizon == 1:
        return tail_measures(-(params.mu + sigma_next * resid), levels), params
    rng = np.random.default_rng(seed)
    growth = np.ones(n_paths)
    s2 = np.full(n_paths, sigma_next * sigma_next)
    for _ in range(horizon):
        eps = np.sqrt(s2) * resid[rng.integers(0, resid.shape[0], size=n_paths)]
        growth *= 1.0 + params.mu + eps
        s2 = params.omega + (params.alpha + params.gamma * (eps < 0.0)) * eps * eps + params.beta * s2
    return tail_measures(1.0 - growth, levels), params


# ---------------------------------------------------------------------------------------------
# checks


def _series(pnl: FloatArray, *, min_rows: int) -> FloatArray:
    x = np.asarray(pnl, dtype=np.float64).ravel()
    if x.shape[0] < min_rows:
        raise InvalidInputError(
            f"data: {x.shape[0]} returns; at least {min_rows} are needed",
            details=[{"loc": ["data", "values"], "msg": f"need at least {min_rows} rows"}])
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("data: the return series holds non-finite values",
                                details=[{"loc": ["data", "values"], "msg": "non-finite values"}])
    return x


def _check_levels(levels: Sequence[float]) -> None:
    if len(levels) == 0:
        raise InvalidInputError("levels: give at least one confidence level",
                                details=[{"loc": ["levels"], "msg": "empty"}])
    for i, level in enumerate(levels):
        if not (math.isfinite(level) and 0.0 < level < 1.0):
            raise InvalidInputError(
                f"levels[{i}] = {level}: each level must be strictly between 0 and 1, e.g. 0.95",
                details=[{"loc": ["levels", i], "msg": "must be strictly between 0 and 1"}])


def _check_horizon(horizon: int) -> None:
    if horizon < 1:
        raise InvalidInputError(f"horizon_days = {horizon}: the horizon must be at least 1 period",
                                details=[{"loc": ["horizon_days"], "msg": "must be >= 1"}])
