"""Outcomes close the loop: what each stored decision earned, stored once, and the bandit rewarded once.

A decision is made as of the last bar it saw (date ``t``). Its *outcome bar* is the first bar
after ``t`` in the symbol's data; once that bar is known:

- the realised return is ``r = close[t+1] / close[t] - 1``;
- the decision earned ``decision_return = target * r`` (its final target, after sizing and limits);
- the bandit's choice earned ``agent_return = agent_target * r``: what following the chosen agent
  alone would have earned. That is the bandit's reward for the decision it made.

:func:`settle` does it for every stored decision without an outcome whose outcome bar lies on or
before ``as_of`` (so a run dated 2002 never learns from 2008). Each (run, symbol) is stored once
(``INSERT ... ON CONFLICT DO NOTHING``), and its reward is sent only by the caller holding the
row's claim; the bandit refuses a second reward of one decision (409), which counts as rewarded.
A reward that cannot be sent (no server, or the server down) stays ``pending`` and the next settle
sends it.

Each stored outcome is also posted to the ML server's monitor (``POST /v1/monitor/outcomes``,
idempotent per ``outcome_id`` = ``<decision id or run id>:<symbol>``), which joins it to the
logged predictions for live quality. One the server could not take (down, or no server) stays
unposted in the runs store and the next settle posts it; one the server refuses for good is
marked ``refused`` with the reason.

Light on purpose: no crewai, no HTTP client at import (the client is passed in).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from quantcrew.crew.runs import RunsStore
from quantcrew.data.ohlcv import OHLCV

if TYPE_CHECKING:
    from quantcrew.config.settings import Settings
    from quantcrew.tools.client import MLClient

__all__ = [
    "PostAttempt",
    "Poster",
    "RewardAttempt",
    "Rewarder",
    "SettleReport",
    "bandit_rewarder",
    "bars_from_settings",
    "monitor_poster",
    "outcome_of",
    "outcome_wire",
    "post_outcomes",
    "record_outcomes",
    "send_rewards",
    "settle",
]

RewardStatus = Literal["pending", "rewarded", "no_decision", "failed"]


@dataclass(frozen=True)
class RewardAttempt:
    """How one reward went: ``status`` as stored, ``error`` the server's words, ``server_down`` when the server
    could not be reached (the reward stays pending)."""

    status: RewardStatus
    error: str | None = None
    server_down: bool = False


Rewarder = Callable[[str, float], RewardAttempt]
"""Sends the reward of one bandit decision: ``(decision_id, agent_return) -> RewardAttempt``."""


@dataclass(frozen=True)
class PostAttempt:
    """How posting a batch of outcomes to the monitor went: ``posted``, or ``error`` with ``server_down`` when
    the server could not be reached (the outcomes stay unposted for the next settle)."""

    posted: bool
    error: str | None = None
    server_down: bool = False


Poster = Callable[[list[dict[str, Any]]], PostAttempt]
"""Posts stored outcome rows (of the runs store) to the ML server's monitor, as one batch."""


class SettleReport(BaseModel):
    """What one settle did."""

    as_of: str | None = Field(default=None, description="Outcome bars on or before this date were used; None: all.")
    settled: int = Field(default=0, description="Outcomes stored by this call.")
    rewarded: int = Field(default=0, description="Bandit rewards sent (or found already taken) by this call.")
    no_decision: int = Field(default=0, description="Outcomes with no bandit decision to reward.")
    failed: int = Field(default=0, description="Rewards refused for good.")
    pending: int = Field(default=0, description="Rewards still waiting after this call (no server or it was down).")
    waiting: int = Field(default=0, description="Decisions whose outcome bar is not in the data (or after as_of).")
    outcomes: list[dict[str, Any]] = Field(default_factory=list, description="The outcomes stored by this call.")
    errors: list[str] = Field(default_factory=list, description="Decisions that could not be settled, and why.")
    server_error: str | None = Field(default=None, description="Why rewards could not be sent, when the server "
                                                               "was down.")
    posted: int = Field(default=0, description="Outcomes posted to the ML server's monitor by this call.")
    unposted: int = Field(default=0, description="Outcomes still waiting to be posted to the monitor after this "
                                                 "call (no server, or it was down).")
    monitor_error: str | None = Field(default=None, description="Why outcomes could not be posted to the monitor.")

    def summary(self) -> str:
        """One line: what was settled and rewarded, and what waits."""
        bound = f" (outcome bars up to {self.as_of})" if self.as_of else ""
        text = (f"outcomes{bound}: {self.settled} settled, {self.rewarded} rewarded, {self.pending} reward(s) "
                f"pending, {self.waiting} decision(s) waiting for their outcome bar")
        if self.no_decision or self.failed:
            text += f", {self.no_decision} without a bandit decision, {self.failed} reward(s) refused"
        if self.server_error:
            text += f"; rewards not sent: {self.server_error}"
        if self.posted or self.unposted:
            text += f"; {self.posted} outcome(s) posted to the monitor, {self.unposted} waiting to be posted"
        return text


