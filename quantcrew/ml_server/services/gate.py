"""Quality gates: may a trained model answer for the crew? One module, the same measure every time.

Each gate compares a model with the baseline it must beat, on bars it was not trained on, and
returns a :class:`~quantcrew.ml_server.schemas.gate.GateVerdict` (recorded with the model in the
registry metadata under ``"gate"``). These are pure functions of arrays: no registry, no I/O.

* :func:`rl_policy_gate`: an RL policy's returns after costs against buy-and-hold's and flat's
  (Sharpe above both, over every bar judged), a position held on at least :data:`MIN_HELD_SHARE`
  of the bars, and the agent's specialty better than buy-and-hold's IN ITS OWN REGIME: measured
  (:func:`regime_measure`) over the bars whose regime label is one of the agent's, for the
  policy and for buy-and-hold alike. A policy that never trades has a small drawdown but a
  Sharpe of 0 and no bars held: it fails.
* :func:`ensemble_gate`: the ensemble's mean log loss below the class-frequency forecast's
  (the training span's class shares, every row), and a one-sided Diebold-Mariano test on the
  per-row loss differences, its variance Newey-West with ``horizon`` lags (overlapping
  ``horizon``-bar labels make the differences serially correlated), p < :data:`P_VALUE_MAX`.
  The Brier scores of both are reported; they do not decide.
* :func:`execution_gate`: the Sharpe of the execution network's sized returns at least that of
  the rule sizing on the same signals.
* :func:`challenger_gate`: a challenger version against the champion it would replace, on the
  per-row losses of both on the SAME rows (recent traffic or a holdout). The paired test is the
  one-sided Diebold-Mariano test on the loss differences ``challenger - champion`` with a
  Newey-West variance (losses of consecutive bars are serially correlated; a paired t-test
  would overstate the evidence), lags ``floor(n ** (1/3))`` unless given. It passes when there
  are at least ``min_samples`` pairs, the challenger's mean loss is lower, and p < ``alpha``.
  Fewer pairs: the verdict is "insufficient" (:func:`challenger_decision`), never a promotion.

The RL and execution gates report the 90% paired block-bootstrap interval of the Sharpe
difference (:func:`quantcrew.quant.bootstrap.block_bootstrap_sharpe_diff`) beside the verdict;
the interval does not decide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.schemas.gate import GateCheck, GateKind, GateVerdict
from quantcrew.quant.bootstrap import block_bootstrap_sharpe_diff
from quantcrew.quant.calibration import brier_score
from quantcrew.quant.performance import max_drawdown, sharpe_ratio

__all__ = [
    "HELD_POSITION",
    "INTERVAL_LEVEL",
    "MIN_HELD_SHARE",
    "MIN_REGIME_BARS",
    "P_VALUE_MAX",
    "challenger_decision",
    "challenger_gate",
    "check_text",
    "checks_text",
    "diebold_mariano",
    "ensemble_gate",
    "execution_gate",
    "failed_checks_text",
    "regime_measure",
    "rl_policy_gate",
]

FloatArray = npt.NDArray[np.float64]

MIN_HELD_SHARE = 0.10
"""An RL policy must hold a position on at least this share of the bars judged."""
HELD_POSITION = 0.05
"""A bar counts as held when ``|position|`` exceeds this."""
MIN_REGIME_BARS = 20
"""A specialty measured in a regime needs at least this many bars of it in the span judged (else: not measurable)."""
P_VALUE_MAX = 0.05
"""The ensemble's Diebold-Mariano p-value must be below this."""
INTERVAL_LEVEL = 0.90
"""Coverage of the bootstrap interval reported beside the RL and execution verdicts."""

SpecialtyMeasure = Literal["max_drawdown", "total_return", "sharpe"]
_LOSS_FLOOR = 1e-12  # probabilities are clipped here before the log, as the calibration module does
_NORMAL = NormalDist()


# -- RL policies -----------------------------------------------------------------------------------


