"""Semantic regime labels: the state-to-label rule, and the threshold rules used on fallback.

Hidden states are numbered arbitrarily by each fit, so labels come from each state's
statistics in return units (posterior-weighted mean ``m`` and standard deviation ``s`` of
the daily log return, over ``n`` effective bars), never from the state index.

The rule is volatility-first, because volatility is what a daily HMM identifies reliably:
a state mean is known only to about ``s / sqrt(n)``, which for a few hundred bars is as
large as the drift itself (a 250-bar bear regime at -0.15 % / day and 1.6 % volatility shows
a positive sample mean in about 7 % of samples). Drift enters only through its t-statistic
``t = m / s * sqrt(n)``, and overrides the volatility order only when it is strong.

1. Measure each state against the calm one: ``rho = s / s_calm`` (``s_calm``: the calmest state
   holding at least 5 % of the bars) and its place on the fit's volatility scale,
   ``v = log(rho) / log(s_top / s_calm)`` (``s_top``: the most volatile state). When
   ``s_top < 1.5 * s_calm`` the market shows no volatility structure: go to step 5.
2. ``volatile``: ``v >= 0.85`` (the most volatile state and its near ties) and ``rho >= 3``;
   in a two-state fit the turbulent state is ``volatile`` whatever its multiple (calm vs
   turbulent is all two states can say).
3. Elevated, ``rho >= 1.9`` and not volatile: ``bear``, unless its drift is clearly positive
   (``t >= 2``), then ``bull``. High volatility and falling prices go together (leverage
   effect); requiring a significantly negative sample mean would mislabel most bear states.
   The two multiples are the relative form of the usual VIX reading for an index whose calm
   state runs near 10 % a year: under ~20 % calm, 20-30 % elevated, over 30 % turbulent.
   Both conditions of step 2 are needed: with a regime missing from the sample (three states
   fitted), the most volatile state may be an ordinary bear market at 2.4x the calm volatility.
4. Calm, ``rho < 1.9``, by volatility: the calmest calm state is ``sideways`` and the other
   calm states ``bull`` (the generator's and the textbook's picture: a quiet range-bound market,
   and a steadier rise at somewhat higher volatility); clearly negative drift (``t <= -2``) makes
   any of them ``bear``. Drift overrides the volatility order only when the evidence is strong:
   when the calmest state has ``t >= 3`` (the hurdle Harvey, Liu & Zhu, 2016, ask of a new
   return factor) and the strongest drift of the calm group (the quiet rally typical of equity
   indices), it is ``bull`` and the others are ``bull`` / ``bear`` / ``sideways`` by ``t >= 2`` /
   ``t <= -2`` / otherwise (at ``t >= 2`` a flat regime would be renamed in one sample in 40).
   A lone calm state has no neighbour to be ordered against: ``bull`` / ``bear`` / ``sideways``
   by ``t >= 2`` / ``t <= -2`` / otherwise.
5. No volatility structure (step 1): ``bull`` / ``bear`` / ``sideways`` by ``t >= 2`` /
   ``t <= -2`` / otherwise.
6. A state whose mean return is not positive is never ``bull``: step 4 would name it so (a
   calm state busier than the calmest, drift not clearly negative), and it becomes ``sideways``.
   A state called bull from its volatility alone while its bars fell on average is the error a
   reader trusts least (NASDAQ's fit ending at the 2002 bottom called a state of mean
   -0.05 % a day ``bull``); ``sideways`` says what is known: calm, no rising drift.

These are the names of STATES. The label of a BAR also weighs the trend up to it: when the
days the filter calls calm have lost 20 % from their high of the last year and are still
falling over the last quarter, the calm labels read ``bear``
(:mod:`quantcrew.ml_server.services.regime.trend`), so a slow decline at ordinary volatility is
not called bull.

Several states may share a label (two states: a calm ``bull`` or ``sideways`` and a
``volatile`` one).

Limitation: names are relative to the market's own calm state. When a regime is absent from
the fit window (no quiet spell in 1,000 bars, say), a state can be named one step off. On the
synthetic markets of ``bench/regime_accuracy.py`` this left 3 of 90 1,000-bar markets below
95 % of the oracle's accuracy, and none of 195 markets of 2,000 or 2,500 bars.

Fallback (no HMM could be fitted): :class:`ThresholdRules` labels each bar from trailing
20-bar statistics of the same inputs: ``volatile`` when the trailing volatility exceeds
1.75x its median over the fit bars, else ``bull`` / ``bear`` when the trailing mean return
has a t-statistic beyond +/-2, else ``sideways``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.schemas.regime import REGIME_LABELS, RegimeLabel

__all__ = ["StateStats", "ThresholdRules", "label_states", "state_statistics"]

FloatArray = npt.NDArray[np.float64]

_STRUCTURE_RATIO = 1.5
_VOLATILE_POSITION = 0.85
_VOLATILE_RATIO = 3.0
_TWO_STATES = 2
_ELEVATED_RATIO = 1.9
_CALM_MIN_SHARE = 0.05
_T_CLEAR = 2.0
_T_STRONG = 3.0  # the hurdle for overriding the volatility order (Harvey, Liu & Zhu, 2016)

_RULE_WINDOW = 20
_RULE_VOL_MULTIPLE = 1.75
_PARKINSON = 1.0 / np.sqrt(4.0 * np.log(2.0))  # range -> volatility


@dataclass(frozen=True)
class StateStats:
    """Return statistics of each hidden state (decimal daily log returns).

    Attributes:
        mean: Posterior-weighted mean return per state.
        vol: Posterior-weighted standard deviation per state.
        weight: Effective number of bars per state (sum of posteriors).
    """

    mean: FloatArray
    vol: FloatArray
    weight: FloatArray

    @property
    def t_stat(self) -> FloatArray:
        """t-statistic of each state's mean return (0 where the state has no volatility)."""
        safe = np.where(self.vol > 0, self.vol, 1.0)
        return np.where(self.vol > 0, self.mean / safe * np.sqrt(np.maximum(self.weight, 0.0)), 0.0)


