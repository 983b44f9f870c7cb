"""Walk-forward backtest of the crew's decision pipeline, against the ML server.

At the close of every bar ``t`` of the span, with data up to ``t`` only, the backtest does what
the crew does and calls the SAME :func:`quantcrew.crew.decision.decide`:

1. **Regime** of each symbol: the server's causal labelling job (``/v1/regime/causal``,
   :mod:`quantcrew.backtest.regimes`): a Gaussian HMM refitted every ``refit_every`` bars on an
   EXPANDING window (all bars from the series' first up to the refit date, at least
   ``min_train`` of them before ``start``) labels the next ``refit_every`` bars by its FILTERED
   pass (bar ``t``'s label uses bars ``<= t``), read with the trend, so each label is what was
   knowable at that close.
2. **Agents**: the four specialised agents' target positions, from
   :mod:`quantcrew.backtest.agent_models`: the transparent rules the strategy tool answers with
   when no RL policy is trained (``agents="rules"``, the default; bar ``t`` uses closes
   ``<= t``), or the RL policies retrained as server jobs on an expanding window, a window a
   year by default, each gated agent answering with its rule as it does live
   (``agents="models"``).
3. **Meta-orchestrator**: a bandit on the ML server (one per regime inside, a new uniquely named
   bandit per run, the selection tool's reward range) chooses the agent to follow in the
   symbol's current regime, every ``select_every`` bars; the agent is followed until the next
   choice, which first rewards the standing one with what following it earned: the mean over
   the bars held of the agent's target at ``t`` times the symbol's return from ``t`` to ``t + 1``
   (a per-bar return, in the units of the reward range). With ``select_every=1`` that is
   exactly the next bar's realised return. Default 21 (monthly), chosen on 2001-2004, before
   the S&P 500 test span, over 1, 5, 21 and 63: daily choices flip between agents at almost
   every bar (daily rewards barely separate the arms) and their turnover costs more than the
   agents earn.
4. **Size** of the chosen agent's signal (its side, with confidence ``signal_confidence(target)``):
   with ``agents="models"``, the execution network retrained per window with the ensemble whose
   signals it learned from (:mod:`quantcrew.backtest.sizing`), where it passed its gate; else
   :func:`quantcrew.tools.fallbacks.execution_fallback` (volatility targeting: 1% daily vol).
5. **Risk**: the one-day 95% historical VaR of the equally weighted full-weight portfolio from
   the trailing 250 returns (:func:`quantcrew.tools.fallbacks.risk_fallback`), and the
   strategy's own drawdown (see :mod:`quantcrew.backtest.book` for the stop's cooldown).
6. :func:`~quantcrew.crew.decision.decide` gives each symbol's target position.

Turnover control, two cost-aware rules applied after the limits: a partial adjustment (each
decision trades ``adjust_rate`` of the gap between the weight held and the new target, so a
signal that flips back within a few bars costs a fraction of a full round trip; a drawdown
stop is always traded in full), then a no-trade band (a symbol whose new weight is within
``trade_band`` of the weight it holds, same side, not flat, is left alone). ``adjust_rate=1``
and ``trade_band=0`` trade every change.

Execution (:class:`~quantcrew.backtest.engine.Execution`): decided at the close of ``t`` with data
``<= t`` and, by default, filled at the NEXT OPEN (``fill="next_open"``); where that open is a
stale copy of the previous close (the bundled S&P 500 until 2007), at that next bar's close
instead, never earlier. ``fill="close"`` (decided and filled at the same close) is optimistic and
labelled so: the decision uses the very close it trades at. Costs: ``cost_bps`` per unit of
turnover (book conventions in :mod:`quantcrew.backtest.book`). The bandit is rewarded with what
following an agent earned AS FILLED (the agent's target of ``t - 1`` over the part of bar ``t``
after the fill, that of ``t - 2`` before it) AFTER COSTS (its change of target pays ``cost_bps``),
as the setup's replay rewards it: an agent that churns is charged for it.

Calendar: bars per year are counted from the data's own calendar
(:func:`quantcrew.data.frequency.periods_per_year`: 252 for daily equity bars, 12 for monthly
ones) and used by every annualised figure of the run, its baselines and the DSR.

Baselines (:mod:`quantcrew.backtest.baselines`), on the same fills and costs: buy-and-hold, a
200-day trend filter and a 10% volatility target; each compared with the strategy by the
Sharpe difference and its block-bootstrap interval (:mod:`quantcrew.backtest.comparison`).

Alternatives and the deflated Sharpe ratio: the same pipeline is run with each agent followed
all the time instead of the bandit's choice (same sizing, limits, stop). The run's five trials
(the strategy and the four alternatives) are recorded in the trials ledger when one is given
(:mod:`quantcrew.backtest.trials`), and the DSR deflates by every distinct trial on the span.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from quantcrew.backtest.account import Account, Costs
from quantcrew.backtest.agent_models import (
    AGENT_KINDS,
    AgentPlan,
    ModelSettings,
    model_plan,
    rule_plan,
    window_starts,
)
from quantcrew.backtest.baselines import run_baselines
from quantcrew.backtest.book import Book
from quantcrew.backtest.comparison import compare, yearly_returns
from quantcrew.backtest.engine import Execution, Fill, filled_returns
from quantcrew.backtest.regimes import causal_regimes
from quantcrew.backtest.sizing import EnsembleSettings, SizingPlan, network_sizing
from quantcrew.backtest.stats import compute_stats
from quantcrew.backtest.trials import TrialsView, span_key
from quantcrew.backtest.walk_forward_data import BacktestInputError, WalkForwardData, prepare_data
from quantcrew.backtest.walk_forward_result import (
    DecisionRecord,
    RegimeFit,
    WalkForwardResult,
    probabilistic_sharpe,
)
from quantcrew.data.frequency import periods_per_year
from quantcrew.data.ohlcv import OHLCV
from quantcrew.ml_server.schemas.bandit import BanditCreateRequest, BanditRewardRequest, BanditSelectRequest
from quantcrew.quant.performance import period_returns
from quantcrew.quant.trials import Trial, TrialsLedger, config_hash, trials_dsr
from quantcrew.tools.fallbacks import STRATEGY_AGENTS, execution_fallback, risk_fallback

if TYPE_CHECKING:
    from quantcrew.config.settings import Settings
    from quantcrew.crew.decision import Decision, RiskLimits, SymbolInputs
    from quantcrew.tools.client import MLClient

__all__ = [
    "BacktestInputError",
    "DecisionRecord",
    "RegimeFit",
    "WalkForwardData",
    "WalkForwardResult",
    "check_options",
    "prepare_data",
    "walk_forward",
]

FloatArray = npt.NDArray[np.float64]
ProgressCallback = Callable[[int, int, str], None]

_VAR_WINDOW = 250
_EXEC_BARS = 61          # execution_fallback reads the last 60 returns
_MIN_TRAIN = 100
_FILLS = ("next_open", "close")
FILL_TEXT = {"next_open": "next open (decided at the close, filled at the next bar's open; a stale open, a copy of "
                          "the previous close, fills at that bar's close)",
             "close": "close (OPTIMISTIC: decided and filled at the same close, with the close that made the signal)"}
"""How each fill is described in the run's configuration and reports."""


