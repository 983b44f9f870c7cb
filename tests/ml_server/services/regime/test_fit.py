"""HMM fitting of the regime family: BIC's parameter count, the choice among transforms and counts, and a
starting model hmmlearn refuses counted as a failed restart."""

from __future__ import annotations

import numpy as np

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.regime.features import FeatureSource
from quantcrew.ml_server.services.regime.fit import fit_restarts, n_parameters, select_model


def test_n_parameters_counts_covariance_entries() -> None:
    assert n_parameters(2, 1, "full") == 1 + 2 + 2 + 2
    assert n_parameters(4, 3, "full") == 3 + 12 + 12 + 24
    assert n_parameters(4, 3, "diag") == 3 + 12 + 12 + 12


def test_select_model_keeps_the_lowest_bic_and_the_features_it_was_fitted_on() -> None:
    market = generate_regime_market(600, seed=2)
    bars = bars_from_payload(OHLCVPayload.model_validate(to_payload_dict(market.bars)))
    source = FeatureSource(bars, ("range",), vol_window=5)
    matrices = {t: source.matrix(("range",), vol_transform=t) for t in ("log", "sqrt")}
    choice, failures = select_model(matrices, counts=[2, 3], seed=0, n_restarts=2, covariance_type="full",
                                    n_iter=100, tol=1e-2)
    assert choice is not None and not failures
    assert choice.bic[choice.fit.n_states] == min(choice.bic.values())
    matrix, _ = matrices[choice.transform]
    assert choice.features.shape == matrix.values.shape
    assert choice.fit.model.score(choice.features) == choice.fit.log_likelihood


def test_a_restart_whose_starting_covariance_is_not_positive_definite_is_a_failed_restart_not_an_error() -> None:
    # two features in lockstep at a scale where min_covar no longer lifts a group's covariance off singular:
    # the starting model is refused by hmmlearn, which the fit reports like any other failed restart
    a = np.random.default_rng(0).normal(size=200)
    z = np.c_[a * 1e10, a * 1e10 * (1 + 1e-12)]
    fit, failures = fit_restarts(z, np.abs(a), 2, seed=0, n_restarts=2, covariance_type="full", n_iter=10, tol=1e-2)
    assert fit is None
    assert len(failures) == 2 and all("positive-definite" in f for f in failures)