def state_statistics(returns: FloatArray, posteriors: FloatArray) -> StateStats:
    """Posterior-weighted return statistics of each state.

    Args:
        returns: Daily log returns, shape ``(T,)``.
        posteriors: State probabilities of each bar, shape ``(T, K)``.
    """
    weight = posteriors.sum(axis=0)
    safe = np.where(weight > 0, weight, 1.0)
    mean = (posteriors * returns[:, None]).sum(axis=0) / safe
    var = (posteriors * (returns[:, None] - mean) ** 2).sum(axis=0) / safe
    return StateStats(mean=mean, vol=np.sqrt(np.maximum(var, 0.0)), weight=weight)


def label_states(stats: StateStats) -> list[RegimeLabel]:
    """Semantic label of each state by the volatility-first rule in the module docstring (never bull when falling)."""
    k = stats.vol.shape[0]
    share = stats.weight / max(float(stats.weight.sum()), 1e-12)
    t = stats.t_stat
    eligible = stats.vol[(share >= _CALM_MIN_SHARE) & (stats.vol > 0)]
    s_calm = float(eligible.min()) if eligible.size else float(stats.vol.max())
    s_top = float(stats.vol.max())
    if not (s_calm > 0 and s_top >= _STRUCTURE_RATIO * s_calm):  # no volatility structure
        return [_drift_label(float(x)) for x in t]
    ratio = stats.vol / s_calm
    with np.errstate(divide="ignore", invalid="ignore"):
        position = np.nan_to_num(np.log(ratio) / np.log(s_top / s_calm), nan=0.0, neginf=0.0)
    labels: list[RegimeLabel] = ["sideways"] * k
    calm: list[int] = []
    for i in range(k):
        if position[i] >= _VOLATILE_POSITION and (ratio[i] >= _VOLATILE_RATIO or k <= _TWO_STATES):
            labels[i] = "volatile"
        elif ratio[i] >= _ELEVATED_RATIO:
            labels[i] = "bull" if t[i] >= _T_CLEAR else "bear"
        else:
            calm.append(i)
    calm.sort(key=lambda i: stats.vol[i])
    if len(calm) == 1:  # no calmer or busier neighbour to compare with: drift alone decides
        labels[calm[0]] = _drift_label(float(t[calm[0]]))
    elif calm:
        first, others = calm[0], calm[1:]
        if t[first] >= _T_STRONG and all(t[first] > t[i] for i in others):
            labels[first] = "bull"
            for i in others:
                labels[i] = _drift_label(float(t[i]))
        else:
            labels[first] = "bear" if t[first] <= -_T_CLEAR else "sideways"
            for i in others:
                labels[i] = "bear" if t[i] <= -_T_CLEAR else "bull"
    # step 6: a state whose returns fell on average is never bull, whatever its volatility says
    return [_not_falling_bull(label, float(stats.mean[i])) for i, label in enumerate(labels)]