def regime_measure(returns: npt.ArrayLike, labels: Sequence[str] | None, regimes: Sequence[str] | None,
                   measure: SpecialtyMeasure, periods_per_year: int) -> tuple[float | None, int]:
    """A specialty measure of ``returns`` over the bars of some regimes, and how many bars that is.

    The bars kept are those whose label is in ``regimes`` (every bar when ``regimes`` is None),
    taken in order and compounded as one sub-series: ``total_return`` is ``prod(1 + r) - 1`` over
    them, ``max_drawdown`` the largest fall of that sub-series' equity curve from its running peak
    (starting at 1), ``sharpe`` their annualised Sharpe ratio.

    Returns:
        ``(value, n_bars)``; the value is None when fewer than :data:`MIN_REGIME_BARS` bars are
        kept (the measure would say nothing about the regime).

    Raises:
        ValueError: non-finite returns, labels of another length, an unknown measure.
    """
    r = _series(returns, "returns")
    if regimes is None:
        kept = r
    else:
        if labels is None or len(labels) != r.shape[0]:
            raise ValueError(f"labels must give one regime per return ({r.shape[0]}), got "
                             f"{'none' if labels is None else len(labels)}")
        wanted = set(regimes)
        kept = r[np.fromiter((str(x) in wanted for x in labels), dtype=bool, count=r.shape[0])]
    n = int(kept.shape[0])
    if n < MIN_REGIME_BARS:
        return None, n
    if measure == "total_return":
        return float(np.prod(1.0 + kept) - 1.0), n
    if measure == "max_drawdown":
        return max_drawdown(np.cumprod(1.0 + kept), initial=1.0), n
    if measure == "sharpe":
        return sharpe_ratio(kept, periods_per_year), n
    raise ValueError(f"unknown specialty measure {measure!r}; valid: max_drawdown, total_return, sharpe")


