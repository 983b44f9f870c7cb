"""AgentSelectionTool: which specialised agent to follow in the current regime (ML server's bandit family).

A bandit on the server keeps, per market regime, what following each agent (conservative,
aggressive, balanced, contrarian) has earned. Selecting returns the agent to follow and a
``decision_id``; once the outcome of that choice is known, the same tool records it
(``decision_id`` + ``reward``) and the bandit learns. With the server down the tool falls back
to a round-robin over the agents (no learning) and never pretends a reward was recorded.

A selection is deterministic by default (the server's mode ``exploit``): the agent with the
highest mean reward in the regime, the same one for the same stored bandit, with the evidence
in plain words. ``explore=True`` asks for the policy's random draw instead; exploration belongs
where the bandit learns (its warm-start replay, rewarded outcomes), not in a live decision.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, field_validator

from quantcrew.data.errors import DataError
from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.symbols import load_symbol
from quantcrew.ml_server.schemas.bandit import (
    BANDIT_POLICIES,
    DEFAULT_ARMS,
    DEFAULT_REWARD_RANGE,
    ArmEstimate,
    BanditCreateRequest,
    BanditDecision,
    BanditInfo,
    BanditRewardRequest,
    BanditRewardResponse,
    BanditSelectRequest,
)
from quantcrew.ml_server.schemas.regime import REGIME_LABELS, RegimeLabelRequest, RegimeLabelResponse
from quantcrew.tools.arguments import ToolInputError, iso_date, parse_floats
from quantcrew.tools.base import QuantTool, ToolResult
from quantcrew.tools.calls import CallFlow, call
from quantcrew.tools.endpoints import BANDIT_CREATE, BANDIT_REWARD, BANDIT_SELECT, REGIME_LABEL
from quantcrew.tools.errors import Conflict, NotFound
from quantcrew.tools.fallbacks import regime_fallback

__all__ = ["REWARD_RANGE", "AgentSelectionInput", "AgentSelectionTool"]

REWARD_RANGE: tuple[float, float] = DEFAULT_REWARD_RANGE
"""Reward span a bandit created by the tool maps onto [0, 1]: a daily return of -5% .. +5%."""

_BANDIT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MIN_REGIME_BARS = 60


class AgentSelectionInput(BaseModel):
    """What an agent says to choose whom to follow, or to report how a past choice did."""

    symbol: str = Field(
        default="SP500",
        description="Market the choice is for: a bundled series (SP500, NASDAQ, VIX, CRUDE), a symbol with a "
                    "CSV/Parquet file in the data folder, or a file path. Used to detect the regime when "
                    "regime is 'auto'.",
    )
    regime: str = Field(
        default="auto",
        description="Current market regime: bull, bear, sideways or volatile; 'auto' asks the ML server's "
                    "regime model (filtered HMM) for the symbol's current regime.",
    )
    lookback: int = Field(default=750, ge=_MIN_REGIME_BARS, le=20_000,
                          description="Daily bars the regime is detected from when regime is 'auto'.")
    end_date: str | None = Field(
        default=None, description="Detect the regime as of this date (YYYY-MM-DD); empty means the latest bar.",
    )
    bandit: str = Field(default="meta-orchestrator",
                        description="Name of the bandit that learns whom to follow (created on first use).")
    policy: str = Field(
        default="discounted_thompson",
        description=f"Bandit policy used when the bandit is created: {', '.join(BANDIT_POLICIES)}.",
    )
    explore: bool = Field(
        default=False,
        description="False (default): follow the agent with the highest mean reward in the regime, the same one "
                    "for the same bandit state. True: let the bandit draw (explore), as it does while it learns.",
    )
    decision_id: str | None = Field(
        default=None,
        description="To record an outcome: the decision_id a previous selection returned (give reward too). "
                    "Leave empty to choose an agent.",
    )
    reward: float | str | None = Field(
        default=None,
        description="To record an outcome: what following the chosen agent earned since that decision, as a "
                    "return fraction (0.004 or '0.4%' for +0.4%). Give decision_id too.",
    )

    @field_validator("end_date")
    @classmethod
    def _end_date(cls, v: str | None) -> str | None:
        return iso_date(v)


@dataclass
class _Prepared:
    mode: Literal["select", "reward"]
    bandit: str
    policy: str
    explore: bool = False
    regime: str | None = None  # the regime given; None: detect it ("auto")
    bars: OHLCV | None = None
    regime_request: RegimeLabelRequest | None = None
    reward: BanditRewardRequest | None = None
    server_regime: RegimeLabelResponse | None = None  # kept when detected, even if a later call fails


@dataclass
class _Outcome:
    decision: BanditDecision | None = None
    recorded: BanditRewardResponse | None = None
    created: BanditInfo | None = None
    unknown_decision: str | None = None  # the server's sentence for a decision id it does not know
    already_rewarded: str | None = None  # the server's sentence for a decision rewarded before
    notes: list[str] = field(default_factory=list)


class AgentSelectionTool(QuantTool):
    """Chooses which specialised agent to follow in the current regime, and records how choices did."""

    name: str = "agent_selection"
    description: str = (
        "Choose which specialised trading agent (conservative, aggressive, balanced or contrarian) to follow in "
        "the current market regime, with a multi-armed bandit on the ML server that learns from past outcomes "
        "(one bandit per regime). Returns the chosen agent, why, every agent's estimated reward, uncertainty and "
        "pulls, the estimated regret, and a decision_id. Later, call it again with that decision_id and the "
        "reward (the return earned by following the choice) to record the outcome and see the updated estimates."
    )
    args_schema: type[BaseModel] = AgentSelectionInput

    _turns: dict[str, int] = PrivateAttr(default_factory=dict)  # round-robin position per regime (fallback)

    def _prepare(self, arguments: dict[str, Any]) -> _Prepared:
        bandit = str(arguments.get("bandit") or "meta-orchestrator").strip()
        if not _BANDIT_NAME.match(bandit):
            raise ToolInputError(f"bandit: '{bandit}' is not a usable name; use letters, digits, '.', '_' or '-' "
                                 "(at most 64), e.g. 'meta-orchestrator'")
        policy = str(arguments.get("policy") or "discounted_thompson").strip().lower()
        if policy not in BANDIT_POLICIES:
            raise ToolInputError(f"policy: unknown '{policy}'; choose among {', '.join(BANDIT_POLICIES)}")
        decision_id = str(arguments.get("decision_id") or "").strip() or None
        rewards = parse_floats(arguments.get("reward"), field="reward")
        if rewards is not None and len(rewards) != 1:
            raise ToolInputError(f"reward: give one number (the return earned), got {len(rewards)}")
        if (decision_id is None) != (rewards is None):
            given, missing = ("decision_id", "reward") if decision_id else ("reward", "decision_id")
            raise ToolInputError(
                f"{given} was given without {missing}: give both to record the outcome of a past choice "
                "(decision_id from an earlier selection, reward = the return it earned), or neither to choose "
                "an agent")
        if decision_id is not None and rewards is not None:
            if not math.isfinite(rewards[0]):
                raise ToolInputError(f"reward must be a finite number, got {rewards[0]}")
            return _Prepared("reward", bandit, policy,
                             reward=BanditRewardRequest(decision_id=decision_id, reward=rewards[0]))
        regime = str(arguments.get("regime") or "auto").strip().lower()
        if regime != "auto" and regime not in REGIME_LABELS:
            raise ToolInputError(f"regime: unknown '{regime}'; choose 'auto' or one of {', '.join(REGIME_LABELS)}")
        explore = _flag(arguments.get("explore"), "explore")
        if regime != "auto":
            return _Prepared("select", bandit, policy, explore=explore, regime=regime)
        data = self._settings().data
        bars = load_symbol(str(arguments.get("symbol") or "SP500"), data_dir=data.data_dir,
                           max_gap_days=data.max_gap_days)
        if arguments.get("end_date"):
            bars = bars.between(None, arguments["end_date"])
        lookback = int(arguments.get("lookback") or 750)
        bars = bars.tail(lookback + 1) if len(bars) else bars  # +1: the first bar only seeds the first return
        if len(bars) < _MIN_REGIME_BARS:
            raise DataError(bars.symbol, f"only {len(bars)} bars up to the end date; detecting the regime needs "
                                         f"{_MIN_REGIME_BARS} (or pass regime=bull/bear/sideways/volatile)")
        request = RegimeLabelRequest.model_validate(
            {"data": to_payload_dict(bars), "n_states": None, "include_probabilities": False})
        return _Prepared("select", bandit, policy, explore=explore, bars=bars, regime_request=request)

    # -- the server calls --------------------------------------------------------------------------

    def _calls(self, prepared: _Prepared) -> CallFlow[_Outcome]:
        if prepared.reward is not None:
            try:
                return _Outcome(recorded=(yield from call(BANDIT_REWARD, prepared.reward)))
            except NotFound as exc:
                return _Outcome(unknown_decision=exc.message)
            except Conflict as exc:
                return _Outcome(already_rewarded=exc.message)
        if prepared.regime_request is not None:
            # kept on prepared: a fallback after a later failure still reports the server's regime
            prepared.server_regime = yield from call(REGIME_LABEL, prepared.regime_request)
        select = _select_request(prepared)
        try:
            return _Outcome(decision=(yield from call(BANDIT_SELECT, select)))
        except NotFound:
            pass  # first use: create the bandit, then choose
        outcome = _Outcome()
        try:
            outcome.created = yield from call(BANDIT_CREATE, _create_request(prepared))
        except Conflict:
            outcome.notes.append("another caller created the bandit at the same moment")
        outcome.decision = yield from call(BANDIT_SELECT, select)
        return outcome

    # -- answers ---------------------------------------------------------------------------------

    def _answer(self, arguments: dict[str, Any], prepared: _Prepared, reply: _Outcome) -> ToolResult:
        if reply.unknown_decision is not None:
            assert prepared.reward is not None
            text = (f"{self.name}: decision '{prepared.reward.decision_id}' is unknown to the ML server "
                    f"({reply.unknown_decision}). Nothing was recorded: use the decision_id that an earlier "
                    "selection returned.")
            return ToolResult(tool=self.name, ok=False, summary=text, arguments=arguments,
                              data={"mode": "reward", "recorded": False, "decision_id": prepared.reward.decision_id})
        if reply.already_rewarded is not None:
            assert prepared.reward is not None
            text = (f"{self.name}: decision '{prepared.reward.decision_id}' already has its reward "
                    f"({reply.already_rewarded}). Nothing changed: each decision is rewarded once.")
            return ToolResult(tool=self.name, ok=False, summary=text, arguments=arguments,
                              data={"mode": "reward", "recorded": False, "decision_id": prepared.reward.decision_id})
        if reply.recorded is not None:
            return self._recorded(arguments, reply.recorded)
        assert reply.decision is not None
        return self._selected(arguments, prepared, reply)

    def _selected(self, arguments: dict[str, Any], prepared: _Prepared, reply: _Outcome) -> ToolResult:
        d = reply.decision
        assert d is not None
        source, regime_text, probability = _regime_source(prepared)
        created = ""
        if reply.created is not None:
            lo, hi = reply.created.params.reward_range
            created = (f" Created bandit '{reply.created.name}' now ({reply.created.policy} over "
                       f"{', '.join(reply.created.arms)}; rewards {lo:+g}..{hi:+g} map to 0..1).")
        data: dict[str, Any] = {
            "mode": "select", "selection": d.mode, "agent": d.arm, "decision_id": d.decision_id, "regime": d.regime,
            "regime_source": source, "regime_probability": probability, "symbol": _symbol(prepared),
            "bandit": d.bandit_name, "bandit_id": d.bandit_id, "policy": d.policy, "reason": d.reason,
            "arms": [a.model_dump(mode="json") for a in d.explanation], "pseudo_regret": d.pseudo_regret,
            "pulls": d.pulls, "propensity": d.propensity, "created": reply.created is not None,
            "provenance": {"model_id": d.model_id, "method_used": d.method_used, "data_hash": d.data_hash,
                           "seed": d.seed, "as_of": d.as_of.isoformat() if d.as_of else None},
            "degraded": False, "notes": reply.notes,
        }
        how = ("the bandit's draw (explore)" if d.mode == "explore"
               else "the best mean reward, deterministic for this bandit state")
        summary = (
            f"Follow the {d.arm.upper()} agent in the {d.regime.upper()} regime ({regime_text}), chosen by {how}. "
            f"Why: {d.reason}. "
            f"decision_id: {d.decision_id} - keep it: once the outcome is known, call agent_selection with "
            f"decision_id={d.decision_id} and reward=<return earned by following {d.arm}> so the bandit learns. "
            f"Agents (estimate +/- uncertainty, pulls): {_arms_text(d.explanation)}. Estimated regret so far "
            f"{d.pseudo_regret:.4g} over {d.pulls} reward(s) in this regime. Bandit '{d.bandit_name}' "
            f"({d.policy}, {d.bandit_id}).{created} degraded: false"
        )
        return ToolResult(tool=self.name, ok=True, summary=summary, arguments=arguments, data=data)

    def _recorded(self, arguments: dict[str, Any], r: BanditRewardResponse) -> ToolResult:
        data: dict[str, Any] = {
            "mode": "reward", "recorded": True, "decision_id": r.decision_id, "agent": r.arm, "regime": r.regime,
            "reward": r.reward, "clipped": r.clipped, "bandit_id": r.bandit_id,
            "arms": [a.model_dump(mode="json") for a in r.explanation], "pseudo_regret": r.pseudo_regret,
            "pulls": r.pulls,
            "provenance": {"model_id": r.model_id, "method_used": r.method_used, "data_hash": r.data_hash,
                           "seed": r.seed, "as_of": r.as_of.isoformat() if r.as_of else None},
            "degraded": False,
        }
        clipped = " (outside the bandit's reward range: clipped to it)" if r.clipped else ""
        summary = (
            f"Recorded reward {r.reward:+.4g}{clipped} for decision {r.decision_id} (followed {r.arm} in the "
            f"{r.regime.upper()} regime, bandit {r.bandit_id}, {r.method_used}). Updated estimates (estimate +/- "
            f"uncertainty, pulls): {_arms_text(r.explanation)}. The {r.regime} regime has {r.pulls} reward(s); "
            f"estimated regret {r.pseudo_regret:.4g}. degraded: false"
        )
        return ToolResult(tool=self.name, ok=True, summary=summary, arguments=arguments, data=data)

    def _fallback(self, arguments: dict[str, Any], prepared: _Prepared, reason: str) -> ToolResult:
        if prepared.reward is not None:
            r = prepared.reward
            summary = (
                f"Reward {r.reward:+.4g} for decision {r.decision_id} was NOT recorded: the ML server cannot be "
                f"reached ({reason}). Keep the decision_id and the reward and report them again when the server "
                "is back. degraded: true"
            )
            return ToolResult(tool=self.name, ok=False, degraded=True, degraded_reason=reason, summary=summary,
                              arguments=arguments, data={"mode": "reward", "recorded": False,
                                                         "decision_id": r.decision_id, "reward": r.reward,
                                                         "degraded": True})
        source, regime_text, probability = _regime_source(prepared)
        regime = prepared.regime
        if regime is None:
            regime = (prepared.server_regime.current_label if prepared.server_regime is not None
                      else str(regime_fallback(prepared.bars)["current_label"]) if prepared.bars is not None
                      else "sideways")
        turn = self._turns.get(regime, 0)
        self._turns[regime] = turn + 1
        agent = DEFAULT_ARMS[turn % len(DEFAULT_ARMS)]
        note = "ML server unavailable: round-robin choice, no learning"
        data: dict[str, Any] = {
            "mode": "select", "selection": "round_robin", "agent": agent, "decision_id": None, "regime": regime,
            "regime_source": source,
            "regime_probability": probability, "symbol": _symbol(prepared), "bandit": prepared.bandit,
            "policy": "round_robin", "method_used": "fallback_round_robin", "turn": turn,
            "reason": f"round-robin turn {turn + 1} in regime '{regime}' (order: {', '.join(DEFAULT_ARMS)})",
            "degraded": True,
        }
        summary = (
            f"Follow the {agent.upper()} agent in the {regime.upper()} regime ({regime_text}): round-robin turn "
            f"{turn + 1} over {', '.join(DEFAULT_ARMS)}, not a learned choice. No decision_id: this choice cannot "
            f"be rewarded, and nothing is learned until the server is back. degraded: true ({note}; cause: "
            f"{reason})"
        )
        return ToolResult(tool=self.name, ok=True, degraded=True, degraded_reason=f"{note} ({reason})",
                          summary=summary, arguments=arguments, data=data)


def _select_request(prepared: _Prepared) -> BanditSelectRequest:
    regime = prepared.regime
    if regime is None:
        assert prepared.server_regime is not None
        regime = prepared.server_regime.current_label
    return BanditSelectRequest(bandit=prepared.bandit, regime=regime,
                               mode="explore" if prepared.explore else "exploit")


def _flag(value: Any, name: str) -> bool:
    """A yes/no argument as an agent may write it (true, "yes", 1, ...)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off", ""):
        return False
    raise ToolInputError(f"{name}: '{value}' is not yes or no; give true or false")


