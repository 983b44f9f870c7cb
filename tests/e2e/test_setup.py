"""Setup against a real ML server: train, judge, warm-start, skip on a re-run, cut at the budget; then the
crew decides from what setup trained, identically run after run, and is not degraded."""

from __future__ import annotations

import httpx
import pytest

from quantcrew.config.settings import Settings
from quantcrew.crew.kickoff import run
from quantcrew.crew.server_process import LocalServer
from quantcrew.crew.training import SetupDefaults, SetupJob, plan_jobs, run_plan
from quantcrew.data import load_sample
from quantcrew.ml_server.schemas.bandit import BanditReplayResult
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.tools.client import MLClient

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

# A2C: a PPO run collects at least one 2,048-step rollout and makes 10 passes over it, whatever the timesteps
TINY = SetupDefaults(timesteps=256, epochs=1, members=1, folds=1, seeds=1, reward_scales=(1.0,), n_envs=2,
                     algorithm="a2c")
END = "2003-06-30"


@pytest.fixture(scope="module")
def bars() -> dict[str, object]:
    return {"SP500": load_sample("SP500").between(None, END)}


@pytest.fixture(scope="module")
def first_setup(own_server: LocalServer, bars: dict[str, object]) -> list[SetupJob]:
    with MLClient(httpx.Client(base_url=own_server.url, timeout=60.0)) as client:
        jobs = plan_jobs(bars, client.list_models(), defaults=TINY)  # type: ignore[arg-type]
        report = run_plan(client, jobs, budget_s=600, bars_by_symbol=bars, poll_s=0.1)  # type: ignore[arg-type]
    assert report.ok, [(j.kind, j.status, j.detail) for j in report.jobs]
    return report.jobs


def test_setup_trains_judges_every_model_and_warm_starts_the_bandit(first_setup: list[SetupJob],
                                                                   own_server: LocalServer) -> None:
    rl, ensemble, bandit = first_setup
    assert [j.status for j in first_setup] == ["succeeded"] * 3
    assert len(rl.models) == 4 and all(p["gate"] is not None for p in rl.result["policies"])
    assert ensemble.result["gate"] is not None and ensemble.result["execution_gate"] is not None
    replay = BanditReplayResult.model_validate(bandit.result)
    assert replay.bars > 100 and sum(replay.pulls.values()) == replay.bars
    assert sorted(replay.agents.values()) == sorted(rl.models)
    assert replay.regret == pytest.approx(replay.best_agent_reward - replay.bandit_reward)
    with MLClient(httpx.Client(base_url=own_server.url, timeout=60.0)) as client:
        models = {m.model_id: m for m in client.list_models()}
        state = client.bandit_state("meta-orchestrator")
    # every verdict is recorded with its model, and the bandit learnt from exactly the replayed bars
    assert all("gate" in models[m].metadata for m in rl.models)
    assert sum(r.pulls for r in state.regimes) == replay.bars


def test_a_rerun_skips_what_is_trained_and_never_rewards_twice(first_setup: list[SetupJob], own_server: LocalServer,
                                                               bars: dict[str, object]) -> None:
    with MLClient(httpx.Client(base_url=own_server.url, timeout=60.0)) as client:
        before = client.bandit_state("meta-orchestrator")
        jobs = plan_jobs(bars, client.list_models(), defaults=TINY)  # type: ignore[arg-type]
        assert [j.status for j in jobs] == ["skipped", "skipped", "planned"]
        report = run_plan(client, jobs, budget_s=600, bars_by_symbol=bars, poll_s=0.1)  # type: ignore[arg-type]
        after = client.bandit_state("meta-orchestrator")
    assert report.ok and [j.status for j in report.jobs] == ["skipped"] * 3
    assert "already replayed" in report.jobs[2].detail
    assert [r.pulls for r in after.regimes] == [r.pulls for r in before.regimes]


def test_the_budget_cancels_the_running_job_and_keeps_earlier_models(first_setup: list[SetupJob],
                                                                     own_server: LocalServer) -> None:
    longer = {"SP500": load_sample("SP500").between(None, "2004-06-30")}
    with MLClient(httpx.Client(base_url=own_server.url, timeout=60.0)) as client:
        kept = {m.model_id for m in client.list_models()}
        jobs = plan_jobs(longer, client.list_models(), defaults=SetupDefaults(timesteps=200_000))
        report = run_plan(client, jobs, budget_s=3.0, bars_by_symbol=longer, poll_s=0.1)
        after = {m.model_id for m in client.list_models()}
    assert not report.ok
    assert [j.status for j in report.jobs] == ["out_of_budget"] * 3
    assert "cancelled at the time budget" in report.jobs[0].detail
    assert kept <= after  # the first setup's models are intact


def test_ctrl_c_cancels_the_running_job_on_the_server_and_marks_the_rest(first_setup: list[SetupJob],
                                                                        own_server: LocalServer) -> None:
    longer = {"SP500": load_sample("SP500").between(None, "2004-12-31")}

    def interrupt(job: SetupJob, info: JobInfo | None) -> None:
        if info is not None and info.status == "running":
            raise KeyboardInterrupt

    with MLClient(httpx.Client(base_url=own_server.url, timeout=60.0)) as client:
        jobs = plan_jobs(longer, client.list_models(), defaults=SetupDefaults(timesteps=200_000))
        with pytest.raises(KeyboardInterrupt):
            run_plan(client, jobs, budget_s=600, bars_by_symbol=longer, on_progress=interrupt, poll_s=0.1)
        assert jobs[0].job_id is not None
        stopped = client.wait_for_job(jobs[0].job_id, poll_s=0.1, timeout_s=60)
    assert stopped.status == "cancelled"
    assert [j.status for j in jobs] == ["cancelled"] * 3 and "Ctrl-C" in jobs[0].detail


def test_five_identical_runs_after_setup_give_identical_decisions_that_are_not_degraded(
        first_setup: list[SetupJob], own_server: LocalServer, settings: Settings, refused: list[str]) -> None:
    settings.client.url = own_server.url
    decisions = []
    for _ in range(5):
        outcome = run({"symbols": "SP500", "lookback": 400, "end_date": END}, settings)
        assert outcome.decision is not None
        decisions.append(outcome.decision)
    first = decisions[0]
    # identical but for the bandit's decision ids (each run's choice is its own decision, rewarded once)
    assert all(_without_ids(d.model_dump(mode="json")) == _without_ids(first.model_dump(mode="json"))
               for d in decisions), _diff(_without_ids(decisions[0].model_dump(mode="json")),
                                          [_without_ids(d.model_dump(mode="json")) for d in decisions])
    assert not first.degraded, first.degraded_inputs  # gated inputs are allowed: each is named, by design
    [symbol] = first.decisions
    assert symbol.followed in {"conservative", "aggressive", "balanced", "contrarian"}
    assert "mean reward" in symbol.why  # the bandit's evidence, in plain words
    assert refused == []


def _without_ids(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "decision_id"}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def _diff(a: object, others: list[object], path: str = "") -> list[str]:
    out: list[str] = []
    for b in others:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in a:
                out += _diff(a[k], [b.get(k)], f"{path}.{k}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                out += _diff(x, [y], f"{path}[{i}]")
        elif a != b:
            out.append(f"{path}: {a!r} != {b!r}")
    return out