def rl_policy_gate(
    *,
    strategy_returns: npt.ArrayLike,
    positions: npt.ArrayLike,
    buy_hold_returns: npt.ArrayLike,
    specialty: str,
    span_start: str | None,
    span_end: str | None,
    specialty_measure: SpecialtyMeasure | None = None,
    regime_labels: Sequence[str] | None = None,
    specialty_regimes: Sequence[str] | None = None,
    specialty_value: float | None = None,
    buy_hold_specialty_value: float | None = None,
    higher_is_better: bool | None = None,
    periods_per_year: int = 252,
    seed: int = 0,
    rule: str | None = None,
) -> GateVerdict:
    """Judge an RL policy on its out-of-sample bars.

    Deciding checks: the Sharpe after costs over every bar judged above buy-and-hold's and above
    flat's (0); a position held (``|p| >`` :data:`HELD_POSITION`) on at least
    :data:`MIN_HELD_SHARE` of the bars; and the agent's specialty better than buy-and-hold's.

    The specialty is judged in the agent's own regime: with ``specialty_measure`` the gate
    measures it itself (:func:`regime_measure`) over the bars whose ``regime_labels`` entry is
    one of ``specialty_regimes`` (all bars when None), for the policy's returns and
    buy-and-hold's on exactly the same bars; e.g. a conservative agent's max drawdown over the
    bear and volatile bars, a contrarian's return over the sideways bars. With fewer than
    :data:`MIN_REGIME_BARS` such bars the specialty is not measurable and the check fails: a
    specialist is kept only when it showed its specialty where it is meant to. A lower value is
    better for ``max_drawdown``, a higher one otherwise; a tie fails. Callers that measure the
    specialty themselves pass ``specialty_value``, ``buy_hold_specialty_value`` and
    ``higher_is_better`` instead.

    Args:
        strategy_returns: The policy's net return of each bar, after costs.
        positions: The position it held over each bar (same length).
        buy_hold_returns: Buy-and-hold's net return of the same bars, after the same costs.
        specialty: The agent's specialty measure in words (e.g. ``"max drawdown"``).
        span_start: First bar judged (ISO date).
        span_end: Last bar judged (ISO date).
        specialty_measure: What the gate measures as the specialty (see above).
        regime_labels: The regime label of each bar (known when its position was chosen).
        specialty_regimes: The agent's own regimes; None: every bar.
        specialty_value: The policy's specialty measure, measured by the caller; None when it
            cannot be measured on these bars: the check fails.
        buy_hold_specialty_value: Buy-and-hold's, measured by the caller on the same bars.
        higher_is_better: With caller-measured values, how "better" reads.
        periods_per_year: Bars per year of the data's calendar, to annualise the Sharpe ratios.
        seed: Seeds the bootstrap interval.
        rule: The rule that stands in for the policy when it fails, in words.

    Raises:
        ValueError: Empty, ragged or non-finite series; the specialty given both ways or neither.
    """
    r = _series(strategy_returns, "strategy_returns")
    p = _series(positions, "positions")
    bh = _series(buy_hold_returns, "buy_hold_returns")
    if not (r.shape == p.shape == bh.shape) or r.shape[0] == 0:
        raise ValueError(f"strategy_returns, positions and buy_hold_returns must be 1-D of one non-zero length, "
                         f"got {r.shape}, {p.shape}, {bh.shape}")
    measure_text = specialty
    if specialty_measure is not None:
        if specialty_value is not None or buy_hold_specialty_value is not None or higher_is_better is not None:
            raise ValueError("give specialty_measure (measured here) or the specialty values, not both")
        specialty_value, _ = regime_measure(r, regime_labels, specialty_regimes, specialty_measure,
                                            periods_per_year)
        buy_hold_specialty_value, _ = regime_measure(bh, regime_labels, specialty_regimes, specialty_measure,
                                                     periods_per_year)
        higher_is_better = specialty_measure != "max_drawdown"
        if specialty_regimes is not None:
            measure_text = f"{specialty} in {'/'.join(specialty_regimes)} regimes"
    elif higher_is_better is None:
        raise ValueError("give specialty_measure, or higher_is_better with the specialty values")
    sharpe, bh_sharpe = sharpe_ratio(r, periods_per_year), sharpe_ratio(bh, periods_per_year)
    held = float(np.mean(np.abs(p) > HELD_POSITION))
    if specialty_value is None or buy_hold_specialty_value is None:
        special_ok = False
    elif higher_is_better:
        special_ok = specialty_value > buy_hold_specialty_value
    else:
        special_ok = specialty_value < buy_hold_specialty_value
    checks = [
        GateCheck(name="sharpe_above_buy_and_hold", measure="Sharpe after costs", value=sharpe,
                  baseline="buy-and-hold", baseline_value=bh_sharpe, passed=sharpe > bh_sharpe),
        GateCheck(name="sharpe_above_flat", measure="Sharpe after costs", value=sharpe, baseline="flat",
                  baseline_value=0.0, passed=sharpe > 0.0),
        GateCheck(name="position_held", measure=f"share of bars with |position| > {HELD_POSITION:g}", value=held,
                  baseline="required share", baseline_value=MIN_HELD_SHARE, passed=held >= MIN_HELD_SHARE),
        GateCheck(name="specialty_above_buy_and_hold", measure=measure_text, value=_finite_or_none(specialty_value),
                  baseline="buy-and-hold", baseline_value=_finite_or_none(buy_hold_specialty_value),
                  passed=special_ok),
    ]
    interval = _interval(r, bh, periods_per_year, seed) if r.shape[0] >= 2 else None
    return _verdict("rl_policy", checks, interval=interval, p_value=None, span_start=span_start, span_end=span_end,
                    n=int(r.shape[0]), rule=rule)


# -- the ensemble ----------------------------------------------------------------------------------


