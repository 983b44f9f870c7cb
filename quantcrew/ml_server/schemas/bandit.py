"""Wire contract of the bandit family: one multi-armed bandit per market regime.

A bandit chooses among arms (by default the four specialised agents) separately in each
regime: ``select`` returns a decision (the arm, why, and every arm's estimate), ``reward``
reports what that decision earned. State lives in the server's registry database and survives
a restart. ``simulate`` runs a policy against arms of known means and reports its regret.

Rewards are real numbers in the caller's units; ``params.reward_range`` says which span maps
onto [0, 1] (UCB, EXP3 and the Beta samplers clip to it; Gaussian Thompson only rescales).

A select in mode ``explore`` draws, as a learning bandit does; in mode ``exploit`` it draws
nothing and follows the arm with the highest mean reward, so a live decision is the same for the
same stored state. ``replay`` warm-starts a bandit (a job): stored RL policies are replayed over
bars none of them was trained on, each bar selected in mode explore and rewarded with the chosen
agent's realised return after costs.
Pydantic only: the agent-side client imports this module.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from quantcrew.ml_server.schemas.common import FiniteFloat, OHLCVPayload, Provenance, WireModel
from quantcrew.ml_server.schemas.regime import REGIME_LABELS

__all__ = [
    "BANDIT_POLICIES",
    "DEFAULT_ARMS",
    "DEFAULT_BANDIT",
    "DEFAULT_REWARD_RANGE",
    "ArmEstimate",
    "BanditCreateRequest",
    "BanditSpec",
    "BanditDecision",
    "BanditDeleted",
    "BanditInfo",
    "BanditList",
    "BanditMode",
    "BanditParams",
    "BanditResetRequest",
    "BanditPhase",
    "BanditPolicyName",
    "BanditRegimeState",
    "BanditReplayCreate",
    "BanditReplayRegime",
    "BanditReplayRequest",
    "BanditReplayResult",
    "BanditRewardRequest",
    "BanditRewardResponse",
    "BanditSelectRequest",
    "BanditSimulateRequest",
    "BanditSimulateResponse",
    "BanditState",
]

BanditPolicyName = Literal["ucb1", "thompson_beta", "thompson_gaussian", "exp3", "discounted_thompson",
                           "sliding_window_ucb"]
BANDIT_POLICIES: tuple[BanditPolicyName, ...] = (
    "ucb1", "thompson_beta", "thompson_gaussian", "exp3", "discounted_thompson", "sliding_window_ucb")

DEFAULT_ARMS: tuple[str, ...] = ("conservative", "aggressive", "balanced", "contrarian")
"""The specialised RL agents a meta-orchestrator chooses among."""

DEFAULT_BANDIT = "meta-orchestrator"
"""Name of the bandit the crew consults (the agent-selection tool's default)."""

DEFAULT_REWARD_RANGE: tuple[float, float] = (-0.05, 0.05)
"""Reward span of a bandit rewarded with daily returns: -5% .. +5% maps onto [0, 1]."""

BanditMode = Literal["explore", "exploit"]

_NAME = r"^[A-Za-z0-9_.:-]+$"
Label = Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME)]


def _unique(values: list[str], what: str) -> list[str]:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} must be unique; '{v}' appears twice")
        seen.add(v)
    return values


