"""``quantcrew train``: bad arguments refused before any server starts; the RL table shows each gate verdict."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from quantcrew.cli import app
from quantcrew.crew.server_process import LocalServer


@pytest.fixture(autouse=True)
def no_server_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: LocalServer, meanwhile: object = None) -> LocalServer:
        raise AssertionError("an ML server was started for bad input")

    monkeypatch.setattr(LocalServer, "start", refuse)


@pytest.mark.parametrize(("args", "needle"), [
    (["--no-wait"], "--no-wait needs --server-url"),
    (["--model", "xgboost"], "'rl' or 'ensemble'"),
    (["--symbol", "NOPE"], "NOPE"),
    (["--algo", "sac"], "'ppo', 'a2c' or 'dqn'"),
    (["--model", "ensemble", "--test-start", "someday"], "test_start"),
])
def test_train_bad_arguments_exit_2_before_any_server(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["train", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.stderr.split())


# -- the RL result table ---------------------------------------------------------------------------


def _rl_result(passed_gate: bool) -> dict[str, object]:
    """A training result with one policy of each kind: a gated one, and one that passed or is legacy."""
    import numpy as np

    from quantcrew.ml_server.services.gate import rl_policy_gate

    market = np.random.default_rng(1).normal(0.002, 0.01, 300)  # rises: buy-and-hold Sharpe well above 0
    flat = rl_policy_gate(strategy_returns=np.zeros(300), positions=np.zeros(300), buy_hold_returns=market,
                          specialty="max drawdown", specialty_value=0.0, buy_hold_specialty_value=0.1,
                          higher_is_better=False, span_start="2018-01-02", span_end="2018-12-31")
    timing = np.sign(market)
    good = rl_policy_gate(strategy_returns=timing * market, positions=timing, buy_hold_returns=market,
                          specialty="max drawdown", specialty_value=0.01, buy_hold_specialty_value=0.1,
                          higher_is_better=False, span_start="2018-01-02", span_end="2018-12-31")
    report = {"total_return": 0.01, "annual_return": 0.01, "annual_volatility": 0.1, "sharpe": 0.5, "sortino": 0.6,
              "max_drawdown": 0.05, "turnover": 0.1, "hit_rate": 0.5, "exposure": 0.5, "n_bars": 300}

    def policy(agent: str, model_id: str, gate: object, deployed: bool) -> dict[str, object]:
        return {"agent": agent, "model_id": model_id, "model_version": 1, "name": f"rl-{agent}-a2c",
                "algorithm": "a2c", "sha256": "0" * 64, "seed": 0, "timesteps": 512, "train_seconds": 1.0,
                "train_start": "2010-01-04", "train_end": "2017-12-29", "gate": gate, "deployed": deployed,
                "evaluation": {"agent": agent, "model_id": model_id, "algorithm": "a2c", "metrics": report,
                               "regime_returns": {}, "specialty_metric": "max_drawdown", "beats_buy_and_hold": True}}

    second = good.model_dump(mode="json") if passed_gate else None
    return {"policies": [policy("conservative", "rl-000000000001", flat.model_dump(mode="json"), False),
                         policy("aggressive", "rl-000000000002", second, passed_gate)],
            "regime_model_id": None, "train_start": "2010-01-04", "train_end": "2017-12-29",
            "test_start": "2018-01-02", "test_end": "2018-12-31", "benchmarks": {"buy_and_hold": report},
            "benchmark_regime_returns": {}, "data_hash": "sha256:0"}


def test_the_rl_table_shows_the_gate_verdict_with_what_was_compared_and_deployment() -> None:
    from quantcrew.cli.common import console
    from quantcrew.cli.train import _print_rl_result

    with console.capture() as captured:
        console.width = 250
        _print_rl_result(_rl_result(passed_gate=True))
    lines = captured.get().splitlines()
    header = next(line for line in lines if "agent" in line)
    assert "gate" in header and "deployed" in header and "beats B&H" not in header
    conservative = next(line for line in lines if "conservative" in line)
    # never trades: the drawdown is small, and still it fails, saying why
    assert "failed: Sharpe 0.00 <= B&H 1.67, <= flat 0.00; held 0% <= 10% of bars" in conservative
    assert _cells(conservative)[-1] == "no"
    aggressive = next(line for line in lines if "aggressive" in line)
    assert "PASSED: Sharpe" in aggressive and "> B&H" in aggressive and _cells(aggressive)[-1] == "yes"
    assert "not deployed: conservative" in captured.get()


def test_the_rl_table_reads_a_policy_without_a_verdict() -> None:
    from quantcrew.cli.common import console
    from quantcrew.cli.train import _print_rl_result

    with console.capture() as captured:
        console.width = 250
        _print_rl_result(_rl_result(passed_gate=False))
    aggressive = next(line for line in captured.get().splitlines() if "aggressive" in line)
    assert "no verdict" in aggressive and _cells(aggressive)[-1] == "no"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("│").split("│")]