def _create_request(prepared: _Prepared) -> BanditCreateRequest:
    return BanditCreateRequest.model_validate({
        "name": prepared.bandit, "policy": prepared.policy, "arms": list(DEFAULT_ARMS),
        "params": {"reward_range": list(REWARD_RANGE)},
    })


def _regime_source(prepared: _Prepared) -> tuple[str, str, float | None]:
    """(source, text, probability) of the regime a selection uses."""
    if prepared.regime is not None:
        return "given", "regime as given", None
    reply = prepared.server_regime
    if reply is None:
        return "rule-based estimate", "rule-based regime estimate", None
    as_of = reply.as_of.date().isoformat() if reply.as_of else "?"
    method = reply.method_used + (" fallback" if reply.fallback else "")
    return ("server regime model", f"from the ML server's {method} regime model, filtered probability "
            f"{reply.current_probability:.2f}, as of {as_of}", float(reply.current_probability))


def _symbol(prepared: _Prepared) -> str | None:
    return prepared.bars.symbol if prepared.bars is not None else None


def _arms_text(arms: list[ArmEstimate]) -> str:
    parts = []
    for a in arms:
        if a.estimate is None:
            parts.append(f"{a.arm} no estimate ({a.raw_pulls} pulls)")
            continue
        sd = f" +/- {a.uncertainty:.3g}" if a.uncertainty is not None else ""
        parts.append(f"{a.arm} {a.estimate:.3g}{sd} ({a.pulls:.3g} pulls)")
    return "; ".join(parts)