def ensemble_gate(
    *,
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    train_frequencies: npt.ArrayLike,
    horizon: int,
    span_start: str | None,
    span_end: str | None,
    rule: str | None = None,
) -> GateVerdict:
    """Judge the ensemble's out-of-sample probabilities against the class-frequency forecast.

    Args:
        probabilities: Forecast probabilities, shape ``(n, k)``, rows summing to 1.
        labels: The realised class of each row, integers in ``[0, k)``.
        train_frequencies: Each class's share of the training rows, shape ``(k,)`` (normalised
            here; a class never seen in training gets the probability floor).
        horizon: Bars ahead each label looks: the Newey-West lag of the Diebold-Mariano test.
        span_start: First row judged (ISO date).
        span_end: Last row judged (ISO date).
        rule: The rule that stands in for the ensemble when it fails, in words.

    Raises:
        ValueError: Shapes that do not fit, labels out of range, non-finite or negative inputs.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    freq = np.asarray(train_frequencies, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] < 2 or probs.shape[1] < 2:
        raise ValueError(f"probabilities must have shape (n >= 2, k >= 2), got {probs.shape}")
    n, k = probs.shape
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must be {n} integers in [0, {k}), got shape {y.shape}, dtype {y.dtype}")
    if freq.shape != (k,) or not np.all(np.isfinite(freq)) or np.any(freq < 0) or freq.sum() <= 0:
        raise ValueError(f"train_frequencies must be {k} non-negative finite shares, not all 0, got {freq}")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError("probabilities must be finite and non-negative")
    if int(horizon) < 1:
        raise ValueError(f"horizon must be at least 1, got {horizon}")
    base = np.broadcast_to(freq / freq.sum(), probs.shape)
    rows = np.arange(n)
    loss = -np.log(np.maximum(probs[rows, y], _LOSS_FLOOR))
    base_loss = -np.log(np.maximum(base[rows, y], _LOSS_FLOOR))
    p_value = diebold_mariano(loss - base_loss, lag=int(horizon))
    mean, base_mean = float(loss.mean()), float(base_loss.mean())
    brier, base_brier = brier_score(probs, y), brier_score(np.array(base), y)
    checks = [
        GateCheck(name="log_loss_below_class_frequency", measure="mean log loss", value=mean,
                  baseline="class-frequency forecast", baseline_value=base_mean, passed=mean < base_mean),
        GateCheck(name="diebold_mariano", measure=f"one-sided Diebold-Mariano p-value (Newey-West, {int(horizon)} "
                  "lags)", value=p_value, baseline="significance level", baseline_value=P_VALUE_MAX,
                  passed=p_value < P_VALUE_MAX),
        GateCheck(name="brier_score_reported", measure="Brier score", value=brier,
                  baseline="class-frequency forecast", baseline_value=base_brier, passed=brier < base_brier),
    ]
    return _verdict("ensemble", checks, interval=None, p_value=p_value, span_start=span_start, span_end=span_end,
                    n=n, rule=rule)


def diebold_mariano(differences: npt.ArrayLike, *, lag: int) -> float:
    """One-sided Diebold-Mariano p-value that the mean loss difference is below 0 (the model better).

    ``DM = mean(d) / sqrt(lrv / n)`` with the Newey-West (Bartlett kernel) long-run variance
    ``lrv = g0 + 2 * sum_{j=1..lag} (1 - j / (lag + 1)) * g_j`` of ``d``; the p-value is
    ``Phi(DM)``. A series with no variance gives 0 when its mean is below 0, else 1.

    Raises:
        ValueError: Fewer than 2 values, or a non-finite one.
    """
    d = _series(differences, "differences")
    n = d.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 loss differences, got {n}")
    mean = float(d.mean())
    centred = d - mean
    lrv = float(centred @ centred) / n
    for j in range(1, min(int(lag), n - 1) + 1):
        lrv += 2.0 * (1.0 - j / (int(lag) + 1)) * float(centred[j:] @ centred[:-j]) / n
    if not lrv > 1e-300:
        return 0.0 if mean < 0 else 1.0
    stat = mean / math.sqrt(lrv / n)
    return float(min(max(_NORMAL.cdf(stat), 0.0), 1.0))


# -- champion against challenger -------------------------------------------------------------------


def challenger_gate(champion_losses: npt.ArrayLike, challenger_losses: npt.ArrayLike, *, min_samples: int = 30,
                    alpha: float = P_VALUE_MAX, lag: int | None = None, loss: str = "loss",
                    span_start: str | None = None, span_end: str | None = None) -> GateVerdict:
    """May the challenger replace the champion? A paired test on their losses of the same rows.

    Args:
        champion_losses: The champion's loss on each row (lower is better).
        challenger_losses: The challenger's loss on the same rows, in the same order.
        min_samples: Fewer pairs than this: the verdict fails as insufficient (no test is run).
        alpha: Level of the one-sided Diebold-Mariano test.
        lag: Newey-West lags; default ``floor(n ** (1/3))``.
        loss: The loss in words (e.g. ``"log loss of P(up)"``), for the checks.
        span_start: First row compared (ISO), when known.
        span_end: Last row compared.

    Raises:
        ValueError: Ragged or non-finite losses, ``min_samples`` below 2, ``alpha`` outside (0, 1).
    """
    a = _series(champion_losses, "champion_losses")
    b = _series(challenger_losses, "challenger_losses")
    if a.shape != b.shape:
        raise ValueError(f"champion_losses and challenger_losses must pair up row by row, got {a.shape}, {b.shape}")
    if int(min_samples) < 2:
        raise ValueError(f"min_samples must be at least 2, got {min_samples}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    n = int(a.shape[0])
    enough = GateCheck(name="enough_samples", measure="paired losses", value=float(n), baseline="required",
                       baseline_value=float(min_samples), passed=n >= int(min_samples))
    if not enough.passed:
        checks = [enough,
                  GateCheck(name="mean_loss_below_champion", measure=f"mean {loss}",
                            value=float(b.mean()) if n else None, baseline="champion",
                            baseline_value=float(a.mean()) if n else None, passed=False)]
        return GateVerdict(gate="challenger", passed=False, checks=checks, interval=None, p_value=None,
                           span_start=span_start, span_end=span_end, n=n, rule="the champion stays",
                           summary=f"insufficient: {n} paired losses, {int(min_samples)} required; the champion "
                                   "stays")
    lags = int(n ** (1.0 / 3.0)) if lag is None else int(lag)
    p_value = diebold_mariano(b - a, lag=lags)
    mine, theirs = float(b.mean()), float(a.mean())
    checks = [
        enough,
        GateCheck(name="mean_loss_below_champion", measure=f"mean {loss}", value=mine, baseline="champion",
                  baseline_value=theirs, passed=mine < theirs),
        GateCheck(name="diebold_mariano", measure=f"one-sided Diebold-Mariano p-value (Newey-West, {lags} lags)",
                  value=p_value, baseline="significance level", baseline_value=float(alpha), passed=p_value < alpha),
    ]
    return _verdict("challenger", checks, interval=None, p_value=p_value, span_start=span_start, span_end=span_end,
                    n=n, rule="the champion stays")


def challenger_decision(verdict: GateVerdict) -> Literal["promote", "reject", "insufficient"]:
    """``promote`` (passed), ``insufficient`` (too few pairs to judge) or ``reject``."""
    if verdict.passed:
        return "promote"
    enough = next((c for c in verdict.checks if c.name == "enough_samples"), None)
    return "insufficient" if enough is not None and not enough.passed else "reject"


# -- the execution network -------------------------------------------------------------------------


def execution_gate(
    *,
    sized_returns: npt.ArrayLike,
    rule_returns: npt.ArrayLike,
    span_start: str | None,
    span_end: str | None,
    periods_per_year: int = 252,
    seed: int = 0,
    rule: str | None = None,
) -> GateVerdict:
    """Judge the execution network: the Sharpe of its sized returns at least the rule sizing's.

    Args:
        sized_returns: Per-bar returns of the signals sized by the network.
        rule_returns: Per-bar returns of the same signals sized by the rule (same length).
        span_start: First bar judged (ISO date).
        span_end: Last bar judged (ISO date).
        periods_per_year: Bars per year, to annualise.
        seed: Seeds the bootstrap interval.
        rule: The rule that stands in for the network when it fails, in words.

    Raises:
        ValueError: Empty, ragged or non-finite series.
    """
    a = _series(sized_returns, "sized_returns")
    b = _series(rule_returns, "rule_returns")
    if a.shape != b.shape or a.shape[0] == 0:
        raise ValueError(f"sized_returns and rule_returns must be 1-D of one non-zero length, got {a.shape}, "
                         f"{b.shape}")
    mine, theirs = sharpe_ratio(a, periods_per_year), sharpe_ratio(b, periods_per_year)
    checks = [GateCheck(name="sharpe_at_least_rule_sizing", measure="Sharpe of the sized returns", value=mine,
                        baseline="rule sizing", baseline_value=theirs, passed=mine >= theirs)]
    interval = _interval(a, b, periods_per_year, seed) if a.shape[0] >= 2 else None
    return _verdict("execution", checks, interval=interval, p_value=None, span_start=span_start, span_end=span_end,
                    n=int(a.shape[0]), rule=rule)


# -- shared ----------------------------------------------------------------------------------------


def _series(values: npt.ArrayLike, name: str) -> FloatArray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite")
    return x


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _interval(a: FloatArray, b: FloatArray, ppy: int, seed: int) -> tuple[float, float]:
    _, lo, hi = block_bootstrap_sharpe_diff(a, b, level=INTERVAL_LEVEL, seed=seed, periods_per_year=ppy)
    return lo, hi


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.2f}"


def _operator(c: GateCheck) -> str:
    """The comparison that holds between the check's two values, as its verdict reads it."""
    value, base = c.value if c.value is not None else 0.0, c.baseline_value if c.baseline_value is not None else 0.0
    if c.passed:
        return ">" if value > base else "<" if value < base else ">="
    return "<=" if value <= base else ">="