def bars_from_settings(settings: Settings) -> Callable[[str], OHLCV]:
    """Loads a symbol's bars as the tools do (bundled series, the data folder, a file), once per symbol."""
    from quantcrew.data.symbols import load_symbol

    cache: dict[str, OHLCV] = {}

    def bars_for(symbol: str) -> OHLCV:
        if symbol not in cache:
            cache[symbol] = load_symbol(symbol, data_dir=settings.data.data_dir,
                                        max_gap_days=settings.data.max_gap_days)
        return cache[symbol]

    return bars_for


class _BanditRewarder:
    """A :data:`Rewarder` that knows its client, so that :func:`settle` posts outcomes to the same server."""

    def __init__(self, client: MLClient, send: Rewarder) -> None:
        self.client = client
        self._send = send
        self.poster: Poster = monitor_poster(client)

    def __call__(self, decision_id: str, value: float) -> RewardAttempt:
        return self._send(decision_id, value)


def bandit_rewarder(client: MLClient) -> Rewarder:
    """Rewards through the ML server's bandit: a 409 "already rewarded" counts as rewarded, a 404 (decision or
    bandit unknown) is ``no_decision``, a server fault leaves the reward pending, any other refusal fails it.

    :func:`settle` given this rewarder also posts the outcomes to the same server's monitor."""
    from quantcrew.ml_server.schemas.bandit import BanditRewardRequest
    from quantcrew.tools.errors import Conflict, MLClientError, NotFound

    def reward(decision_id: str, value: float) -> RewardAttempt:
        try:
            client.bandit_reward(BanditRewardRequest(decision_id=decision_id, reward=value))
        except Conflict as exc:
            if _already_rewarded(exc.message, exc.details):
                return RewardAttempt("rewarded", f"already rewarded: {exc.message}")
            return RewardAttempt("failed", exc.message)
        except NotFound as exc:
            return RewardAttempt("no_decision", exc.message)
        except MLClientError as exc:
            if exc.server_fault:
                return RewardAttempt("pending", str(exc), server_down=True)
            return RewardAttempt("failed", str(exc))
        return RewardAttempt("rewarded")

    return _BanditRewarder(client, reward)


def outcome_wire(row: dict[str, Any]) -> dict[str, Any]:
    """A stored outcome row as the monitor takes it (``POST /v1/monitor/outcomes``).

    ``outcome_id`` is ``<decision id, else run id>:<symbol>``; ``as_of`` the decision's bar; the
    realised return ``r`` of the next bar; ``position`` the decision's final target.
    """
    return {"outcome_id": f"{row.get('decision_id') or row['run_id']}:{row['symbol']}", "subject": row["symbol"],
            "as_of": row["decision_date"], "realised_return": float(row["r"]), "horizon_bars": 1,
            "position": float(row["target"])}


def monitor_poster(client: MLClient) -> Poster:
    """Posts outcomes to the ML server's monitor: a server fault leaves them unposted (the next settle posts
    them); a refusal (422, 409: the id is known with other values) is reported with the server's words."""
    from quantcrew.ml_server.schemas.monitor import OutcomeBatch
    from quantcrew.tools.errors import MLClientError

    def post(rows: list[dict[str, Any]]) -> PostAttempt:
        try:
            client.monitor_outcomes(OutcomeBatch.model_validate({"outcomes": [outcome_wire(r) for r in rows]}))
        except MLClientError as exc:
            return PostAttempt(False, str(exc), server_down=exc.server_fault)
        except ValueError as exc:  # a row the wire contract refuses (a return beyond its bounds)
            return PostAttempt(False, str(exc))
        return PostAttempt(True)

    return post


