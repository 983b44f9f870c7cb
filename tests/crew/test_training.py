"""The setup plan: one job per model family and symbol, skipped when its models exist for that data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from quantcrew.crew.training import MIN_SETUP_BARS, SetupDefaults, SetupReport, plan_jobs
from quantcrew.data import load_sample
from quantcrew.data.loaders import payload_hash
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.rl import RL_AGENTS

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _model(i: int, family: str, metadata: dict[str, Any]) -> ModelInfo:
    return ModelInfo(model_id=f"{family}-{i:012x}", name=f"{family}-x", version=i, family=family, method="m",
                     sha256="0" * 64, created_at=_T0 + timedelta(minutes=i), stage="none", metadata=metadata)


def _trained(symbol: str, digest: str, *, gate: bool = True) -> list[ModelInfo]:
    extra: dict[str, Any] = {"gate": {"passed": False}} if gate else {}
    models = [_model(i, "rl", {"agent": a, "symbol": symbol, "data_hash": digest, **extra})
              for i, a in enumerate(RL_AGENTS)]
    return [*models, _model(9, "ensemble", {"symbol": symbol, "data_hash": digest, **extra})]


def test_a_fresh_home_plans_three_jobs_per_symbol_in_order() -> None:
    bars = {"SP500": load_sample("SP500").tail(900), "NASDAQ": load_sample("NASDAQ").tail(900)}
    jobs = plan_jobs(bars, [], defaults=SetupDefaults())
    assert [(j.symbol, j.kind, j.status) for j in jobs] == [
        ("SP500", "rl", "planned"), ("SP500", "ensemble", "planned"), ("SP500", "bandit", "planned"),
        ("NASDAQ", "rl", "planned"), ("NASDAQ", "ensemble", "planned"), ("NASDAQ", "bandit", "planned")]
    assert jobs[0].request.timesteps == SetupDefaults().timesteps and jobs[0].request.symbol == "SP500"


def test_the_rl_job_trains_every_agent_over_the_seeds_and_reward_scales_chosen_on_validation() -> None:
    defaults = SetupDefaults(timesteps=3_000, seeds=2, reward_scales=(1.0, 4.0), n_envs=6, validation_fraction=0.2)
    [rl, _, _] = plan_jobs({"SP500": load_sample("SP500").tail(900)}, [], defaults=defaults)
    req = rl.request
    assert (req.timesteps, req.seeds, req.n_envs, req.validation_fraction) == (3_000, 2, 6, 0.2)
    assert req.grid.reward_scale == [1.0, 4.0] and req.runs == 4 and list(req.agents) == list(RL_AGENTS)


def test_the_default_setup_stays_under_the_servers_step_cap() -> None:
    from quantcrew.config.settings import load_settings

    [rl, _, _] = plan_jobs({"SP500": load_sample("SP500").tail(900)}, [], defaults=SetupDefaults())
    assert rl.request.timesteps * rl.request.runs <= load_settings().server.max_timesteps


def test_models_gated_on_the_same_data_are_skipped_and_named() -> None:
    bars = load_sample("SP500").tail(900)
    models = _trained("SP500", payload_hash(bars))
    rl, ensemble, bandit = plan_jobs({"SP500": bars}, models, defaults=SetupDefaults())
    assert rl.status == ensemble.status == "skipped" and bandit.status == "planned"
    assert rl.models == [m.model_id for m in models[:4]]  # one policy per agent, in agent order
    assert ensemble.models == [models[-1].model_id]


@pytest.mark.parametrize("case", ["other data", "other symbol", "no gate verdict", "force"])
def test_models_of_other_data_or_without_a_verdict_are_retrained(case: str) -> None:
    bars = load_sample("SP500").tail(900)
    digest = "sha256:other" if case == "other data" else payload_hash(bars)
    models = _trained("NASDAQ" if case == "other symbol" else "SP500", digest, gate=case != "no gate verdict")
    jobs = plan_jobs({"SP500": bars}, models, defaults=SetupDefaults(), force=case == "force")
    assert [j.status for j in jobs] == ["planned", "planned", "planned"]


def test_a_span_too_short_to_train_and_judge_is_refused_naming_the_symbol() -> None:
    with pytest.raises(ValueError, match=f"NASDAQ: {MIN_SETUP_BARS - 1} bars .* at least {MIN_SETUP_BARS}"):
        plan_jobs({"NASDAQ": load_sample("NASDAQ").tail(MIN_SETUP_BARS - 1)}, [], defaults=SetupDefaults())


def test_a_report_is_ok_only_when_every_job_trained_or_was_skipped() -> None:
    jobs = plan_jobs({"SP500": load_sample("SP500").tail(900)}, [], defaults=SetupDefaults())
    for job, status in zip(jobs, ["succeeded", "skipped", "succeeded"], strict=True):
        job.status = status  # type: ignore[assignment]
    assert SetupReport(jobs).ok
    jobs[2].status = "out_of_budget"
    assert not SetupReport(jobs).ok
