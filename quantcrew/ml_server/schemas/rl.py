"""Wire contract of the rl family: specialized trading policies (stable-baselines3) on one market.

Four agents share one trading environment and differ only by the reward they were trained on:

- ``conservative``: returns penalised by growth of the drawdown;
- ``aggressive``: log returns;
- ``balanced``: the differential Sharpe ratio (Moody and Saffell);
- ``contrarian``: rewarded for fading deviations from the 20-bar mean (mean reversion).

Training is a job (``POST /v1/rl/train`` answers with a :class:`~quantcrew.ml_server.schemas.jobs.JobInfo`;
its ``result``, once succeeded, is an :class:`RLTrainResult`). Bars up to ``train_end`` train;
the bars after it are the out-of-sample test span every policy is evaluated on.

Every trained policy is judged there by the quality gate (a
:class:`~quantcrew.ml_server.schemas.gate.GateVerdict`, recorded with the policy): one that
passes is deployed, stage ``full``, as ``rl-<agent>-<symbol lowercased>``
(:func:`rl_deployment_name`); one that fails stays in the registry, unused. Asked with a
``symbol``, ``/v1/rl/act`` answers with each agent's deployed policy and lists the agents
whose policies were gated instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import FiniteFloat, OHLCVPayload, Provenance, WireModel
from quantcrew.ml_server.schemas.gate import GateVerdict

__all__ = [
    "ACTION_LABELS",
    "RL_AGENTS",
    "RL_ALGORITHMS",
    "ActionMode",
    "BacktestReport",
    "GatedPolicy",
    "RLActRequest",
    "RLActResponse",
    "RLAction",
    "RLAgent",
    "RLAlgorithm",
    "RLEvaluateRequest",
    "RLEvaluateResponse",
    "RLEvaluation",
    "RLPolicyResult",
    "RLTrainRequest",
    "RLTrainResult",
    "RegimeSlice",
    "rl_deployment_name",
]

RLAgent = Literal["conservative", "aggressive", "balanced", "contrarian"]
RL_AGENTS: tuple[RLAgent, ...] = ("conservative", "aggressive", "balanced", "contrarian")
RLAlgorithm = Literal["ppo", "a2c", "dqn"]
RL_ALGORITHMS: tuple[RLAlgorithm, ...] = ("ppo", "a2c", "dqn")
ActionMode = Literal["discrete", "continuous"]
ACTION_LABELS = ("short", "flat", "long")

_SEED_MAX = 2**32 - 1


def _all_agents() -> list[RLAgent]:
    return list(RL_AGENTS)


def rl_deployment_name(agent: str, symbol: str) -> str:
    """The deployment name of an agent's policies on one symbol: ``rl-<agent>-<symbol lowercased>``."""
    return f"rl-{agent}-{symbol.strip().lower()}"


class _Costs(WireModel):
    cost_bps: float = Field(default=1.0, ge=0.0, le=500.0,
                            description="Commission per unit of turnover, in basis points of notional.")
    slippage_bps: float = Field(default=1.0, ge=0.0, le=500.0,
                                description="Slippage per unit of turnover, in basis points; added to cost_bps.")