def post_outcomes(store: RunsStore, post: Poster, *, as_of: str | None = None, batch: int = 500,
                  report: SettleReport | None = None) -> SettleReport:
    """Post every stored outcome the monitor has not taken yet (outcome bar on or before ``as_of``).

    A server that is down stops the round (``report.monitor_error``); the outcomes stay unposted for the
    next settle. A batch the server refuses is posted again one outcome at a time, and each one refused is
    marked ``refused`` with the reason (it would be refused again).
    """
    report = report if report is not None else SettleReport(as_of=as_of)
    while True:
        rows = store.unposted_outcomes(as_of, limit=batch)
        if not rows:
            break
        attempt = post(rows)
        if attempt.server_down:
            report.monitor_error = attempt.error or "the ML server could not be reached"
            break
        if attempt.posted:
            report.posted += store.mark_posted([(r["run_id"], r["symbol"]) for r in rows])
            continue
        for row in rows:  # one of them is refused: find which
            one = post([row])
            if one.server_down:
                report.monitor_error = one.error or "the ML server could not be reached"
                break
            key = [(row["run_id"], row["symbol"])]
            if one.posted:
                report.posted += store.mark_posted(key)
            else:
                store.mark_posted(key, status="refused", error=one.error)
                report.errors.append(f"run {row['run_id']} {row['symbol']}: the monitor refused the outcome: "
                                     f"{one.error}")
        if report.monitor_error is not None:
            break
    report.unposted = store.unposted_count(as_of)
    return report


def _already_rewarded(message: str, details: Any) -> bool:
    if isinstance(details, list) and any(isinstance(d, dict) and d.get("msg") == "already rewarded"
                                         for d in details):
        return True
    return "already rewarded" in message


def outcome_of(decision: dict[str, Any], symbol_decision: dict[str, Any], bars: OHLCV, *,
               as_of: str | None = None, fallback_date: str | None = None) -> dict[str, Any] | str:
    """The outcome of one symbol's decision, or a sentence saying why it has none yet.

    Args:
        decision: The stored decision (JSON of :class:`~quantcrew.crew.decision.Decision`).
        symbol_decision: Its entry for the symbol.
        bars: The symbol's bars.
        as_of: Only an outcome bar on or before this date counts (None: any bar in the data).
        fallback_date: The decision's date when the decision names none (the run's end date).

    Returns:
        The outcome's columns (without run id and reward status), or, when the outcome bar is not
        known, ``"pending: outcome bar after <date> not in the data yet"`` (or after ``as_of``).

    Raises:
        ValueError: the decision has no date, or the data has no bar on or before it.
    """
    date = _day(symbol_decision.get("as_of")) or _day(decision.get("as_of")) or _day(fallback_date)
    if date is None:
        raise ValueError("the decision names no as-of date, so its outcome bar is unknown")
    days = bars.timestamps.astype("datetime64[D]")
    t = int(np.searchsorted(days, np.datetime64(date, "D"), "right")) - 1
    if t < 0:
        raise ValueError(f"the data of {bars.symbol} has no bar on or before the decision's date {date}")
    if t + 1 >= len(bars):
        return f"pending: outcome bar after {date} not in the data yet"
    outcome_date = str(days[t + 1])
    if as_of is not None and outcome_date > as_of[:10]:
        return f"pending: outcome bar after {date} ({outcome_date}) lies after the as-of date {as_of[:10]}"
    close, after = float(bars.close[t]), float(bars.close[t + 1])
    if not (math.isfinite(close) and math.isfinite(after) and close > 0.0):
        raise ValueError(f"the closes of {bars.symbol} on {days[t]} and {outcome_date} give no return")
    r = after / close - 1.0
    target = float(symbol_decision["target_position"])
    followed = symbol_decision.get("followed")
    agent = symbol_decision.get("chosen_agent") or (followed if followed not in (None, "consensus") else None)
    agent_target = symbol_decision.get("agent_target")
    if agent_target is None and agent is not None and followed == agent:
        agent_target = symbol_decision.get("conviction")  # a decision stored before agent_target existed
    agent_target = None if agent_target is None else float(agent_target)
    return {"decision_date": date, "outcome_date": outcome_date, "close": close, "outcome_close": after, "r": r,
            "target": target, "decision_return": target * r, "agent": agent, "agent_target": agent_target,
            "agent_return": agent_target * r if agent_target is not None else None,
            "decision_id": symbol_decision.get("decision_id")}


def _day(value: Any) -> str | None:
    text = str(value or "")[:10]
    return text if len(text) == 10 else None


def _reward_status(outcome: dict[str, Any]) -> tuple[RewardStatus, str | None]:
    if outcome["decision_id"] is None:
        return "no_decision", "no bandit decision to reward (the choice was a fallback's, or none was made)"
    if outcome["agent_return"] is None:
        return "failed", "the chosen agent gave no target, so following it earned nothing to reward"
    return "pending", None