class BanditParams(WireModel):
    """Policy parameters; each policy reads the ones it needs and ignores the rest."""

    c: float = Field(default=1.0, ge=0.0, le=100.0,
                     description="Exploration multiplier of the UCB bonus (ucb1, sliding_window_ucb).")
    ucb_bonus: Literal["tuned", "hoeffding"] = Field(
        default="tuned",
        description="UCB bonus: 'tuned' = UCB1-Tuned, sqrt(ln t / n * min(1/4, var + sqrt(2 ln t / n))), "
                    "variance-aware; 'hoeffding' = the textbook sqrt(2 ln t / n) (c=1 is MABWiser's UCB1(alpha=1)).")
    gamma: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="EXP3 exploration rate; null picks min(1, sqrt(K ln K / ((e - 1) horizon))).")
    horizon: int = Field(default=10_000, ge=1, le=1_000_000_000,
                         description="Rounds EXP3's default gamma is tuned for.")
    discount: float = Field(
        default=0.998, gt=0.0, le=1.0,
        description="discounted_thompson: every arm's Beta counts are multiplied by this each round "
                    "(memory about 1 / (1 - discount) rewards; 1 never forgets).")
    window: int = Field(default=500, ge=1, le=10_000,
                        description="sliding_window_ucb: the number of most recent rewards it learns from.")
    reward_range: tuple[FiniteFloat, FiniteFloat] = Field(
        default=(0.0, 1.0),
        description="(lo, hi): the span of the rewards you send, mapped onto [0, 1]. Set it to your reward's "
                    "units (e.g. [-0.05, 0.05] for daily returns): UCB, EXP3 and the Beta samplers clip "
                    "rewards outside it, Gaussian Thompson only rescales.")
    prior_alpha: float = Field(default=1.0, gt=0.0, le=1e6,
                               description="Beta prior successes (thompson_beta, discounted_thompson).")
    prior_beta: float = Field(default=1.0, gt=0.0, le=1e6,
                              description="Beta prior failures (thompson_beta, discounted_thompson).")

    @field_validator("reward_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError(f"reward_range needs lo < hi, got [{value[0]}, {value[1]}]")
        return value


class BanditSpec(WireModel):
    """What a bandit is made of: one policy instance per regime, over the same arms."""

    policy: BanditPolicyName = Field(default="thompson_beta", description="The bandit policy of every regime.")
    arms: list[Label] = Field(
        default_factory=lambda: list(DEFAULT_ARMS), min_length=2, max_length=32,
        description="Names of the arms (2-32, unique): by default the four specialised agents.")
    regimes: list[Label] = Field(
        default_factory=lambda: [str(r) for r in REGIME_LABELS], min_length=1, max_length=32,
        description="Regimes with a bandit of their own (unique); by default the regime family's labels.")
    params: BanditParams = Field(default_factory=BanditParams, description="Policy parameters.")
    seed: int = Field(default=0, ge=0, le=2**63 - 1,
                      description="Seeds each regime's random stream (regime k uses [seed, k]).")

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, value: list[str]) -> list[str]:
        return _unique(value, "arms")

    @field_validator("regimes")
    @classmethod
    def _unique_regimes(cls, value: list[str]) -> list[str]:
        return _unique(value, "regimes")