class RLTrainRequest(_Costs):
    """Train one policy per agent on the bars up to ``train_end``; evaluate each on the bars after it."""

    data: OHLCVPayload = Field(description="Daily bars of one instrument, oldest first: the training and test span.")
    symbol: str | None = Field(default=None, max_length=64, description="Instrument name, recorded with each policy.")
    agents: list[RLAgent] = Field(
        default_factory=_all_agents, min_length=1, max_length=4,
        description="Agents to train, each with its own reward: conservative, aggressive, balanced, contrarian.",
    )
    algorithm: RLAlgorithm = Field(default="ppo", description="'ppo', 'a2c' or 'dqn' (dqn: discrete actions only).")
    timesteps: int = Field(
        default=50_000, gt=0,
        description="Environment steps per agent; at most the server's cap (QUANTCREW_SERVER__MAX_TIMESTEPS).",
    )
    train_end: datetime | None = Field(
        default=None,
        description="Last training bar (inclusive). Later bars are the out-of-sample test span. Default: the "
                    "first train_fraction of the bars.",
    )
    train_fraction: float = Field(default=0.7, gt=0.1, lt=1.0,
                                  description="Share of bars that train when train_end is not given.")
    action_mode: ActionMode = Field(
        default="discrete",
        description="'discrete': short, flat or long (positions -1, 0, +1). 'continuous': a target weight in "
                    "[-1, 1] (PPO and A2C only).",
    )
    episode_length: int | None = Field(
        default=256, ge=16,
        description="Bars per training episode, each starting at a random training bar; null: the whole span.",
    )
    n_envs: int = Field(default=4, ge=1, le=16, description="Parallel environment copies (a vectorised env).")
    regime_features: bool = Field(
        default=True,
        description="Add the regime family's filtered probabilities (bull, bear, sideways, volatile) to the "
                    "observation; the regime HMM is fitted on the training bars only.",
    )
    learning_rate: float | None = Field(default=None, gt=0.0, lt=1.0,
                                        description="Optimizer step size; default the algorithm's own.")
    seed: int = Field(default=0, ge=0, le=_SEED_MAX, description="Seeds the networks, the env and the regime fit.")
    name_prefix: str = Field(
        default="rl", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Each policy is stored as a new version of '<name_prefix>-<agent>-<algorithm>'.",
    )

    @model_validator(mode="after")
    def _check(self) -> RLTrainRequest:
        if len(set(self.agents)) != len(self.agents):
            raise ValueError(f"agents must not repeat a name, got {self.agents}")
        if self.algorithm == "dqn" and self.action_mode == "continuous":
            raise ValueError("algorithm 'dqn' needs action_mode 'discrete'; use 'ppo' or 'a2c' for continuous weights")
        return self


class BacktestReport(WireModel):
    """Out-of-sample performance of a position series after costs (daily bars: 252 per year)."""

    total_return: float = Field(description="Compounded return over the span, as a fraction.")
    annual_return: float = Field(description="Geometric annualised return.")
    annual_volatility: float = Field(description="Annualised standard deviation of bar returns.")
    sharpe: float = Field(description="Annualised mean over standard deviation of bar returns (0 when flat).")
    sortino: float = Field(description="Annualised mean over downside deviation (0 when there is no downside).")
    max_drawdown: float = Field(description="Largest peak-to-trough fall of the equity curve, as a positive fraction.")
    turnover: float = Field(description="Mean absolute change of position per bar.")
    hit_rate: float = Field(description="Share of bars in the market with a positive net return.")
    exposure: float = Field(description="Mean absolute position.")
    n_bars: int = Field(description="Bars in the span.")


class RegimeSlice(WireModel):
    """Performance within one regime label (bars need not be contiguous)."""

    total_return: float = Field(description="Compounded net return over the bars held in this regime.")
    n_bars: int = Field(description="Bars with this filtered regime label.")


class RLEvaluation(WireModel):
    """One policy's out-of-sample backtest, beside the benchmarks on the same bars."""

    agent: RLAgent
    model_id: str = Field(description="Registry id of the policy.")
    algorithm: RLAlgorithm
    metrics: BacktestReport
    regime_returns: dict[str, RegimeSlice] = Field(
        description="The policy's compounded return within each filtered regime label of the test span "
                    "(the label known when the position was chosen).")
    specialty_metric: str = Field(description="The metric this agent is built to win on.")
    beats_buy_and_hold: bool = Field(
        description="DEPRECATED, not a verdict: whether the specialty metric alone beats buy-and-hold's (true for "
                    "a policy that never trades, whose drawdown is small). Read `gate` instead.")
    gate: GateVerdict | None = Field(
        default=None,
        description="The quality gate's verdict on this span: Sharpe after costs above buy-and-hold's and flat's, "
                    "a position held on at least 10% of the bars, the specialty better than buy-and-hold's, and "
                    "the 90% bootstrap interval of the Sharpe difference beside it.")


class RLPolicyResult(WireModel):
    """A trained policy as stored in the registry."""

    agent: RLAgent
    model_id: str
    model_version: int
    name: str
    algorithm: RLAlgorithm
    sha256: str = Field(description="SHA-256 of the stored state dict.")
    seed: int
    timesteps: int
    train_seconds: float
    train_start: str
    train_end: str
    evaluation: RLEvaluation | None = Field(description="Out-of-sample backtest; null when no test bars remain.")
    gate: GateVerdict | None = Field(
        default=None, description="The quality gate's verdict on the test span (also in the registry metadata).")
    deployed: bool = Field(
        default=False,
        description="Whether the policy passed its gate and was deployed (stage 'full') as "
                    "rl-<agent>-<symbol>; a policy trained without a symbol is never deployed.")


