"""Wire contract of the rl family: specialized trading policies (stable-baselines3) on one market.

Four agents share one trading environment and differ only by the reward they were trained on:

- ``conservative``: returns penalised by growth of the drawdown;
- ``aggressive``: log returns;
- ``balanced``: the differential Sharpe ratio (Moody and Saffell);
- ``contrarian``: rewarded for fading deviations from the 20-bar mean (mean reversion).

Training is a job (``POST /v1/rl/train`` answers with a :class:`~quantcrew.ml_server.schemas.jobs.JobInfo`;
its ``result``, once succeeded, is an :class:`RLTrainResult`). Bars up to ``train_end`` are the
training span; the bars after it are the out-of-sample test span.

Each agent is trained once per seed and per configuration of a small search grid (learning
rate, entropy bonus, reward scale: :class:`RLSearchGrid`) on the first part of the training
span; the last ``validation_fraction`` of it (the validation bars, never trained on) chooses one
run per agent, the one whose positions score best there (:class:`RLSeedRun`). Only that run is
stored, and only it is judged by the quality gate on the test span (a
:class:`~quantcrew.ml_server.schemas.gate.GateVerdict`, recorded with the policy): the test bars
never take part in the choice. Every run's test figures are reported beside it, so the spread
between seeds is visible. A policy that passes is deployed, stage ``full``, as
``rl-<agent>-<symbol lowercased>`` (:func:`rl_deployment_name`); one that fails stays in the
registry, unused. Asked with a ``symbol``, ``/v1/rl/act`` answers with each agent's deployed
policy and lists the agents whose policies were gated instead.

Every annualised figure uses the bars per year of the data's own calendar (counted: about 252
for daily equity bars, 365 for crypto, 52 weekly, 12 monthly), reported as ``periods_per_year``.
"""

from __future__ import annotations

from datetime import datetime
from itertools import product
from typing import Annotated, Literal

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import FiniteFloat, OHLCVPayload, Provenance, TriggerField, WireModel
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
    "RLSearchGrid",
    "RLSeedRun",
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
MAX_SEEDS = 10
MAX_RUNS = 64
"""Most runs (seeds x configurations) one agent may be trained for in one job."""
DEFAULT_REWARD_SCALES: tuple[float, ...] = (0.5, 2.0)
"""The reward scales tried when a request names none: a factor 4 apart, around the documented reward."""

LearningRate = Annotated[float, Field(gt=0.0, lt=1.0, allow_inf_nan=False)]
EntCoef = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
RewardScale = Annotated[float, Field(gt=0.0, le=1000.0, allow_inf_nan=False)]


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


def _default_scales() -> list[float]:
    return list(DEFAULT_REWARD_SCALES)


def _distinct(name: str, values: list[float] | None) -> None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError(f"grid.{name} must not repeat a value, got {values}")


class RLSearchGrid(WireModel):
    """The configurations tried per agent and seed: every combination of the values listed.

    A dimension left out takes one value: the request's ``learning_rate`` (or the algorithm's
    own), the entropy bonus 0.01, the reward as documented (scale 1). The default tries two
    reward scales (:data:`DEFAULT_REWARD_SCALES`).
    """

    learning_rate: list[LearningRate] | None = Field(
        default=None, min_length=1, max_length=4, description="Optimizer step sizes, each in (0, 1).")
    ent_coef: list[EntCoef] | None = Field(
        default=None, min_length=1, max_length=4,
        description="Entropy bonuses of PPO and A2C, each in [0, 1] (DQN has none: refused with dqn).")
    reward_scale: list[RewardScale] = Field(
        default_factory=_default_scales, min_length=1, max_length=4,
        description="Multipliers of the agent's reward, each in (0, 1000]; 1 is the reward as documented.")

    @model_validator(mode="after")
    def _check(self) -> RLSearchGrid:
        _distinct("learning_rate", self.learning_rate)
        _distinct("ent_coef", self.ent_coef)
        _distinct("reward_scale", self.reward_scale)
        return self

    def configurations(self, learning_rate: float | None) -> list[tuple[float | None, float | None, float]]:
        """Every ``(learning_rate, ent_coef, reward_scale)`` combination, in the order listed."""
        rates: list[float | None] = list(self.learning_rate) if self.learning_rate is not None else [learning_rate]
        coefs: list[float | None] = list(self.ent_coef) if self.ent_coef is not None else [None]
        return list(product(rates, coefs, self.reward_scale))