def check_text(c: GateCheck) -> str:
    """One check in words, e.g. ``"Sharpe after costs 0.12 <= buy-and-hold 0.41"``."""
    if c.name == "position_held":
        return f"position held on {_percent(c.value)} of bars {_operator(c)} {_percent(c.baseline_value)}"
    if c.value is None or c.baseline_value is None:
        return f"{c.measure} not measurable on these bars"
    if c.name == "diebold_mariano":
        return f"Diebold-Mariano p {_number(c.value)} {_operator(c)} {c.baseline_value:g}"
    return f"{c.measure} {_number(c.value)} {_operator(c)} {c.baseline} {_number(c.baseline_value)}"


def checks_text(checks: list[GateCheck]) -> str:
    """Checks in words, ``"; "``-joined; checks of one measure and value read as one comparison
    (``"Sharpe after costs -0.6 <= buy-and-hold 0.29, <= flat 0.00"``), repeats once."""
    parts: list[str] = []
    last: tuple[str, float | None] | None = None
    seen: set[str] = set()
    for c in checks:
        text = check_text(c)
        if text in seen:
            continue
        seen.add(text)
        key = (c.measure, c.value)
        if key == last and c.value is not None and c.baseline_value is not None and c.name != "position_held":
            parts[-1] += f", {_operator(c)} {c.baseline} {_number(c.baseline_value)}"
        else:
            parts.append(text)
        last = key
    return "; ".join(parts)