def walk_forward(
    symbols: str | Sequence[str | OHLCV] | WalkForwardData,
    start: str | None = None,
    end: str | None = None,
    *,
    client: MLClient,
    settings: Settings | None = None,
    refit_every: int = 63,
    min_train: int = 500,
    cost_bps: float = 5.0,
    limits: RiskLimits | None = None,
    policy: str = "discounted_thompson",
    cooldown: int | None = 21,
    rebalance_every: int = 1,
    select_every: int = 21,
    seed: int = 0,
    fill: Fill = "next_open",
    trade_band: float = 0.0,
    adjust_rate: float = 1.0,
    agents: str = "rules",
    retrain_every: int | None = None,
    model_settings: ModelSettings | None = None,
    ensemble_settings: EnsembleSettings | None = None,
    model_budget_s: float | None = None,
    ledger: TrialsLedger | None = None,
    on_progress: ProgressCallback | None = None,
) -> WalkForwardResult:
    """Run the crew's decision pipeline bar by bar over ``start..end`` (see the module docstring).

    Args:
        symbols: A symbol, symbols or series (``OHLCV``), or data from :func:`prepare_data`.
        start: First date of the span (ignored when ``symbols`` is prepared data).
        end: Last date of the span, inclusive (likewise).
        client: Client of the ML server that fits the regimes and runs the bandit.
        settings: Where data files are; None: bundled samples and paths only.
        refit_every: Bars between regime refits.
        min_train: Bars needed before ``start`` for the first fit (at least 100).
        cost_bps: Cost per unit of turnover, in basis points.
        limits: Risk limits of the decision; :class:`~quantcrew.crew.decision.RiskLimits` defaults when None.
        policy: Bandit policy (one of ``BANDIT_POLICIES``).
        cooldown: Bars a fired drawdown stop keeps the book flat before re-entry; None: never re-enter.
        rebalance_every: Decide every this many bars (positions drift in between).
        select_every: Bars between the meta-orchestrator's choices (at decision bars): the agent chosen
            is followed until the next choice, which first rewards it with the agent's mean per-bar return.
        seed: Seed of the regime fits and the bandit.
        fill: ``"next_open"`` (default) or ``"close"`` (optimistic; module docstring).
        trade_band: No-trade band, in fractions of equity (module docstring); 0 trades every change.
        adjust_rate: Fraction of the gap to the new target traded per decision, in (0, 1] (module docstring).
        agents: ``"rules"`` or ``"models"`` (:mod:`quantcrew.backtest.agent_models`).
        retrain_every: With models: bars per training window; default a year of the data's calendar.
        model_settings: With models: how the policies are trained.
        ensemble_settings: With models: how each window's ensemble and execution network are trained.
        model_budget_s: With models: seconds their training may take in all (None: no limit).
        ledger: Where trials are recorded and counted (the runs store); None: this run's trials only.
        on_progress: Called as ``on_progress(done, total, message)`` after each fit and each bar.

    Returns:
        The result, with statistics for the strategy and its baselines.

    Raises:
        BacktestInputError: a parameter or the span is unusable (the message names it).
        UnknownSymbolError, DataError: see :func:`prepare_data`.
        quantcrew.tools.errors.MLClientError: the ML server failed or cannot be reached.
        quantcrew.backtest.agent_models.ModelBudgetError: the models' time budget ran out.
        quantcrew.backtest.regimes.RegimeJobError: a regime labelling job failed.
    """
    from quantcrew.crew.decision import RiskLimits

    began = time.perf_counter()
    limits = limits or RiskLimits()
    check_options(refit_every=refit_every, min_train=min_train, cost_bps=cost_bps, cooldown=cooldown,
                  rebalance_every=rebalance_every, select_every=select_every, policy=policy, fill=fill,
                  trade_band=trade_band, adjust_rate=adjust_rate, agents=agents)
    if isinstance(symbols, WalkForwardData):
        data = symbols
    else:
        if start is None or end is None:
            raise BacktestInputError("start" if start is None else "end", "required unless data is prepared")
        data = prepare_data(symbols, start, end, settings=settings, min_train=min_train)
    ppy = periods_per_year(data.bars[0].timestamps)
    labels, fits = causal_regimes(data.bars, data.start_index, client=client, refit_every=refit_every, seed=seed,
                                  on_progress=on_progress)
    sizing: SizingPlan | None = None
    if agents == "models":
        model_settings = model_settings or ModelSettings(cost_bps=cost_bps)
        ensemble_settings = ensemble_settings or EnsembleSettings()
        retrain_every = retrain_every or ppy
        deadline = None if model_budget_s is None else time.monotonic() + model_budget_s
        plan = model_plan(data.bars, data.start_index, client=client, retrain_every=retrain_every,
                          settings=model_settings, budget_s=model_budget_s,
                          on_progress=None if on_progress is None else
                          (lambda d, t, m: on_progress(0, 0, f"policies {d}/{t}: {m}")))
        sizing = network_sizing(data.bars, plan.targets,
                                window_starts(len(data.bars[0]), data.start_index, retrain_every), client=client,
                                settings=ensemble_settings, deadline=deadline,
                                on_progress=None if on_progress is None else
                                (lambda d, t, m: on_progress(0, 0, f"execution networks {d}/{t}: {m}")))
    else:
        plan = rule_plan(data.bars)
    run = _Run(data, plan, sizing, labels=labels, fits=fits, client=client, limits=limits,
               costs=Costs(commission_bps=cost_bps), policy=policy, cooldown=cooldown,
               rebalance_every=rebalance_every, select_every=select_every, seed=seed, fill=fill,
               trade_band=trade_band, adjust_rate=adjust_rate, on_progress=on_progress)
    run.execute()
    config = {"start": data.dates[0], "end": data.dates[-1], "refit_every": refit_every, "min_train": min_train,
              "train_bars_before_start": data.start_index, "cost_bps": cost_bps, "limits": limits.model_dump(),
              "policy": policy, "cooldown": cooldown, "rebalance_every": rebalance_every,
              "select_every": select_every, "seed": seed, "fill": fill, "trade_band": trade_band,
              "adjust_rate": adjust_rate, "agents": agents, "reward": "the chosen agent's filled return after costs",
              "var": "historical, 250 bars", "regimes": "causal job: hmm, expanding refits, filtered, trend reading"}
    if agents == "models" and model_settings is not None:
        config["models"] = {**dataclasses.asdict(model_settings), "retrain_every": retrain_every,
                            "ensemble": dataclasses.asdict(ensemble_settings or EnsembleSettings())}
    return run.result(config, ledger, time.perf_counter() - began)