class RLTrainRequest(_Costs):
    """Train each agent once per seed and configuration on the first part of the training span, choose one run
    per agent on the validation bars, judge the chosen one on the bars after ``train_end``."""

    data: OHLCVPayload = Field(description="Bars of one instrument, oldest first: the training and test span.")
    symbol: str | None = Field(default=None, max_length=64, description="Instrument name, recorded with each policy.")
    agents: list[RLAgent] = Field(
        default_factory=_all_agents, min_length=1, max_length=4,
        description="Agents to train, each with its own reward: conservative, aggressive, balanced, contrarian.",
    )
    algorithm: RLAlgorithm = Field(default="ppo", description="'ppo', 'a2c' or 'dqn' (dqn: discrete actions only).")
    timesteps: int = Field(
        default=20_000, gt=0,
        description="Environment steps of each run (one agent, seed and configuration). The steps of one agent, "
                    "timesteps x seeds x configurations, are at most the server's cap "
                    "(QUANTCREW_SERVER__MAX_TIMESTEPS).",
    )
    seeds: int = Field(
        default=3, ge=1, le=MAX_SEEDS,
        description="Seeds each configuration is trained with: seed, seed + 1, ... The run deployed is the one "
                    "best on the validation bars; every run's test figures are reported (the spread).",
    )
    grid: RLSearchGrid = Field(
        default_factory=RLSearchGrid,
        description="Learning rates, entropy bonuses and reward scales tried (every combination); chosen on the "
                    "validation bars.",
    )
    validation_fraction: float = Field(
        default=0.25, ge=0.1, le=0.5,
        description="Share of the training span, at its end, that only chooses among the runs (never trained on).",
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
                    "observation; the regime HMM is fitted on the bars the policies are fitted on. Without it "
                    "every bar's regime is 'unknown', and the specialists judged in a regime cannot pass.",
    )
    learning_rate: float | None = Field(default=None, gt=0.0, lt=1.0,
                                        description="Optimizer step size when the grid lists none; default the "
                                                    "algorithm's own.")
    seed: int = Field(default=0, ge=0, le=_SEED_MAX,
                      description="First seed of the networks and the env; seeds the regime fit.")
    trigger: TriggerField = "manual"
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
        if self.algorithm == "dqn" and self.grid.ent_coef is not None:
            raise ValueError("grid.ent_coef applies to 'ppo' and 'a2c'; dqn has no entropy bonus")
        if self.learning_rate is not None and self.grid.learning_rate is not None:
            raise ValueError("give learning_rate or grid.learning_rate, not both")
        if self.seed + self.seeds - 1 > _SEED_MAX:
            raise ValueError(f"seeds: seed {self.seed} + {self.seeds} seeds runs past the largest seed {_SEED_MAX}")
        if self.runs > MAX_RUNS:
            raise ValueError(f"seeds x grid configurations is {self.seeds} x {len(self.configurations())} = "
                             f"{self.runs} runs per agent; at most {MAX_RUNS}")
        return self

    def configurations(self) -> list[tuple[float | None, float | None, float]]:
        """The grid's ``(learning_rate, ent_coef, reward_scale)`` combinations."""
        return self.grid.configurations(self.learning_rate)

    @property
    def runs(self) -> int:
        """Runs per agent: seeds x configurations."""
        return self.seeds * len(self.configurations())


class BacktestReport(WireModel):
    """Performance of a position series after costs, annualised with the bars per year of the data's calendar."""

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
    periods_per_year: int | None = Field(
        default=None, description="Bars per year every annualised figure used, counted from the bars' calendar.")


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
    specialty_regimes: list[str] | None = Field(
        default=None,
        description="The regime labels whose bars the specialty is measured over (its own regime: conservative "
                    "bear and volatile, aggressive bull, contrarian sideways); null: every bar (balanced).")
    specialty_value: float | None = Field(
        default=None, description="The specialty over those bars; null when they are too few to measure it.")
    beats_buy_and_hold: bool = Field(
        description="DEPRECATED, not a verdict: whether the specialty in its regime alone beats buy-and-hold's "
                    "there (true for a policy that never trades, whose drawdown is small). Read `gate` instead.")
    positions: list[float] | None = Field(
        default=None,
        description="With include_positions: the position chosen at each bar from the response's `start` to the "
                    "last bar sent, one per bar (the last one earns no return in this evaluation).")
    gate: GateVerdict | None = Field(
        default=None,
        description="The quality gate's verdict on this span: Sharpe after costs above buy-and-hold's and flat's, "
                    "a position held on at least 10% of the bars, the specialty in the agent's own regime better "
                    "than buy-and-hold's on the same bars, and the 90% bootstrap interval of the Sharpe difference "
                    "beside it.")