class BanditCreateRequest(BanditSpec):
    """Create a bandit: one policy instance per regime, over the same arms."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Unique name; a bandit is addressed by its id or this name.")


class BanditInfo(WireModel):
    """A bandit as created, with how much it has been used."""

    bandit_id: str = Field(description="Id ('bandit-' + 16 hex digits).")
    name: str = Field(description="Unique name.")
    policy: BanditPolicyName = Field(description="Policy of every regime.")
    arms: list[str] = Field(description="Arm names, in arm-index order.")
    regimes: list[str] = Field(description="Regimes with a bandit of their own.")
    params: BanditParams = Field(description="Policy parameters, defaults filled in.")
    seed: int = Field(description="Seed of the random streams.")
    created_at: datetime = Field(description="When it was created (UTC).")
    decisions: int = Field(description="Decisions made, all regimes.")
    pulls: int = Field(description="Rewards received, all regimes.")


class BanditList(WireModel):
    """Every bandit, oldest first."""

    bandits: list[BanditInfo] = Field(description="The bandits.")


class BanditSelectRequest(WireModel):
    """Choose an arm for the current regime."""

    bandit: str = Field(min_length=1, max_length=64, description="Bandit id or name.")
    regime: str = Field(min_length=1, max_length=64, description="Current regime: one of the bandit's regimes.")
    mode: BanditMode = Field(
        default="explore",
        description="'explore': the policy draws (Thompson sample, UCB index, EXP3 draw), as a learning bandit "
                    "does. 'exploit': no draw and no change of the policy's state: the arm with the highest mean "
                    "reward in the regime (ties: more rewards, then arm order), the same arm for the same stored "
                    "state. Either way the decision is recorded and can be rewarded.")


class ArmEstimate(WireModel):
    """How one arm looks to the policy, in reward units (null: no reward for it yet)."""

    arm: str = Field(description="Arm name.")
    arm_index: int = Field(description="Arm position in the bandit's arm list.")
    estimate: float | None = Field(
        description="Estimated mean reward (UCB, EXP3: mean of the rewards it counts; Thompson: posterior mean).")
    uncertainty: float | None = Field(
        description="UCB: the exploration bonus; Thompson: posterior sd (Gaussian: the Student-t scale); "
                    "EXP3: sqrt(p (1 - p)) of its choice probability p.")
    pulls: float = Field(description="Rewards the policy counts now (discounted / in-window for the "
                                     "non-stationary policies).")
    raw_pulls: int = Field(description="Rewards ever received.")
    score: float | None = Field(
        description="What the choice compared: UCB index or Thompson sample at the latest choice (UCB: null while "
                    "the arm has no reward, i.e. an unbounded index); EXP3: its current choice probability.")
    mean_reward: float | None = Field(description="Mean of every reward received (unclipped).")


class BanditDecision(Provenance):
    """The arm chosen, why, and every arm's estimate.

    Provenance: ``model_id`` is the bandit id, ``method_used`` the policy, ``data_hash`` the
    SHA-256 of the saved regime state (policy and random generator) the choice started from,
    ``as_of`` the time of the regime's latest reward.
    """

    decision_id: str = Field(description="Id to report the reward with ('dec-' + 16 hex digits).")
    bandit_id: str = Field(description="Bandit id.")
    bandit_name: str = Field(description="Bandit name.")
    regime: str = Field(description="Regime whose bandit chose.")
    arm: str = Field(description="The chosen arm.")
    arm_index: int = Field(description="Its position in the arm list.")
    policy: BanditPolicyName = Field(description="The policy that chose.")
    propensity: float | None = Field(
        description="Probability the arm was chosen with (EXP3 only; it weights the reward).")
    explanation: list[ArmEstimate] = Field(description="Every arm as the policy saw it when choosing.")
    reason: str = Field(description="One sentence saying why this arm, with the evidence.")
    mode: BanditMode = Field(default="explore", description="How the arm was chosen: a draw, or the best mean.")
    pseudo_regret: float = Field(
        description="ESTIMATED regret of the regime so far: sum of pulls_a * (best mean - mean_a) over the "
                    "empirical mean rewards (the true best arm is unknown).")
    pulls: int = Field(description="Rewards received in this regime.")


class BanditRewardRequest(WireModel):
    """Report what a decision earned."""

    decision_id: str = Field(min_length=1, max_length=64, description="Id from /v1/bandit/select.")
    reward: FiniteFloat = Field(
        description="The reward, in the units of the bandit's reward_range: a finite number within the server's "
                    "bound (+-1e6 unless QUANTCREW_SERVER__MAX_ABS_REWARD says otherwise); beyond it, a 422.")


class BanditRewardResponse(Provenance):
    """The reward recorded and the regime's bandit after learning from it.

    Provenance as in :class:`BanditDecision`; ``data_hash`` is of the state before the update.
    """

    decision_id: str = Field(description="The rewarded decision.")
    bandit_id: str = Field(description="Bandit id.")
    regime: str = Field(description="Regime of the decision.")
    arm: str = Field(description="Arm the decision chose.")
    arm_index: int = Field(description="Its position in the arm list.")
    reward: float = Field(description="Reward as received.")
    clipped: bool = Field(description="True when the reward lay outside reward_range and was clipped to it.")
    explanation: list[ArmEstimate] = Field(description="Every arm after the update.")
    pseudo_regret: float = Field(description="Estimated regret of the regime (see BanditDecision).")
    pulls: int = Field(description="Rewards received in this regime.")


class BanditRegimeState(WireModel):
    """One regime's bandit."""

    regime: str = Field(description="The regime.")
    decisions: int = Field(description="Decisions made.")
    pulls: int = Field(description="Rewards received.")
    pending: int = Field(description="Decisions not rewarded yet.")
    clipped: int = Field(description="Rewards clipped to reward_range.")
    best_arm: str | None = Field(description="Arm with the highest estimate; null before any reward.")
    pseudo_regret: float = Field(description="Estimated regret (see BanditDecision).")
    explanation: list[ArmEstimate] = Field(description="Every arm's estimate.")
    updated_at: datetime | None = Field(description="Last decision or reward (UTC); null if never used.")


