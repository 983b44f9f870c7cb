"""Alert rule files: what parses, and refusals that name the file and the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantcrew.ml_server.services.monitor.rules import (
    COMPARISONS,
    RuleFileError,
    compare,
    load_rules,
    parse_duration,
    parse_rules,
)
from quantcrew.ml_server.services.monitor.sources import CATALOGUE

GOOD = """\
rules:
  - name: slow-route
    metric: latency.p95_ms
    comparison: ">"
    threshold: 250
    window: 5m
    severity: warning
    for: 90s
    labels: {route: /v1/risk/var}
    escalate_after: 1h
    cooldown: 10m
  - name: hit-rate-low
    metric: quality.hit_rate
    comparison: "<"
    threshold: 0.45
    window: 100
    min_samples: 40
    severity: info
"""


def _refusal(text: str, tmp_path: Path) -> RuleFileError:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RuleFileError) as caught:
        load_rules(path)
    assert str(caught.value).startswith(f"{path}:")
    return caught.value


def test_a_good_file_parses_into_rules_with_units_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    slow, low = load_rules(path)
    assert (slow.window, slow.for_s, slow.escalate_after_s, slow.cooldown_s) == (300.0, 90.0, 3600.0, 600.0)
    assert slow.selector == (("route", "/v1/risk/var"),)
    assert slow.line == 2 and low.line == 12
    assert low.window == 100 and low.min_samples == 40 and low.escalate_after_s is None and low.for_s == 0.0


def test_the_packaged_default_rules_load() -> None:
    rules = load_rules(None)
    assert rules and all(CATALOGUE.get(rule.metric) is not None for rule in rules)


def test_yaml_that_does_not_parse_names_its_line(tmp_path: Path) -> None:
    error = _refusal("rules:\n  - name: a\n    metric: [unclosed\n    severity: info\n", tmp_path)
    assert error.line in (3, 4, 5) and "not valid YAML" in error.reason


def test_an_unknown_metric_names_its_line_and_the_known_ones(tmp_path: Path) -> None:
    error = _refusal(GOOD.replace("metric: quality.hit_rate", "metric: quality.vibes"), tmp_path)
    assert error.line == 13
    assert "unknown metric 'quality.vibes'" in error.reason and "latency.p95_ms" in error.reason


def test_a_missing_field_names_the_rule_and_its_line(tmp_path: Path) -> None:
    error = _refusal(GOOD.replace('    threshold: 0.45\n', ''), tmp_path)
    assert error.line == 12 and "'hit-rate-low' is missing the field 'threshold'" in error.reason


@pytest.mark.parametrize(("old", "new", "line", "words"), [
    ('comparison: ">"', 'comparison: "=="', 4, "field 'comparison'"),
    ("threshold: 250", "threshold: lots", 5, "field 'threshold'"),
    ("severity: warning", "severity: apocalyptic", 7, "field 'severity'"),
    ("for: 90s", "for: soon", 8, "field 'for'"),
    ("window: 100", "window: 1.5", 16, "observations"),
    ("labels: {route: /v1/risk/var}", "labels: {model_id: x}", 9, "has no label 'model_id'"),
    ("cooldown: 10m", "cooldown: 10m\n    colour: red", 12, "unknown field 'colour'"),
    ("  - name: hit-rate-low", "  - name: slow-route", 12, "used twice"),
])
def test_a_bad_value_names_the_field_and_its_line(tmp_path: Path, old: str, new: str, line: int, words: str) -> None:
    assert old in GOOD
    error = _refusal(GOOD.replace(old, new), tmp_path)
    assert error.line == line and words in error.reason


def test_an_empty_file_or_no_rules_list_is_refused(tmp_path: Path) -> None:
    assert "empty" in _refusal("", tmp_path).reason
    assert "'rules'" in _refusal("alerts: []\n", tmp_path).reason
    assert "list" in _refusal("rules: {a: 1}\n", tmp_path).reason


def test_a_file_that_cannot_be_read_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False), st.sampled_from(["", "s", "m", "h", "d"]))
def test_durations_scale_by_their_unit(number: float, unit: str) -> None:
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_duration(f"{number:.6f}{unit}") == pytest.approx(float(f"{number:.6f}") * scale)


@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False, allow_infinity=False),
       st.sampled_from(COMPARISONS))
def test_compare_agrees_with_python(value: float, threshold: float, comparison: str) -> None:
    assert compare(value, comparison, threshold) is eval(f"value {comparison} threshold")  # noqa: S307


def test_parse_rules_needs_no_file() -> None:
    assert [r.name for r in parse_rules(GOOD)] == ["slow-route", "hit-rate-low"]