class RLTrainResult(WireModel):
    """A succeeded training job's ``result``."""

    policies: list[RLPolicyResult]
    regime_model_id: str | None = Field(description="Regime model whose probabilities the policies observe.")
    train_start: str
    train_end: str
    test_start: str | None
    test_end: str | None
    benchmarks: dict[str, BacktestReport] = Field(description="'buy_and_hold' and 'flat' on the test span.")
    benchmark_regime_returns: dict[str, dict[str, RegimeSlice]] = Field(
        description="Per benchmark, its compounded return within each regime label of the test span.")
    data_hash: str


class _PolicySelection(WireModel):
    model_ids: list[str] | None = Field(
        default=None, min_length=1, max_length=32, description="Policies by registry id.")
    agents: list[RLAgent] | None = Field(
        default=None, min_length=1, max_length=4,
        description="Policies by agent: the newest stored policy of each (of `algorithm`, when given).",
    )
    algorithm: RLAlgorithm | None = Field(default=None, description="With `agents`: only policies of this algorithm.")

    @model_validator(mode="after")
    def _one_selection(self) -> _PolicySelection:
        if self.model_ids is None and self.agents is None:
            raise ValueError("name the policies: give model_ids or agents")
        return self


class RLActRequest(_PolicySelection):
    """Ask policies what to do at the last bar.

    With ``agents`` and a ``symbol`` (and no ``model_ids``), each agent's policy deployed for
    that symbol answers: the one that passed its quality gate. An agent whose policies for the
    symbol all failed (or were trained before gates) is listed in the reply's ``gated`` and not
    answered; an agent with no policy for the symbol is a 404 naming it. Without a symbol, each
    agent's newest policy answers, judged or not.
    """

    data: OHLCVPayload = Field(description="Recent bars, oldest first (at least 62: the features need 60 bars).")
    symbol: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="With agents: answer with the policies deployed for this symbol (matched without case).")
    position: FiniteFloat = Field(default=0.0, ge=-1.0, le=1.0, description="The position held now, in [-1, 1].")


class RLAction(WireModel):
    """One policy's decision."""

    agent: RLAgent
    model_id: str
    model_version: int
    algorithm: RLAlgorithm
    action: int | float = Field(description="Discrete: 0 short, 1 flat, 2 long. Continuous: the target weight.")
    action_label: str = Field(description="'short', 'flat', 'long', or 'weight' for continuous policies.")
    target_position: float = Field(description="Position the policy wants, in [-1, 1].")
    probabilities: dict[str, float] | None = Field(
        description="PPO/A2C discrete: probability of short, flat and long. Null otherwise.")
    q_values: dict[str, float] | None = Field(description="DQN: Q-value of short, flat and long. Null otherwise.")
    action_std: float | None = Field(description="Continuous policies: the Gaussian policy's standard deviation.")


class GatedPolicy(WireModel):
    """An agent not answered: its policies for the symbol exist, but none passed its quality gate."""

    agent: RLAgent
    model_id: str = Field(description="The agent's newest policy for the symbol.")
    gate: GateVerdict | None = Field(
        description="That policy's verdict; null for a policy trained before quality gates (no verdict recorded).")
    reason: str = Field(description="Why it does not answer, in words: the failed checks, or no verdict recorded.")


class RLActResponse(Provenance):
    """Every policy's action on the same bars; ``model_id`` is null (several models answered)."""

    actions: list[RLAction] = Field(description="One per answering policy; empty when every agent asked was gated.")
    gated: list[GatedPolicy] = Field(
        default_factory=list, description="Agents asked with a symbol whose policies failed their gate: not answered.")
    regime: str | None = Field(description="Filtered regime label of the last bar, from the policies' regime model.")
    regime_probabilities: dict[str, float] | None = Field(description="Filtered probability of each regime label.")


class RLEvaluateRequest(_PolicySelection, _Costs):
    """Backtest stored policies out of sample, after costs, beside buy-and-hold and flat."""

    data: OHLCVPayload = Field(description="Bars, oldest first; the evaluation span is the bars after `start`.")
    start: datetime | None = Field(
        default=None,
        description="First bar whose position is evaluated (it earns the next bar's return); default the "
                    "policies' last training bar, so the returns earned are all out of sample. Earlier bars still "
                    "feed the features.",
    )


class RLEvaluateResponse(Provenance):
    """One backtest per policy, and the benchmarks on the same span."""

    evaluations: list[RLEvaluation]
    benchmarks: dict[str, BacktestReport]
    benchmark_regime_returns: dict[str, dict[str, RegimeSlice]]
    start: str
    end: str
