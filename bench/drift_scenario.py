"""Drift scenario: models trained on one synthetic regime, fed bars of another one bar at a time.

Two stored models are trained on 1,000 bars of one calm regime (every regime of the synthetic
generator set to the same law, so the market never switches): a regime detector (feature
``range``, output the label index) and an anomaly detector (five features, output the score).
Their drift references are built exactly as their training stores them.

* Detection: after ``window`` more calm bars, the market switches to another regime; at every
  new bar the drift of the last ``window`` feature rows (and outputs) is evaluated against the
  reference. Reported: bars from the switch until the verdict first fires (median over seeds).
* False alarms: a long calm stretch (new seeds, the training law), evaluated at every bar for
  ``evaluations`` bars (2,000 by default). Reported: evaluations that fired, and alarm
  episodes (a run of firing evaluations counts once, as an alert with a for-duration would).

The features and outputs of the stream are computed once over all its bars: both are causal
(a row uses bars up to its own; the regime output is the forward filter's), so the row of bar
``t`` is what a request sent at bar ``t`` would get; only the window slides.

Every decision rule tried is reported (PSI threshold, KS level, KS at the effective sample size
or not, window); the served default is PSI > 0.25 AND KS p (at the window's effective size)
< 0.01 / series, with ``min_samples`` 30 and 10 effective values.

Run: ``.venv/bin/python bench/drift_scenario.py [--seeds 3] [--evaluations 2000] [--quick]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from _table import print_table

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.synthetic import PARAM_SETS, REGIMES, RegimeParams, generate_regime_market
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.services.anomaly import service as anomaly
from quantcrew.ml_server.services.anomaly.model import AnomalyDetector
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.monitor.drift import MIN_EFFECTIVE, DriftRule, drift_report
from quantcrew.ml_server.services.monitor.reference import DriftReference, build_reference
from quantcrew.ml_server.services.regime import service as regime
from quantcrew.ml_server.services.regime.model import RegimeDetector

LAWS = PARAM_SETS["default"]
TRAIN = LAWS["bull"]  # sigma 0.8 % a day
SHIFTS: dict[str, RegimeParams] = {
    "sideways (0.5 %)": LAWS["sideways"],
    "subtle bear (1.1 %)": RegimeParams(mu=-0.0005, sigma=0.011, volume_level=1.2),
    "bear (1.6 %)": LAWS["bear"],
    "volatile (3 %)": LAWS["volatile"],
}
RULES: tuple[tuple[float, float, bool], ...] = (
    (0.25, 0.01, True), (0.25, 0.01, False), (0.1, 0.01, True), (0.25, 0.05, True), (0.5, 0.01, True),
    (0.25, 1.0, False), (0.0, 0.01, False), (0.0, 0.01, True),
)
"""(PSI threshold, KS alpha, KS at the effective sample size) tried: alpha 1.0 is PSI alone, PSI 0.0 is KS
alone. The first is the served default."""
WINDOWS = (60, 120, 250, 500)
MIN_SAMPLES = 30
MAX_DELAY = 300

Inputs = tuple[tuple[str, ...], np.ndarray, np.ndarray]


def one_regime(law: RegimeParams, n: int, seed: int, start: str = "2001-01-01") -> dict[str, Any]:
    market = generate_regime_market(n, params={name: law for name in REGIMES}, seed=seed, start=start)
    return to_payload_dict(market.bars)


def stitched(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """``second`` continuing ``first``: its prices rescaled to start at the last close, its days after."""
    scale = first["close"][-1] / second["open"][0]
    last = np.datetime64(first["timestamps"][-1][:10], "D")
    days = np.busday_offset(last, np.arange(1, len(second["close"]) + 1), roll="forward")
    out = {"timestamps": first["timestamps"] + [f"{d}T00:00:00" for d in days]}
    for col in ("open", "high", "low", "close", "volume"):
        tail = second[col] if col == "volume" else [v * scale for v in second[col]]
        out[col] = first[col] + list(tail)
    return out


def bars_of(payload: dict[str, Any]) -> Bars:
    return bars_from_payload(OHLCVPayload(**payload), min_rows=2)


@dataclass(frozen=True)
class Model:
    name: str
    reference: DriftReference
    inputs: Callable[[Bars], Inputs]


def train_models(seed: int) -> list[Model]:
    bars = bars_of(one_regime(TRAIN, 1000, seed=seed))
    detector = RegimeDetector(n_states=2, n_restarts=2, seed=seed)
    detector.fit(bars)
    forest = AnomalyDetector(n_estimators=100, seed=seed).fit(bars, min_rows=30)
    models = []
    for name, family, fn in (("regime", "regime", lambda b: regime.drift_inputs(detector, b)),
                             ("anomaly", "anomaly", lambda b: anomaly.drift_inputs(forest, b))):
        names, matrix, outputs = fn(bars)
        models.append(Model(name, build_reference(name, family, names, matrix, outputs, bins=10, rows=2000), fn))
    return models


@dataclass(frozen=True)
class Figures:
    """Per evaluation (rows) and series (columns: features, then the output)."""

    psi: np.ndarray
    p: np.ndarray
    p_adjusted: np.ndarray
    n_effective: np.ndarray


def evaluate(model: Model, bars: Bars, window: int, ends: Sequence[int]) -> Figures:
    """The drift figures of the window ending at each bar of ``ends`` (indices into the stream's bars)."""
    names, matrix, outputs = model.inputs(bars)
    offset = len(bars) - len(matrix)  # rows start after the family's warm-up
    out_offset = len(bars) - len(outputs)
    permissive = DriftRule(psi=0.0, alpha=1.0, min_samples=1, autocorrelation=False)
    rows: list[list[tuple[float, float, float, float]]] = []
    for end_bar in ends:
        stop, out_stop = end_bar - offset + 1, end_bar - out_offset + 1
        feats = {n: matrix[max(0, stop - window):stop, j] for j, n in enumerate(names)}
        report = drift_report(model.reference, feats, outputs[max(0, out_stop - window):out_stop], permissive,
                              source="bars")
        series = [*report.features, *([report.output] if report.output is not None else [])]
        rows.append([(s.psi or 0.0, 1.0 if s.ks_p is None else s.ks_p,
                      1.0 if s.ks_p_adjusted is None else s.ks_p_adjusted, s.n_effective or 0.0) for s in series])
    a = np.array(rows, dtype=np.float64)
    return Figures(a[:, :, 0], a[:, :, 1], a[:, :, 2], a[:, :, 3])


def verdicts(f: Figures, psi_threshold: float, alpha: float, adjusted: bool) -> np.ndarray:
    m = f.psi.shape[1]
    p = f.p_adjusted if adjusted else f.p
    judged = f.n_effective >= MIN_EFFECTIVE if adjusted else np.ones_like(f.psi, dtype=bool)
    return np.asarray(((f.psi > psi_threshold) & (p < alpha / m) & judged).any(axis=1))


def episodes(fired: np.ndarray) -> int:
    return int(np.sum(fired[1:] & ~fired[:-1]) + (1 if fired.size and fired[0] else 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="1 seed, 300 evaluations")
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds
    evaluations = 300 if args.quick else args.evaluations
    started = time.perf_counter()

    delay_rows: list[list[object]] = []
    alarm_rows: list[list[object]] = []
    delays: dict[tuple[str, str, int, float, float, bool], list[int | None]] = {}
    alarms: dict[tuple[str, int, float, float, bool], list[tuple[int, int]]] = {}
    for seed in range(seeds):
        models = train_models(100 + seed)
        calm_long = bars_of(one_regime(TRAIN, max(WINDOWS) + 60 + evaluations, seed=200 + seed, start="2005-01-03"))
        for model in models:
            for window in WINDOWS:
                first = len(calm_long) - evaluations
                figures = evaluate(model, calm_long, window, range(first, len(calm_long)))
                for rule in RULES:
                    fired = verdicts(figures, *rule)
                    alarms.setdefault((model.name, window, *rule), []).append((int(fired.sum()), episodes(fired)))
        for shift_name, law in SHIFTS.items():
            calm = one_regime(TRAIN, max(WINDOWS) + 60, seed=300 + seed, start="2005-01-03")
            stream = bars_of(stitched(calm, one_regime(law, MAX_DELAY, seed=400 + seed)))
            switch = len(calm["close"])
            for model in models:
                for window in WINDOWS:
                    figures = evaluate(model, stream, window, range(switch, len(stream)))
                    for rule in RULES:
                        fired = np.flatnonzero(verdicts(figures, *rule))
                        delays.setdefault((shift_name, model.name, window, *rule), []).append(
                            int(fired[0]) + 1 if fired.size else None)

    def rule_name(psi_t: float, alpha: float, adjusted: bool) -> str:
        ks = f"KS{'(n_eff)' if adjusted else ''} p<{alpha:g}/m"
        if alpha >= 1.0:
            return f"PSI>{psi_t:g} alone"
        if psi_t <= 0.0:
            return f"{ks} alone"
        return f"PSI>{psi_t:g} & {ks}"

    for model_name in ("anomaly", "regime"):
        for window in WINDOWS:
            for rule in RULES:
                runs = alarms[(model_name, window, *rule)]
                alarm_rows.append([model_name, window, rule_name(*rule), len(runs) * evaluations,
                                   sum(r[0] for r in runs), sum(r[1] for r in runs)])
    for model_name in ("anomaly", "regime"):
        for window in WINDOWS:
            for rule in RULES:
                row: list[object] = [model_name, window, rule_name(*rule)]
                for shift_name in SHIFTS:
                    tries = delays[(shift_name, model_name, window, *rule)]
                    found = [d for d in tries if d is not None]
                    missed = len(tries) - len(found)
                    cell = f"{statistics.median(found):g}" if found else "-"
                    row.append(cell + (f" ({missed} missed)" if missed and found else ""))
                delay_rows.append(row)

    print(f"Training regime: sigma {TRAIN.sigma:.3f}, 1,000 bars; {seeds} seed(s); windows {WINDOWS}; "
          f"{len(RULES)} rules x {len(WINDOWS)} windows = {len(RULES) * len(WINDOWS)} configurations per model\n")
    print("False alarms over a no-drift stretch (every evaluation is one bar later)")
    print_table(["model", "window", "rule", "evaluations", "fired", "episodes"], alarm_rows)
    print("\nBars from the regime switch until drift fires (median over seeds; - = never within "
          f"{MAX_DELAY} bars)")
    print_table(["model", "window", "rule", *SHIFTS], delay_rows)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