class BanditState(Provenance):
    """A bandit and every regime's state. ``data_hash`` covers every regime's saved state."""

    bandit: BanditInfo = Field(description="The bandit.")
    regimes: list[BanditRegimeState] = Field(description="One entry per regime, in the bandit's order.")
    pseudo_regret: float = Field(description="Estimated regret summed over regimes.")
    pulls: int = Field(description="Rewards received, all regimes.")


class BanditResetRequest(WireModel):
    """Forget what a bandit learned; its arms, regimes, policy and params stay."""

    regime: str | None = Field(default=None, min_length=1, max_length=64,
                               description="The one regime to reset; null (or no body) resets every regime.")


class BanditDeleted(WireModel):
    """What ``DELETE /v1/bandit/{bandit}`` removed."""

    bandit_id: str = Field(description="Id of the deleted bandit.")
    name: str = Field(description="Its name (free to use again).")
    regimes: list[str] = Field(description="Regimes whose saved state was deleted (those ever used).")
    decisions: int = Field(description="Decisions deleted, rewarded or not.")


class BanditPhase(WireModel):
    """A stretch of rounds with fixed arm means."""

    start: int = Field(ge=0, description="First round of the phase (0-based).")
    means: list[FiniteFloat] = Field(min_length=1, max_length=32, description="Mean reward of each arm.")