def _not_falling_bull(label: RegimeLabel, mean: float) -> RegimeLabel:
    return "sideways" if label == "bull" and not mean > 0 else label


def _drift_label(t: float) -> RegimeLabel:
    if t >= _T_CLEAR:
        return "bull"
    if t <= -_T_CLEAR:
        return "bear"
    return "sideways"


@dataclass(frozen=True)
class ThresholdRules:
    """Deterministic labels from trailing volatility and trend (the fallback path).

    Attributes:
        vol_reference: Median trailing volatility over the fit bars (decimal, daily).
        use_range: Whether volatility comes from the Parkinson range instead of returns.
        window: Trailing window, in bars.
    """

    vol_reference: float
    use_range: bool
    window: int = _RULE_WINDOW

    @classmethod
    def fit(cls, returns: FloatArray, log_range: FloatArray | None) -> ThresholdRules:
        """Learn the volatility reference from the fit bars."""
        rules = cls(vol_reference=0.0, use_range=log_range is not None and bool(np.any(log_range > 0)))
        vol, _ = rules.trailing(returns, log_range)
        return cls(vol_reference=float(np.median(vol)) if vol.size else 0.0, use_range=rules.use_range)

    def trailing(self, returns: FloatArray, log_range: FloatArray | None) -> tuple[FloatArray, FloatArray]:
        """Causal trailing volatility and mean-return t-statistic of every bar."""
        n = returns.shape[0]
        end = np.arange(1, n + 1)
        begin = np.maximum(end - self.window, 0)
        count = (end - begin).astype(np.float64)
        csum = np.concatenate([[0.0], np.cumsum(returns)])
        mean = (csum[end] - csum[begin]) / count
        sq = (_PARKINSON * log_range) ** 2 if self.use_range and log_range is not None else returns**2
        csq = np.concatenate([[0.0], np.cumsum(sq)])
        vol = np.sqrt(np.maximum(csq[end] - csq[begin], 0.0) / count)
        safe = np.where(vol > 0, vol, 1.0)
        t = np.where(vol > 0, mean / safe * np.sqrt(count), 0.0)
        return vol, t

    def label(self, returns: FloatArray, log_range: FloatArray | None) -> npt.NDArray[np.int64]:
        """Index into ``REGIME_LABELS`` of every bar's label."""
        vol, t = self.trailing(returns, log_range)
        out = np.full(returns.shape[0], REGIME_LABELS.index("sideways"), dtype=np.int64)
        out[t >= _T_CLEAR] = REGIME_LABELS.index("bull")
        out[t <= -_T_CLEAR] = REGIME_LABELS.index("bear")
        if self.vol_reference > 0:
            out[vol > _RULE_VOL_MULTIPLE * self.vol_reference] = REGIME_LABELS.index("volatile")
        return out