def check_options(*, refit_every: int = 63, min_train: int = 500, cost_bps: float = 5.0, cooldown: int | None = 21,
                  rebalance_every: int = 1, select_every: int = 21, policy: str = "discounted_thompson",
                  fill: str = "next_open", trade_band: float = 0.0, adjust_rate: float = 1.0,
                  agents: str = "rules") -> None:
    """Refuse an unusable option of :func:`walk_forward` (``BacktestInputError`` naming it), before any work."""
    from quantcrew.ml_server.schemas.bandit import BANDIT_POLICIES

    if refit_every < 1:
        raise BacktestInputError("refit_every", f"must be at least 1, got {refit_every}")
    if min_train < _MIN_TRAIN:
        raise BacktestInputError("min_train", f"must be at least {_MIN_TRAIN} bars, got {min_train}")
    if not math.isfinite(cost_bps) or not 0.0 <= cost_bps < 1000.0:
        raise BacktestInputError("cost_bps", f"must be in [0, 1000), got {cost_bps}")
    if cooldown is not None and cooldown < 1:
        raise BacktestInputError("cooldown", f"must be at least 1 bar (or None: never re-enter), got {cooldown}")
    if rebalance_every < 1:
        raise BacktestInputError("rebalance_every", f"must be at least 1, got {rebalance_every}")
    if select_every < 1:
        raise BacktestInputError("select_every", f"must be at least 1, got {select_every}")
    if fill not in _FILLS:
        raise BacktestInputError("fill", f"unknown '{fill}'; choose among {', '.join(_FILLS)}")
    if not math.isfinite(trade_band) or not 0.0 <= trade_band < 1.0:
        raise BacktestInputError("trade_band", f"must be in [0, 1), got {trade_band}")
    if not math.isfinite(adjust_rate) or not 0.0 < adjust_rate <= 1.0:
        raise BacktestInputError("adjust_rate", f"must be in (0, 1], got {adjust_rate}")
    if agents not in AGENT_KINDS:
        raise BacktestInputError("agents", f"unknown '{agents}'; choose among {', '.join(AGENT_KINDS)}")
    if policy not in BANDIT_POLICIES:
        raise BacktestInputError("policy", f"unknown '{policy}'; choose among {', '.join(BANDIT_POLICIES)}")


