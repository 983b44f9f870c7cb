"""Which execution network answers: pinned, deployed, gated (409), never trained (404), trained before gates; and
market conditions that overflow the network's scaled inputs refused naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quantcrew.ml_server.errors import InvalidInputError, ModelGatedError, NotFoundError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.execution import ExecutionRequest
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.execution import service
from quantcrew.ml_server.services.execution.fit import ExecTrainConfig
from quantcrew.ml_server.services.execution.inputs import EXECUTION_INPUTS
from quantcrew.ml_server.services.execution.model import ExecutionModel
from quantcrew.ml_server.services.execution.net import ExecutionConfig

FAILED = {"gate": "execution", "passed": False, "checks": [], "interval": None, "p_value": None,
          "span_start": "2018-01-02", "span_end": "2018-06-29", "n": 120,
          "summary": "failed: Sharpe of the sized returns 0.10 < rule sizing 0.40", "rule": "volatility-target rule"}
PASSED = {**FAILED, "passed": True, "summary": "passed: Sharpe of the sized returns 0.50 >= rule sizing 0.40"}


@pytest.fixture
def stores(tmp_path: Path) -> tuple[ModelRegistry, DeploymentStore]:
    db = tmp_path / "registry.db"
    return ModelRegistry(db, tmp_path / "artifacts", cache_size=2), DeploymentStore(db)


def _network(registry: ModelRegistry, symbol: str, gate: dict[str, Any] | None) -> ModelInfo:
    """A registry entry as the training job writes one (resolving never reads the artifact)."""
    metadata: dict[str, Any] = {"symbol": symbol, **({"gate": gate} if gate is not None else {})}
    return registry.save(family="execution", name=service.execution_name(symbol), method="mc_dropout_mlp",
                         obj={"weights": []}, fmt="json", metadata=metadata,
                         stage="full" if gate is None or gate["passed"] else "gated")


def _deploy(deployments: DeploymentStore, info: ModelInfo) -> None:
    deployments.set(model_id=info.model_id, name=info.name, version=info.version, stage="full")


def test_the_deployed_network_answers_not_a_newer_gated_one(stores: tuple[ModelRegistry, DeploymentStore]) -> None:
    registry, deployments = stores
    good = _network(registry, "SYN", PASSED)
    _deploy(deployments, good)
    newer = _network(registry, "SYN", FAILED)
    assert service.resolve_model_id(registry, deployments, None, "SYN") == good.model_id
    assert service.resolve_model_id(registry, deployments, newer.model_id, "SYN") == newer.model_id  # pinned


def test_a_symbol_whose_networks_all_failed_is_a_409_naming_the_newest_and_its_verdict(
        stores: tuple[ModelRegistry, DeploymentStore]) -> None:
    registry, deployments = stores
    _network(registry, "SYN", FAILED)
    newest = _network(registry, "SYN", FAILED)
    with pytest.raises(ModelGatedError) as caught:
        service.resolve_model_id(registry, deployments, None, "SYN")
    err = caught.value
    assert (err.status_code, err.code) == (409, "model_gated")
    assert err.details == {"model_id": newest.model_id, "gate": FAILED, "symbol": "SYN", "name": "execution-SYN"}
    assert "Sharpe of the sized returns 0.10" in err.message


def test_a_symbol_never_trained_is_a_404(stores: tuple[ModelRegistry, DeploymentStore]) -> None:
    registry, deployments = stores
    _network(registry, "SYN", FAILED)
    with pytest.raises(NotFoundError) as caught:
        service.resolve_model_id(registry, deployments, None, "OTHER")
    assert not isinstance(caught.value, ModelGatedError) and "OTHER" in caught.value.message


def test_a_network_trained_before_gates_answers_as_it_did(stores: tuple[ModelRegistry, DeploymentStore]) -> None:
    registry, deployments = stores
    legacy = _network(registry, "OLD", None)
    assert service.resolve_model_id(registry, deployments, None, "OLD") == legacy.model_id
    # once a gated version exists, the gate decides
    judged = _network(registry, "OLD", FAILED)
    with pytest.raises(ModelGatedError) as caught:
        service.resolve_model_id(registry, deployments, None, "OLD")
    assert caught.value.details["model_id"] == judged.model_id


def test_the_input_seed_depends_on_the_network_the_inputs_and_the_samples() -> None:
    x = np.arange(22, dtype=np.float32).reshape(2, 11)
    seed = service.input_seed("execution-1", x, 30)
    assert seed == service.input_seed("execution-1", x.copy(), 30)
    assert 0 <= seed < 2**32
    others = {service.input_seed("execution-2", x, 30), service.input_seed("execution-1", x, 20),
              service.input_seed("execution-1", x + np.float32(1e-3), 30), service.input_seed("execution-1", x[:1], 30)}
    assert seed not in others and len(others) == 4


def _fitted_network() -> ExecutionModel:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(EXECUTION_INPUTS)))
    x[:, 0] = rng.choice([-1.0, 1.0], 200)
    return ExecutionModel(ExecutionConfig(hidden=(8,)), train=ExecTrainConfig(epochs=1)).fit(
        x, rng.uniform(0, 1, 200), (x[:, 5] > 0).astype(np.int64))


def test_market_conditions_whose_scaled_inputs_overflow_the_network_are_a_422_naming_the_field() -> None:
    model = _fitted_network()
    j = EXECUTION_INPUTS.index("volume_z")
    model.scaler_.std[j] = 1e-30  # a column the network saw (almost) constant: any sizeable value overflows float32
    market = {"ret_1": 0.01, "ret_5": 0.02, "vol_10": 0.01, "vol_ratio": 1.0, "range": 0.02, "volume_z": 1e12}
    req = ExecutionRequest.model_validate({"signals": [{"signal": "up", "confidence": 0.7}], "market": [market]})
    with pytest.raises(InvalidInputError, match="'volume_z' of decision 0 is 1e\\+12") as err:
        service.prepare(req, model, max_request_batch=8)
    assert err.value.details[0]["loc"] == ["market", 0, "volume_z"]
    fine = ExecutionRequest.model_validate({"signals": [{"signal": "up", "confidence": 0.7}],
                                            "market": [{**market, "volume_z": 0.0}]})
    assert np.isfinite(service.prepare(fine, model, max_request_batch=8).x).all()
