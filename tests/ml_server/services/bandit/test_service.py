"""Bandit verbs: creation, decisions and rewards with their explanations, restart persistence, rng continuation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcrew.ml_server.errors import ConflictError, InvalidInputError, NotFoundError
from quantcrew.ml_server.schemas.bandit import BanditDecision, BanditSimulateRequest
from quantcrew.ml_server.services.bandit import service
from quantcrew.ml_server.services.bandit.store import BanditStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BanditStore]:
    s = BanditStore(tmp_path / "registry.db")
    yield s
    s.close()


def _reward_of(decision: BanditDecision) -> float:
    """A deterministic environment: 'balanced' pays best, rewards vary with the decision count."""
    base = {"conservative": 0.3, "aggressive": 0.4, "balanced": 0.7, "contrarian": 0.2}[decision.arm]
    return base + 0.1 * (decision.pulls % 3 - 1)


def _run(store: BanditStore, name: str, regime: str, steps: int) -> list[tuple[str, list[float | None]]]:
    out = []
    for _ in range(steps):
        d = service.select(store, name, regime)
        out.append((d.arm, [a.score for a in d.explanation]))
        service.reward(store, d.decision_id, _reward_of(d))
    return out


def test_create_get_and_list(store: BanditStore) -> None:
    info = service.create(store, name="meta", policy="ucb1", params={"c": 0.5}, seed=3)
    assert info.bandit_id.startswith("bandit-") and info.name == "meta" and info.policy == "ucb1"
    assert info.arms == ["conservative", "aggressive", "balanced", "contrarian"]
    assert info.regimes == ["bull", "bear", "sideways", "volatile"]
    assert info.params.c == 0.5 and info.params.window == 500 and info.seed == 3
    assert store.find("meta") == store.find(info.bandit_id)
    service.create(store, name="other", arms=["a", "b"], regimes=["calm"])
    assert [b.name for b in service.list_bandits(store).bandits] == ["meta", "other"]


def test_create_taken_name_is_conflict(store: BanditStore) -> None:
    service.create(store, name="meta")
    with pytest.raises(ConflictError, match="exists already"):
        service.create(store, name="meta", policy="exp3")


def test_create_unknown_policy_lists_valid_ones(store: BanditStore) -> None:
    with pytest.raises(InvalidInputError, match="sliding_window_ucb") as info:
        service.create(store, name="meta", policy="softmax")
    assert info.value.details[0]["loc"] == ["policy"]


def test_create_bad_param_names_it(store: BanditStore) -> None:
    with pytest.raises(InvalidInputError, match="discount") as info:
        service.create(store, name="meta", policy="discounted_thompson", params={"discount": 2.0})
    assert info.value.details[0]["loc"] == ["params", "discount"]


@pytest.mark.parametrize(("arms", "regimes", "match"), [
    (["only"], ["bull"], "arms must hold 2"),
    (["a", "a"], ["bull"], "unique"),
    (["a", "b"], [], "regimes must hold 1"),
    (["a", " "], ["bull"], "empty"),
])
def test_create_bad_arms_or_regimes(store: BanditStore, arms: list[str], regimes: list[str], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        service.create(store, name="meta", arms=arms, regimes=regimes)


def test_unknown_bandit_is_not_found(store: BanditStore) -> None:
    with pytest.raises(NotFoundError, match="no bandit"):
        service.select(store, "ghost", "bull")
    with pytest.raises(NotFoundError):
        service.state(store, "ghost")


def test_unknown_regime_lists_bandit_regimes(store: BanditStore) -> None:
    service.create(store, name="meta", regimes=["calm", "storm"])
    with pytest.raises(InvalidInputError, match=r"\['calm', 'storm'\]") as info:
        service.select(store, "meta", "bull")
    assert info.value.details[0]["loc"] == ["regime"]


def test_select_returns_explained_decision(store: BanditStore) -> None:
    info = service.create(store, name="meta", policy="ucb1")
    d = service.select(store, "meta", "bull")
    assert d.bandit_id == info.bandit_id and d.model_id == info.bandit_id and d.method_used == "ucb1"
    assert d.decision_id.startswith("dec-") and d.regime == "bull" and d.arm == d.explanation[d.arm_index].arm
    assert "no reward" in d.reason and d.pseudo_regret == 0.0 and d.pulls == 0 and d.as_of is None
    assert d.data_hash.startswith("sha256:") and d.seed == 0


def test_reward_updates_the_regime_and_reason_names_the_bound(store: BanditStore) -> None:
    service.create(store, name="meta", policy="ucb1")
    _run(store, "meta", "bull", 40)
    d = service.select(store, "meta", "bull")
    assert d.pulls == 40 and d.pseudo_regret > 0.0
    assert d.reason.startswith(f"{d.arm} has the highest upper confidence bound")
    assert "after" in d.reason and "pulls" in d.reason
    state = service.state(store, "meta")
    bull = state.regimes[0]
    assert bull.regime == "bull" and bull.pulls == 40 and bull.decisions == 41 and bull.pending == 1
    assert bull.best_arm == "balanced"
    assert all(r.pulls == 0 and r.decisions == 0 and r.updated_at is None for r in state.regimes[1:])
    assert state.pulls == 40 and state.pseudo_regret == pytest.approx(bull.pseudo_regret)


def test_unknown_decision_is_not_found(store: BanditStore) -> None:
    service.create(store, name="meta")
    with pytest.raises(NotFoundError, match="no decision"):
        service.reward(store, "dec-0000", 1.0)


def test_double_reward_is_conflict_and_changes_nothing(store: BanditStore) -> None:
    service.create(store, name="meta")
    d = service.select(store, "meta", "bear")
    first = service.reward(store, d.decision_id, 1.0)
    with pytest.raises(ConflictError, match="already rewarded"):
        service.reward(store, d.decision_id, 0.0)
    assert service.state(store, "meta").regimes[1].pulls == 1
    assert first.pulls == 1 and first.arm == d.arm and first.regime == "bear" and not first.clipped


def test_reward_outside_range_is_reported_clipped(store: BanditStore) -> None:
    service.create(store, name="meta", policy="ucb1", params={"reward_range": [-0.05, 0.05]})
    d = service.select(store, "meta", "bull")
    reply = service.reward(store, d.decision_id, 0.2)
    assert reply.clipped and reply.explanation[d.arm_index].estimate == pytest.approx(0.05)
    assert service.state(store, "meta").regimes[0].clipped == 1


def test_exp3_decision_records_propensity(store: BanditStore) -> None:
    service.create(store, name="meta", policy="exp3", params={"gamma": 0.2})
    d = service.select(store, "meta", "bull")
    assert d.propensity == pytest.approx(0.25)
    assert sum(a.score or 0.0 for a in d.explanation) == pytest.approx(1.0)
    assert d.reason.startswith(f"EXP3 drew {d.arm} with probability 0.25")


def test_regimes_learn_independently(store: BanditStore) -> None:
    service.create(store, name="meta", policy="thompson_beta")
    _run(store, "meta", "bull", 10)
    state = service.state(store, "meta")
    assert [r.pulls for r in state.regimes] == [10, 0, 0, 0]


@pytest.mark.parametrize("policy", ["thompson_beta", "sliding_window_ucb", "exp3", "thompson_gaussian"])
def test_restart_continues_identically(tmp_path: Path, policy: str) -> None:
    params = {"window": 8, "reward_range": [0.0, 1.0]}
    straight = BanditStore(tmp_path / "a.db")
    service.create(straight, name="meta", policy=policy, params=params, seed=5)
    expected = _run(straight, "meta", "bull", 30)
    expected_state = service.state(straight, "meta")
    straight.close()

    first = BanditStore(tmp_path / "b.db")
    service.create(first, name="meta", policy=policy, params=params, seed=5)
    got = _run(first, "meta", "bull", 12)
    before = service.state(first, "meta")
    first.close()
    second = BanditStore(tmp_path / "b.db")  # a restarted server
    after = service.state(second, "meta")
    assert after.regimes == before.regimes and after.data_hash == before.data_hash
    got += _run(second, "meta", "bull", 18)
    final = service.state(second, "meta")
    second.close()
    assert got == expected  # same arms and same scores: the random stream went on where it stopped
    assert [r.explanation for r in final.regimes] == [r.explanation for r in expected_state.regimes]


def test_pending_decision_is_rewarded_after_restart(tmp_path: Path) -> None:
    store = BanditStore(tmp_path / "r.db")
    service.create(store, name="meta")
    d = service.select(store, "meta", "volatile")
    store.close()
    store = BanditStore(tmp_path / "r.db")
    reply = service.reward(store, d.decision_id, 1.0)
    assert reply.pulls == 1 and reply.arm == d.arm
    store.close()


def test_second_store_on_same_file_sees_writes(tmp_path: Path) -> None:
    """Two processes sharing the database: each reloads a regime the other changed."""
    a, b = BanditStore(tmp_path / "r.db"), BanditStore(tmp_path / "r.db")
    service.create(a, name="meta", policy="ucb1")
    _run(a, "meta", "bull", 3)
    d = service.select(b, "meta", "bull")
    assert d.pulls == 3
    service.reward(b, d.decision_id, 0.5)
    assert service.select(a, "meta", "bull").pulls == 4
    a.close()
    b.close()


def test_unknown_bandit_location_names_the_body_field_or_the_path(store: BanditStore) -> None:
    with pytest.raises(NotFoundError) as selected:
        service.select(store, "ghost", "bull")
    assert selected.value.details[0]["loc"] == ["bandit"]
    with pytest.raises(NotFoundError) as stated:
        service.state(store, "ghost")
    assert stated.value.details[0]["loc"] == ["path", "bandit"]


def test_non_finite_reward_is_invalid_input(store: BanditStore) -> None:
    service.create(store, name="meta")
    d = service.select(store, "meta", "bull")
    with pytest.raises(InvalidInputError, match="finite") as info:
        service.reward(store, d.decision_id, float("nan"))
    assert info.value.details[0]["loc"] == ["reward"]


def test_simulate_bad_param_is_invalid_input_naming_it() -> None:
    req = BanditSimulateRequest(policy="discounted_thompson", means=[0.5, 0.4], rounds=100)
    bad = req.model_copy(update={"params": req.params.model_copy(update={"discount": 2.0})})
    with pytest.raises(InvalidInputError, match="discount") as info:
        service.simulate(bad)
    assert info.value.details[0]["loc"] == ["params", "discount"]


def test_simulate_bad_schedule_is_invalid_input_without_a_field() -> None:
    req = BanditSimulateRequest(policy="ucb1", means=[0.5, 0.4], rounds=100)
    with pytest.raises(InvalidInputError, match="Bernoulli") as info:
        service.simulate(req.model_copy(update={"means": [0.5, 1.5]}))
    assert info.value.details[0]["loc"] == []


def test_simulate_reports_regret_at_checkpoints() -> None:
    reply = service.simulate(BanditSimulateRequest(policy="ucb1", means=[0.6, 0.4], rounds=400, checkpoints=4))
    assert reply.checkpoints == [100, 200, 300, 400] and reply.final_regret == reply.cumulative_regret[-1]
    assert sum(reply.pulls) == 400 and reply.best_arms == [0]


# -- deterministic selection (mode exploit) --------------------------------------------------------


def _explore_then(store: BanditStore, steps: int, exploit_every: int | None) -> list[str]:
    """Explore ``steps`` times with rewards; every ``exploit_every`` steps also make an exploit decision."""
    arms = []
    for i in range(steps):
        if exploit_every and i % exploit_every == 0:
            service.select(store, "meta", "bull", mode="exploit")
        d = service.select(store, "meta", "bull", mode="explore")
        arms.append(d.arm)
        service.reward(store, d.decision_id, _reward_of(d))
    return arms


@pytest.mark.parametrize("policy", ["discounted_thompson", "thompson_beta", "ucb1", "exp3", "thompson_gaussian"])
def test_exploit_gives_the_same_arm_five_times_and_leaves_the_state_hash(store: BanditStore, policy: str) -> None:
    service.create(store, name="meta", policy=policy)
    _run(store, "meta", "bull", 40)
    before = service.state(store, "meta")
    decisions = [service.select(store, "meta", "bull", mode="exploit") for _ in range(5)]
    after = service.state(store, "meta")
    assert len({d.arm for d in decisions}) == 1 and all(d.mode == "exploit" for d in decisions)
    assert len({d.decision_id for d in decisions}) == 5  # each recorded, so each can be rewarded
    assert after.data_hash == before.data_hash and len({d.data_hash for d in decisions}) == 1
    assert [r.explanation for r in after.regimes] == [r.explanation for r in before.regimes]
    assert after.regimes[0].decisions == before.regimes[0].decisions + 5 and after.regimes[0].pending == 5
    rewarded = [a for a in before.regimes[0].explanation if a.mean_reward is not None]
    best = max(rewarded, key=lambda a: a.mean_reward or 0.0)
    chosen = decisions[0]
    assert chosen.arm == best.arm
    assert chosen.reason.startswith(f"{best.arm} has the highest mean reward in the bull regime: "
                                    f"{best.mean_reward:+.4g} per decision over {best.raw_pulls} reward")


def test_exploit_decisions_do_not_move_the_explore_stream(tmp_path: Path) -> None:
    plain, mixed = BanditStore(tmp_path / "a.db"), BanditStore(tmp_path / "b.db")
    for s in (plain, mixed):
        service.create(s, name="meta", policy="discounted_thompson", seed=4)
    assert _explore_then(plain, 30, None) == _explore_then(mixed, 30, 3)
    assert service.state(plain, "meta").data_hash == service.state(mixed, "meta").data_hash
    plain.close()
    mixed.close()


def test_explore_is_the_default_mode_and_draws_as_before(tmp_path: Path) -> None:
    default, explicit = BanditStore(tmp_path / "a.db"), BanditStore(tmp_path / "b.db")
    for s in (default, explicit):
        service.create(s, name="meta", policy="thompson_beta", seed=2)
    got = _run(default, "meta", "bull", 15)
    want = []
    for _ in range(15):
        d = service.select(explicit, "meta", "bull", mode="explore")
        assert d.mode == "explore" and d.reason.startswith(f"{d.arm} drew the highest posterior sample")
        want.append((d.arm, [a.score for a in d.explanation]))
        service.reward(explicit, d.decision_id, _reward_of(d))
    assert got == want
    default.close()
    explicit.close()


def test_exploit_without_rewards_takes_the_first_arm_and_says_to_warm_start(store: BanditStore) -> None:
    service.create(store, name="meta")
    d = service.select(store, "meta", "sideways", mode="exploit")
    assert d.arm == "conservative" and d.arm_index == 0
    assert d.reason == ("no rewards yet in regime sideways: the first arm in order, conservative, by convention; "
                        "run `quantcrew setup` to warm-start the bandit")


def test_exploit_in_a_regime_never_rewarded_says_the_bandit_learned_elsewhere(store: BanditStore) -> None:
    service.create(store, name="meta", policy="ucb1")
    _run(store, "meta", "bull", 3)
    d = service.select(store, "meta", "bear", mode="exploit")
    assert d.arm == "conservative" and "has rewards in other regimes only" in d.reason and "setup" not in d.reason


def test_exploit_decision_is_rewarded_like_any_other(store: BanditStore) -> None:
    service.create(store, name="meta", policy="ucb1")
    d = service.select(store, "meta", "bear", mode="exploit")
    reply = service.reward(store, d.decision_id, 0.6)
    assert reply.arm == d.arm == "conservative" and reply.pulls == 1
    again = service.select(store, "meta", "bear", mode="exploit")
    assert again.arm == "conservative"
    assert again.reason == ("conservative has the highest mean reward in the bear regime: +0.6 per decision over "
                            "1 reward (no other arm has a reward yet in this regime)")


def test_exploit_on_exp3_records_the_current_choice_probability(store: BanditStore) -> None:
    service.create(store, name="meta", policy="exp3", params={"gamma": 0.2})
    d = service.select(store, "meta", "bull", mode="exploit")
    assert d.propensity == pytest.approx(0.25)
    assert service.reward(store, d.decision_id, 1.0).pulls == 1