class RLSeedRun(WireModel):
    """One run of an agent (one seed and configuration): how it scored on the validation bars, which chose, and
    on the test bars, which did not."""

    seed: int
    learning_rate: float | None = Field(description="Null: the algorithm's own.")
    ent_coef: float | None = Field(description="Entropy bonus; null: the default 0.01 (PPO, A2C) or none (DQN).")
    reward_scale: float = Field(description="Multiplier of the agent's reward.")
    validation_score: float = Field(
        description="Checks of the agent's gate passed on the validation bars, plus (1 + m / (1 + |m|)) / 2 with m "
                    "its Sharpe margin over buy-and-hold there: the best run passes most checks, then has the "
                    "widest margin.")
    validation_sharpe: float = Field(description="Sharpe after costs on the validation bars.")
    validation_specialty: float | None = Field(description="The specialty in its regime on the validation bars.")
    test_sharpe: float = Field(description="Sharpe after costs on the test bars (reported; it chose nothing).")
    test_total_return: float = Field(description="Total return after costs on the test bars.")
    test_specialty: float | None = Field(description="The specialty in its regime on the test bars.")
    test_beats_buy_and_hold: bool = Field(
        description="Whether this run's test specialty in its regime beat buy-and-hold's AND its test Sharpe beat "
                    "buy-and-hold's (what the bench counts as a win).")
    chosen: bool = Field(description="The run deployed-or-gated: best on the validation bars.")
    train_seconds: float


class RLPolicyResult(WireModel):
    """A trained policy as stored in the registry."""

    agent: RLAgent
    model_id: str
    model_version: int
    name: str
    algorithm: RLAlgorithm
    sha256: str = Field(description="SHA-256 of the stored state dict.")
    seed: int = Field(description="The kept run's seed.")
    timesteps: int = Field(description="Steps of each run.")
    train_seconds: float = Field(description="Training seconds over every run of this agent.")
    train_start: str
    train_end: str
    evaluation: RLEvaluation | None = Field(description="Out-of-sample backtest; null when no test bars remain.")
    gate: GateVerdict | None = Field(
        default=None, description="The quality gate's verdict on the test span (also in the registry metadata).")
    runs: list[RLSeedRun] = Field(
        default_factory=list,
        description="Every run tried for this agent (seeds x configurations), in order; the chosen one marked.")
    configurations: int = Field(default=1, description="Runs tried for this agent: seeds x grid configurations.")
    reward_scale: float = Field(default=1.0, description="The chosen run's reward scale.")
    learning_rate: float | None = Field(default=None, description="The chosen run's learning rate (null: default).")
    ent_coef: float | None = Field(default=None, description="The chosen run's entropy bonus (null: default).")
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
    validation_start: str | None = Field(
        default=None, description="First bar whose position the validation judges (the runs never trained on it).")
    test_start: str | None
    test_end: str | None
    periods_per_year: int | None = Field(
        default=None, description="Bars per year of the data's calendar, used by every annualised figure.")
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
    include_positions: bool = Field(
        default=False,
        description="Also return each policy's position at every bar from `start` to the last bar sent (the "
                    "position chosen at a bar's close, seeing bars up to it): a walk-forward's targets.")


class RLEvaluateResponse(Provenance):
    """One backtest per policy, and the benchmarks on the same span."""

    evaluations: list[RLEvaluation]
    benchmarks: dict[str, BacktestReport]
    benchmark_regime_returns: dict[str, dict[str, RegimeSlice]]
    start: str
    end: str
    periods_per_year: int = Field(
        description="Bars per year every annualised figure used, counted from the calendar of the bars sent.")