class BanditSimulateRequest(WireModel):
    """Run a policy against arms of known means and measure its regret (nothing is kept)."""

    policy: BanditPolicyName = Field(default="thompson_beta", description="Policy to simulate.")
    params: BanditParams = Field(default_factory=BanditParams, description="Policy parameters.")
    rounds: int = Field(default=10_000, ge=1, le=100_000, description="Rounds to play.")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="Seeds the reward noise and the policy.")
    distribution: Literal["bernoulli", "gaussian"] = Field(
        default="bernoulli",
        description="'bernoulli': reward 1 with probability mean (means in [0, 1]); "
                    "'gaussian': mean + noise_sd * N(0, 1).")
    noise_sd: float = Field(default=0.1, ge=0.0, le=1e6, description="Noise sd of Gaussian rewards.")
    checkpoints: int = Field(default=10, ge=1, le=1000,
                             description="Evenly spaced rounds at which cumulative regret is reported.")
    means: list[FiniteFloat] | None = Field(
        default=None, min_length=1, max_length=32,
        description="Fixed mean of each arm; give this or schedule.")
    schedule: list[BanditPhase] | None = Field(
        default=None, min_length=1, max_length=100,
        description="Piecewise-constant means: phases with increasing starts, the first at round 0, "
                    "each below rounds and with one mean per arm.")

    # Declared after distribution and rounds, so these validators see them (and errors carry the field's loc).
    @field_validator("means")
    @classmethod
    def _means_in_range(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if value is not None and info.data.get("distribution") == "bernoulli" and any(
                not 0.0 <= m <= 1.0 for m in value):
            raise ValueError(f"Bernoulli means must lie in [0, 1], got {value}")
        return value

    @field_validator("schedule")
    @classmethod
    def _phases_in_order(cls, value: list[BanditPhase] | None, info: ValidationInfo) -> list[BanditPhase] | None:
        rounds = info.data.get("rounds")
        phases = value or []
        for i, phase in enumerate(phases):
            where = f"schedule[{i}]"
            if len(phase.means) != len(phases[0].means):
                raise ValueError(f"{where}.means has {len(phase.means)} arms; schedule[0] has {len(phases[0].means)}")
            if i == 0 and phase.start != 0:
                raise ValueError(f"{where}.start must be 0 (the first phase starts the run), got {phase.start}")
            if i and phase.start <= phases[i - 1].start:
                raise ValueError(f"{where}.start ({phase.start}) must be after schedule[{i - 1}].start")
            if rounds is not None and phase.start >= rounds:
                raise ValueError(f"{where}.start ({phase.start}) must be below rounds ({rounds})")
            if info.data.get("distribution") == "bernoulli" and any(not 0.0 <= m <= 1.0 for m in phase.means):
                raise ValueError(f"{where}.means: Bernoulli means must lie in [0, 1], got {phase.means}")
        return value

    @model_validator(mode="after")
    def _means_or_schedule(self) -> BanditSimulateRequest:
        if (self.means is None) == (self.schedule is None):
            raise ValueError("give exactly one of means or schedule")
        return self


class BanditSimulateResponse(Provenance):
    """Regret of a simulated run. ``data_hash`` is the SHA-256 of the request."""

    policy: BanditPolicyName = Field(description="The policy simulated.")
    rounds: int = Field(description="Rounds played.")
    n_arms: int = Field(description="Number of arms.")
    checkpoints: list[int] = Field(description="Rounds (1-based counts) at which regret is reported.")
    cumulative_regret: list[float] = Field(
        description="Cumulative pseudo-regret at each checkpoint: sum over rounds of the best mean of the "
                    "round's phase minus the played arm's mean (a dynamic oracle when means change).")
    final_regret: float = Field(description="Cumulative regret after the last round.")
    pulls: list[int] = Field(description="Times each arm was played.")
    best_arms: list[int] = Field(description="Best arm (index) of each phase.")
    change_points: list[int] = Field(description="First round of each phase.")
    mean_reward: float = Field(description="Average reward drawn.")


# -- warm-start replay -----------------------------------------------------------------------------


def _default_replay_params() -> BanditParams:
    return BanditParams(reward_range=DEFAULT_REWARD_RANGE)


class BanditReplayCreate(BanditSpec):
    """The bandit a replay creates when none has its name (defaults: those of the agent-selection tool)."""

    policy: BanditPolicyName = Field(default="discounted_thompson", description="The policy of every regime.")
    params: BanditParams = Field(default_factory=_default_replay_params,
                                 description="Policy parameters; by default rewards of -5% .. +5% map onto [0, 1].")


class BanditReplayRequest(WireModel):
    """Warm-start a bandit by replaying stored RL policies over bars none of them was trained on (a job).

    For each bar t of the span: the regime is the policies' filtered regime label at t, the
    bandit selects in mode explore, and the decision is rewarded with the chosen agent's
    realised return of the next bar after costs (its position at t times the bar's return,
    minus costs on its position change). A span is replayed once: the same bandit, symbol,
    policies and span again is a 409 carrying the earlier result.
    """

    bandit: str = Field(default=DEFAULT_BANDIT, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                        description="Bandit id or name; created from `create` when no bandit has it.")
    symbol: str = Field(min_length=1, max_length=64, description="The instrument the bars are of.")
    data: OHLCVPayload = Field(
        description="Daily bars, oldest first: at least the 60 bars before the span (the features' window) and "
                    "the span itself.")
    model_ids: list[str] = Field(
        min_length=2, max_length=32,
        description="Stored rl policies, one per arm of the bandit: a policy's agent (metadata 'agent') names its "
                    "arm.")
    start: datetime | None = Field(
        default=None,
        description="First bar replayed; default the first bar after the latest training end among the policies, "
                    "so no policy was trained on a replayed bar (an earlier start is refused).")
    end: datetime | None = Field(
        default=None,
        description="Last bar whose close enters a reward (e.g. the as-of date); default the last bar sent. The "
                    "last bar replayed is the one before it.")
    cost_bps: float = Field(default=1.0, ge=0.0, le=500.0,
                            description="Commission per unit of turnover, in basis points of notional.")
    slippage_bps: float = Field(default=1.0, ge=0.0, le=500.0,
                                description="Slippage per unit of turnover, in basis points; added to cost_bps.")
    create: BanditReplayCreate = Field(default_factory=BanditReplayCreate,
                                       description="How to create the bandit when none has the name.")

    @field_validator("model_ids")
    @classmethod
    def _unique_models(cls, value: list[str]) -> list[str]:
        return _unique(value, "model_ids")


class BanditReplayRegime(WireModel):
    """One regime after a replay."""

    regime: str = Field(description="The regime.")
    bars: int = Field(description="Bars of the span in this regime.")
    pulls: dict[str, int] = Field(description="This replay's decisions per arm in this regime.")
    agent_rewards: dict[str, float] = Field(description="Each agent's summed reward over this regime's bars.")
    exploit_arm: str = Field(description="The arm a select in mode exploit chooses now in this regime.")
    exploit_mean_reward: float | None = Field(description="Its mean reward (every reward it ever received here).")
    exploit_rewards: int = Field(description="The rewards that mean is over.")
    reason: str = Field(description="Why, in plain words, with the evidence.")


class BanditReplayResult(WireModel):
    """What a replay did: the bandit's rewards against every agent's, and the choice per regime now."""

    replay_key: str = Field(description="sha256 of (bandit id, symbol, sorted model ids, span start, span end).")
    bandit_id: str = Field(description="The bandit replayed into.")
    bandit_name: str = Field(description="Its name.")
    created: bool = Field(description="True when the replay created the bandit.")
    policy: BanditPolicyName = Field(description="The bandit's policy.")
    symbol: str = Field(description="The instrument.")
    agents: dict[str, str] = Field(description="Arm -> the rl policy (model id) replayed for it.")
    span_start: str = Field(description="First bar replayed.")
    span_end: str = Field(description="Last bar replayed (its reward is the next bar's return).")
    bars: int = Field(description="Bars replayed: decisions made and rewarded, one each.")
    regime_model_id: str | None = Field(description="The regime model whose filtered labels chose the regime; null "
                                                    "when the policies have none.")
    regime_source: str = Field(description="Where each bar's regime came from, in words.")
    cost_bps: float = Field(description="Commission per unit of turnover, in basis points.")
    slippage_bps: float = Field(description="Slippage per unit of turnover, in basis points.")
    agent_rewards: dict[str, float] = Field(
        description="Each agent's summed reward over the span (its net return bar by bar, had it been followed "
                    "throughout).")
    bandit_reward: float = Field(description="Summed reward of the bandit's choices.")
    best_agent: str = Field(description="The agent with the highest summed reward in hindsight.")
    best_agent_reward: float = Field(description="Its summed reward.")
    regret: float = Field(description="best_agent_reward - bandit_reward.")
    regret_per_bar: float = Field(description="regret / bars.")
    pulls: dict[str, int] = Field(description="This replay's decisions per arm.")
    regimes: list[BanditReplayRegime] = Field(description="Every regime of the bandit, in its order.")
    summary: str = Field(description="The replay in one or two sentences.")