def record_outcomes(store: RunsStore, bars_for: Callable[[str], OHLCV], *, as_of: str | None = None,
                    claim: str | None = None, report: SettleReport | None = None) -> SettleReport:
    """Store the outcome of every stored decision whose outcome bar is known (and on or before ``as_of``).

    Args:
        store: The runs store.
        bars_for: The bars of a symbol (e.g. :func:`bars_from_settings`).
        as_of: Only outcome bars on or before this date (YYYY-MM-DD) are used; None: every bar in the data.
        claim: Store new rows claimed by this caller (it will send their rewards).
        report: Add to this report instead of a new one.
    """
    report = report if report is not None else SettleReport(as_of=as_of)
    failed_symbols: dict[str, str] = {}
    for run in store.unsettled_decisions():
        decision = run["decision"]
        for sd in decision.get("decisions") or []:
            symbol = str(sd.get("symbol") or "")
            if not symbol or symbol in run["settled_symbols"]:
                continue
            if symbol not in failed_symbols:
                try:
                    bars = bars_for(symbol)
                except Exception as exc:  # unreadable data: every decision on it waits, one note per symbol
                    failed_symbols[symbol] = f"{type(exc).__name__}: {exc}"
                    report.errors.append(f"{symbol}: its data could not be read: {failed_symbols[symbol]}")
            if symbol in failed_symbols:
                report.waiting += 1
                continue
            try:
                found = outcome_of(decision, sd, bars, as_of=as_of, fallback_date=run["inputs"].get("end_date"))
            except (ValueError, KeyError, TypeError) as exc:
                report.errors.append(f"run {run['run_id']} {symbol}: {exc}")
                continue
            if isinstance(found, str):
                report.waiting += 1
                continue
            status, error = _reward_status(found)
            row = {"run_id": run["run_id"], "symbol": symbol, **found, "reward_status": status,
                   "reward_error": error}
            if store.add_outcome(row, claim=claim if status == "pending" else None):
                report.settled += 1
                report.no_decision += status == "no_decision"
                report.failed += status == "failed"
                report.outcomes.append(row)
    return report


def send_rewards(store: RunsStore, reward: Rewarder, *, as_of: str | None = None, token: str | None = None,
                 report: SettleReport | None = None) -> SettleReport:
    """Send every pending reward (outcome bar on or before ``as_of``) this caller can claim, once each.

    A server that is down stops the round: the claimed rewards stay pending for the next settle.
    """
    report = report if report is not None else SettleReport(as_of=as_of)
    token = token or uuid.uuid4().hex
    claimed = store.claim_rewards(token, as_of=as_of)
    try:
        for row in claimed:
            if report.server_error is not None:
                break  # the server is down: the rest stays pending (released below)
            attempt = reward(str(row["decision_id"]), float(row["agent_return"]))
            store.finish_reward(row["run_id"], row["symbol"], token, status=attempt.status, error=attempt.error)
            if attempt.server_down:
                report.server_error = attempt.error or "the ML server could not be reached"
            report.rewarded += attempt.status == "rewarded"
            report.no_decision += attempt.status == "no_decision"
            report.failed += attempt.status == "failed"
    finally:
        store.release_claims(token)
    report.pending = store.pending_rewards(as_of)
    return report


def settle(store: RunsStore, bars_for: Callable[[str], OHLCV], *, as_of: str | None = None,
           reward: Rewarder | None = None, post: Poster | None = None) -> SettleReport:
    """Store the outcome of every decision whose outcome bar is known, then reward the bandit once for each.

    Args:
        store: The runs store.
        bars_for: The bars of a symbol.
        as_of: Only outcome bars on or before this date count, for storing and for rewarding; None: every bar
            in the data.
        reward: Sends one reward (e.g. :func:`bandit_rewarder`); None stores the outcomes and leaves their
            rewards pending.
        post: Posts outcomes to the monitor (e.g. :func:`monitor_poster`); default the rewarder's server's
            (a :func:`bandit_rewarder`), else none: the outcomes wait unposted. A server that could not
            take them sets ``server_error`` too, so the run is reported degraded as for pending rewards.

    Returns:
        What was settled, rewarded, left pending and still waiting.
    """
    token = uuid.uuid4().hex if reward is not None else None
    report = record_outcomes(store, bars_for, as_of=as_of, claim=token)
    if reward is None:
        report.pending = store.pending_rewards(as_of)
    else:
        send_rewards(store, reward, as_of=as_of, token=token, report=report)
    post = post if post is not None else getattr(reward, "poster", None)
    if post is None:
        report.unposted = store.unposted_count(as_of)
        return report
    post_outcomes(store, post, as_of=as_of, report=report)
    if report.monitor_error is not None and report.server_error is None:
        report.server_error = f"outcomes not posted to the monitor: {report.monitor_error}"
    return report