def failed_checks_text(verdict: GateVerdict) -> str:
    """The deciding checks a verdict failed, in words (``"passed"`` when none failed)."""
    failed = [c for c in verdict.checks if not c.passed and not c.name.endswith("_reported")]
    return checks_text(failed) if failed else "passed"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _verdict(gate: GateKind, checks: list[GateCheck], *, interval: tuple[float, float] | None, p_value: float | None,
             span_start: str | None, span_end: str | None, n: int, rule: str | None) -> GateVerdict:
    deciding = [c for c in checks if not c.name.endswith("_reported")]
    passed = all(c.passed for c in deciding)
    shown = deciding if passed else [c for c in deciding if not c.passed]
    if gate == "rl_policy" and passed:  # both Sharpe comparisons read as one
        shown = [c for c in shown if c.name != "sharpe_above_flat"]
    text = checks_text(shown)
    reported = [c for c in checks if c.name.endswith("_reported")]
    if reported:
        text += "; " + "; ".join(f"{c.measure} {_number(c.value)} vs {c.baseline} {_number(c.baseline_value)} "
                                 "(reported)" for c in reported)
    if interval is not None:
        text += f" ({INTERVAL_LEVEL:.0%} CI of the Sharpe difference [{interval[0]:+.2f}, {interval[1]:+.2f}])"
    if not passed and rule:
        text += f"; {rule} stands in"
    return GateVerdict(gate=gate, passed=passed, checks=checks, interval=interval, p_value=p_value,
                       span_start=span_start, span_end=span_end, n=n,
                       summary=f"{'passed' if passed else 'failed'}: {text}", rule=rule)
