"""Does shrinkage pay? Out-of-sample volatility of minimum-variance portfolios built from each estimator.

A one-factor market (100 assets, 120 in-sample observations, known TRUE covariance Sigma) is
drawn for each seed. Each estimator S gives minimum-variance weights w = S^-1 1 / 1'S^-1 1
(pseudo-inverse for the sample covariance, which is nearly singular at 120 rows for 100
assets); each portfolio is scored by its TRUE volatility sqrt(w' Sigma w), and by the ratio of
that to the true optimum (w built from Sigma itself, ratio 1 by construction). 1/N is shown
for reference. Target: Ledoit-Wolf within 1.35x of the optimum (sample about 2.5x).

Run: .venv/bin/python bench/shrinkage.py [--seeds 50] [--assets 100] [--obs 120]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from _table import print_table, summary

from quantcrew.ml_server.services.risk.covariance import estimate_covariance

FloatArray = npt.NDArray[np.float64]


def _market(n_assets: int, n_obs: int, seed: int) -> tuple[FloatArray, FloatArray, str]:
    try:
        from quantcrew.data.synthetic_assets import generate_factor_market
    except ImportError:
        rng = np.random.default_rng(seed)
        beta = rng.normal(1.0, 0.3, n_assets)
        idio = rng.uniform(0.01, 0.03, n_assets)
        sigma = 1e-4 * np.outer(beta, beta) + np.diag(idio**2)
        returns = rng.multivariate_normal(np.zeros(n_assets), sigma, n_obs)
        return returns, sigma, "bench's own one-factor market"
    market = generate_factor_market(n_assets, n_obs, n_factors=1, seed=seed)
    return market.returns, market.covariance, "quantcrew.data.synthetic_assets.generate_factor_market"


def _min_variance(cov: FloatArray) -> FloatArray:
    ones = np.ones(cov.shape[0])
    x = np.linalg.pinv(cov, hermitian=True) @ ones
    out: FloatArray = x / (ones @ x)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--assets", type=int, default=100)
    parser.add_argument("--obs", type=int, default=120)
    args = parser.parse_args()
    estimators: dict[str, Callable[[FloatArray], FloatArray]] = {
        "sample (pinv)": lambda r: _min_variance(np.cov(r, rowvar=False)),
        "ledoit_wolf": lambda r: _min_variance(estimate_covariance(r, "ledoit_wolf").covariance),
        "oas": lambda r: _min_variance(estimate_covariance(r, "oas").covariance),
        "constant_correlation": lambda r: _min_variance(estimate_covariance(r, "constant_correlation").covariance),
        "1/N": lambda r: np.full(r.shape[1], 1.0 / r.shape[1]),
    }
    vols: dict[str, list[float]] = {name: [] for name in ["true covariance", *estimators]}
    ratios: dict[str, list[float]] = {name: [] for name in vols}
    shrink: dict[str, list[float]] = {"ledoit_wolf": [], "oas": [], "constant_correlation": []}
    source = ""
    for seed in range(args.seeds):
        returns, sigma, source = _market(args.assets, args.obs, seed)
        best = float(np.sqrt(_min_variance(sigma) @ sigma @ _min_variance(sigma)))
        vols["true covariance"].append(best)
        ratios["true covariance"].append(1.0)
        for name, make in estimators.items():
            w = make(returns)
            vol = float(np.sqrt(w @ sigma @ w))
            vols[name].append(vol)
            ratios[name].append(vol / best)
        for name in shrink:
            est = estimate_covariance(returns, name)  # type: ignore[arg-type]
            shrink[name].append(est.shrinkage or 0.0)
    rows = []
    for name in vols:
        v, r = summary(vols[name]), summary(ratios[name])
        s = f"{np.median(shrink[name]):.3f}" if name in shrink else ""
        rows.append([name, v["median"] * 100, v["p95"] * 100, r["median"], r["p95"], s])
    print(f"min-variance portfolios, {args.assets} assets, {args.obs} in-sample rows, {args.seeds} seeds "
          f"({source}); TRUE out-of-sample volatility per period in %, ratio to the true-covariance optimum")
    print_table(["estimator", "vol_median_%", "vol_p95_%", "ratio_median", "ratio_p95", "shrinkage_median"], rows)


if __name__ == "__main__":
    main()