class _Run:
    """The state of one walk-forward run: data, regimes, the books, the records."""

    def __init__(self, data: WalkForwardData, plan: AgentPlan, sizing: SizingPlan | None, *, labels: list[list[str]],
                 fits: list[RegimeFit], client: MLClient, limits: RiskLimits, costs: Costs, policy: str,
                 cooldown: int | None, rebalance_every: int, select_every: int, seed: int, fill: Fill,
                 trade_band: float, adjust_rate: float, on_progress: ProgressCallback | None) -> None:
        self.data, self.client, self.limits = data, client, limits
        self.policy, self.seed = policy, seed
        self.rebalance_every = rebalance_every
        self.on_progress = on_progress
        self.bars = data.bars
        self.symbols = data.symbols
        self.s, self.e = data.start_index, len(data.bars[0]) - 1
        self.n = self.e - self.s + 1
        self.all_dates = data.bars[0].iso_timestamps()
        self.closes = np.column_stack([b.close for b in self.bars])
        self.rets = np.vstack([np.zeros(len(self.symbols)), self.closes[1:] / self.closes[:-1] - 1.0])
        self.plan, self.sizing = plan, sizing
        self.rules = plan.targets
        self.fill, self.trade_band, self.adjust_rate, self.cost_model = fill, trade_band, adjust_rate, costs
        self.ppy = periods_per_year(data.bars[0].timestamps)
        self.opens = np.column_stack([b.open for b in self.bars])
        self.agent_returns = [{a: filled_returns(r[a], self.opens[:, i], self.closes[:, i], fill,
                                                 costs.commission + costs.slippage)
                               for a in STRATEGY_AGENTS} for i, r in enumerate(self.rules)]
        self.labels = labels  # per symbol, the label of each bar of the span
        self.total = self.n
        self.done = 0
        self.fits = fits
        self.records: list[DecisionRecord] = []
        self.agents: list[list[str]] = [[] for _ in self.symbols]

        def book() -> Book:  # filled by the engine: the next open (or the next close if stale), or the close
            account = Account(len(self.symbols), costs=costs, sizing="weights")
            return Book(Execution(account, self.opens, self.closes, fill=fill, stale_opens="next_close"),
                        drawdown_stop=limits.drawdown_stop, cooldown=cooldown)

        self.book = book()
        self.alt_books = {a: book() for a in STRATEGY_AGENTS}
        self.equity = np.empty(self.n)
        self.alt_equity = {a: np.empty(self.n) for a in STRATEGY_AGENTS}
        self.gross = np.zeros(self.n)
        self.alt_gross = {a: np.zeros(self.n) for a in STRATEGY_AGENTS}
        self.positions = np.zeros((self.n, len(self.symbols)))
        self.bandit_name = f"wf-{uuid.uuid4().hex[:16]}"
        self.bandit_id = ""
        self.select_every = select_every
        self.choice: list[tuple[str, str]] = []  # per symbol: (agent followed, bandit decision id)
        self.earned: list[list[float]] = [[] for _ in self.symbols]  # per-bar returns of the chosen agent

    # -- the loop --------------------------------------------------------------------------------

    def _progress(self, message: str) -> None:
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.total, message)

    def execute(self) -> None:
        from quantcrew.tools.selection import REWARD_RANGE

        created = self.client.bandit_create(BanditCreateRequest.model_validate({
            "name": self.bandit_name, "policy": self.policy, "arms": list(STRATEGY_AGENTS), "seed": self.seed,
            "params": {"reward_range": list(REWARD_RANGE)}}))
        self.bandit_id = created.bandit_id
        last_select = -self.select_every
        for j in range(self.n):
            t = self.s + j
            if j > 0:
                self._hold(j, t)
            if j % self.rebalance_every == 0:
                if j - last_select >= self.select_every:
                    self._reward()
                    self._select(j, t)
                    last_select = j
                self._decide(j, t)
            else:
                self.positions[j] = self.book.weights
            for i, (agent, _) in enumerate(self.choice):
                self.agents[i].append(agent)
            self.equity[j] = self.book.equity
            for a, b in self.alt_books.items():
                self.alt_equity[a][j] = b.equity
                self.alt_gross[a][j] = float(np.abs(b.weights).sum())
            self._progress(f"{self.all_dates[t]}  equity {self.book.equity:.3f}  drawdown {self.book.drawdown:.1%}")

    def _hold(self, j: int, t: int) -> None:
        self.gross[j] = self.book.hold(t)
        for b in self.alt_books.values():
            b.hold(t)
        for i, (agent, _) in enumerate(self.choice):  # what following the chosen agent earned over bar t
            self.earned[i].append(float(self.agent_returns[i][agent][t]))

    def _reward(self) -> None:
        """Reward each standing choice with its agent's mean per-bar return since it was made."""
        for i, (_, decision_id) in enumerate(self.choice):
            if self.earned[i]:
                self.client.bandit_reward(BanditRewardRequest(decision_id=decision_id,
                                                              reward=float(np.mean(self.earned[i]))))
            self.earned[i] = []

    def _select(self, j: int, t: int) -> None:
        """Ask the bandit whom to follow on each symbol, in the symbol's current regime."""
        choice = []
        for i, _ in enumerate(self.symbols):
            d = self.client.bandit_select(BanditSelectRequest(bandit=self.bandit_id, regime=self.labels[i][j]))
            choice.append((d.arm, d.decision_id))
        self.choice = choice

    def _decide(self, j: int, t: int) -> None:
        from quantcrew.crew.decision import DecisionInputs, SymbolInputs, decide

        window = self.rets[max(1, t - _VAR_WINDOW + 1):t + 1]
        n_sym = len(self.symbols)
        var = max(float(risk_fallback(window, [1.0 / n_sym] * n_sym, [0.95], 1)["estimates"][0]["var"]), 0.0)
        sizes: dict[tuple[int, str], tuple[float, tuple[float, float]]] = {}
        targets = [{a: float(self.rules[i][a][t]) for a in STRATEGY_AGENTS} for i in range(n_sym)]

        def inputs(i: int, agent: str, decision_id: str | None) -> SymbolInputs:
            if (i, agent) not in sizes:
                sizes[(i, agent)] = self._size(i, t, agent, targets[i][agent])
            size, interval = sizes[(i, agent)]
            return SymbolInputs(symbol=self.symbols[i], regime=self.labels[i][j], agent_targets=targets[i],
                                chosen_agent=agent, decision_id=decision_id, size=size, size_interval=interval,
                                timing="now")

        date = self.all_dates[t]
        drawdown = self.book.decision_drawdown(t)
        decision = decide(DecisionInputs(
            as_of=date, symbols=[inputs(i, a, did) for i, (a, did) in enumerate(self.choice)], portfolio_var=var,
            var_method="historical", drawdown=drawdown), self.limits)
        target = self._turnover(decision, self.book.weights)
        self.book.trade(t, target)
        self.positions[j] = target
        for d in decision.decisions:
            self.records.append(DecisionRecord(
                date=date, symbol=d.symbol, regime=d.regime or "", agent=d.followed, conviction=d.conviction,
                size=d.size, target=d.target_position, drawdown=drawdown, decision_id=d.decision_id,
                limits=tuple(d.limits_applied)))
        for agent, book in self.alt_books.items():
            alt = decide(DecisionInputs(
                as_of=date, symbols=[inputs(i, agent, None) for i in range(n_sym)], portfolio_var=var,
                var_method="historical", drawdown=book.decision_drawdown(t)), self.limits)
            book.trade(t, self._turnover(alt, book.weights))

    def _turnover(self, decision: Decision, held: FloatArray) -> FloatArray:
        """The weights traded to: the decision's targets after the partial adjustment and the no-trade band."""
        target = np.array([d.target_position for d in decision.decisions])
        stopped = any(note.startswith("drawdown_stop") for d in decision.decisions for note in d.limits_applied)
        if self.adjust_rate < 1.0 and not stopped:
            target = held + self.adjust_rate * (target - held)
        if self.trade_band <= 0.0:
            return target
        keep = (np.abs(target - held) < self.trade_band) & (np.sign(target) == np.sign(held)) & (target != 0.0)
        return np.where(keep, held, target)

    def _size(self, i: int, t: int, agent: str, target: float) -> tuple[float, tuple[float, float]]:
        """The execution plan's size for following ``agent`` (target ``target``) on symbol ``i`` at bar ``t``."""
        from quantcrew.crew.decision import signal_confidence

        network = self.sizing.size(i, agent, t) if self.sizing is not None else None
        if network is not None:
            return network

        signal = "up" if target > 0 else "down" if target < 0 else "flat"
        plan = execution_fallback(self.bars[i].iloc(slice(max(0, t + 1 - _EXEC_BARS), t + 1)), signal,
                                  signal_confidence(target))
        size = plan["size"]
        return min(max(float(size["mean"]), 0.0), 1.0), (float(size["lower"]), float(size["upper"]))

    # -- the result ------------------------------------------------------------------------------

    def result(self, config: dict[str, Any], ledger: TrialsLedger | None, wall_s: float) -> WalkForwardResult:
        ppy, span = self.ppy, slice(self.s, self.s + self.n)
        turnover = self.book.execution.traded[span]
        costs = self.book.cost * turnover
        stats = compute_stats(self.equity, initial_cash=1.0, periods_per_year=ppy,
                              trade_pnls=self.book.trade_pnls(), positions=np.abs(self.positions).sum(axis=1),
                              traded_fraction=turnover)
        alternatives = {a: compute_stats(self.alt_equity[a], initial_cash=1.0, periods_per_year=ppy,
                                         trade_pnls=b.trade_pnls(), positions=self.alt_gross[a],
                                         traded_fraction=b.execution.traded[span])
                        for a, b in self.alt_books.items()}
        baselines = run_baselines(self.opens, self.closes, self.s, cost=self.cost_model, fill=self.fill,
                                  stale_opens="next_close", periods_per_year=ppy)
        comparisons = [compare(self.equity, stats, b.equity, b.stats, baseline=k, label=b.label,
                               periods_per_year=ppy, seed=self.seed) for k, b in baselines.items()]
        dates = self.all_dates[self.s:]
        yearly = yearly_returns(dates, {"strategy": self.equity, **{k: b.equity for k, b in baselines.items()}})
        trial_stats = {"strategy": stats, **{f"follow {a}": s for a, s in alternatives.items()}}
        trials, view = self._trials(config, trial_stats, ledger)
        dsr, _ = trials_dsr(period_returns(self.equity, 1.0), trials)
        notes = []
        if math.isnan(dsr):
            notes.append("DSR undefined (flat returns or fewer than 2 trials with a measured Sharpe ratio)")
        if not view.ledger:
            notes.append(f"DSR counts this run's {view.n_trials} trials only: no trials ledger was given")
        if self.fill == "close":
            notes.append("fill=close is optimistic: each decision trades at the very close that made it")
        late = self.book.execution.late_fills
        if late:
            notes.append(f"{late} fill(s) at the next close instead of the next open: the open was a copy of the "
                         "previous close (stale)")
        if self.plan.kind == "models":
            notes.append(f"agents: {self.plan.describe()}; training took {self.plan.seconds:.0f} s")
        if self.sizing is not None:
            notes.append(f"sizing: {self.sizing.describe()}; {self.sizing.seconds:.0f} s")
        if ppy != 252:
            notes.append(f"annualised with {ppy} bars a year (counted from the data's calendar)")
        bench_psr = probabilistic_sharpe(period_returns(baselines["buy_and_hold"].equity, 1.0))
        fills = [dataclasses.replace(f, bar=f.bar - self.s) for f in self.book.account.fills]
        return WalkForwardResult(
            symbols=self.symbols, dates=dates, equity=self.equity, gross_returns=self.gross, costs=costs,
            turnover=turnover, positions=self.positions,
            regimes={s: list(self.labels[i][:self.n]) for i, s in enumerate(self.symbols)},
            agents={s: self.agents[i] for i, s in enumerate(self.symbols)}, stats=stats, baselines=baselines,
            comparisons=comparisons, yearly=yearly, dsr=dsr, benchmark_psr=bench_psr, trials=view,
            trial_sharpes={name: s.sharpe for name, s in trial_stats.items()}, alternatives=alternatives,
            decisions=self.records, regime_fits=self.fits, bandit_id=self.bandit_id, bandit_name=self.bandit_name,
            stop_dates=[self.all_dates[b] for b in self.book.stop_bars], fills=fills, periods_per_year=ppy,
            config=config, wall_s=wall_s, notes=notes, agents_used=self.plan.describe(),
            agent_windows=self.plan.windows, sizing_windows=self.sizing.windows if self.sizing is not None else [])

    def _trials(self, config: dict[str, Any], trial_stats: dict[str, Any], ledger: TrialsLedger | None
                ) -> tuple[list[Trial], TrialsView]:
        """This run's trials, recorded in the ledger when there is one; every distinct trial on the span."""
        key = span_key([b.iloc(slice(self.s, self.s + self.n)) for b in self.bars])
        digest = config_hash(config)
        mine = [Trial(name=name, config_hash=digest, sharpe=s.sharpe, periods_per_year=self.ppy, n_bars=self.n,
                      config=config) for name, s in trial_stats.items()]
        if ledger is None:
            trials, new = mine, len(mine)
        else:
            new = ledger.record_trials(key, mine)
            trials = ledger.span_trials(key)
        _, variance = trials_dsr(period_returns(self.equity, 1.0), trials)
        return trials, TrialsView(span=key, n_trials=len(trials), new=new, sharpe_variance=variance,
                                  ledger=ledger is not None)

