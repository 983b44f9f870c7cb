"""Alert rules: a YAML file, parsed with its line numbers so that every refusal names the file and the line.

::

    rules:
      - name: ensemble-hit-rate-low          # unique; letters, digits, '.', '_' and '-'
        metric: quality.hit_rate             # a metric of the catalogue (sources.py)
        comparison: "<"                      # >, >=, <, <=
        threshold: 0.48
        window: 250                          # the metric's unit: observations, or a duration ("15m")
        min_samples: 30                      # optional; default the metric's own
        severity: warning                    # info, warning, critical
        for: 10m                             # how long the condition must hold before the alert fires
        labels: {model_id: ensemble-spy-v3}  # optional selector: only these series
        escalate_after: 1h                   # optional: one severity step up while firing unacknowledged
        cooldown: 15m                        # optional: least time between two notifications of one alert
        description: The ensemble's live hit rate fell below 48 %.

Durations are seconds (a number) or a number with a unit: ``s``, ``m``, ``h``, ``d``. A file that does not
parse, a missing or unknown field, a bad value or an unknown metric is a :class:`RuleFileError` naming the file
and the line, and the server does not start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from quantcrew.ml_server.services.monitor.sources import CATALOGUE, Catalogue, Labels, labels_of

__all__ = [
    "COMPARISONS",
    "SEVERITIES",
    "Rule",
    "RuleFileError",
    "compare",
    "default_rules_path",
    "load_rules",
    "parse_duration",
    "parse_rules",
]

SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
"""Severities, lowest first: escalation moves an alert one step to the right."""
COMPARISONS: tuple[str, ...] = (">", ">=", "<", "<=")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_REQUIRED = ("name", "metric", "comparison", "threshold", "severity")
_OPTIONAL = ("window", "for", "labels", "min_samples", "escalate_after", "cooldown", "description")
DEFAULT_COOLDOWN_S = 600.0
"""Least seconds between two notifications of one alert when a rule gives no ``cooldown``."""


class RuleFileError(ValueError):
    """A rule file that cannot be used: it names the file and the line.

    Attributes:
        path: The file.
        line: 1-based line of the offending node (0 when the file could not be read at all).
    """

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path = str(path)
        self.line = line
        self.reason = message


@dataclass(frozen=True)
class Rule:
    """One alert rule, checked (see the module docstring for the fields).

    Attributes:
        window: In the metric's unit (seconds, or observations).
        for_s: Seconds the condition must hold before firing (0: at the first evaluation that sees it).
        selector: Only series whose labels include these.
        min_samples: Fewest observations behind a value for it to be judged.
        escalate_after_s: Seconds firing unacknowledged before one step up (None: never).
        cooldown_s: Least seconds between two notifications of one alert.
        line: Where the rule starts in its file.
    """

    name: str
    metric: str
    comparison: str
    threshold: float
    severity: str
    window: float
    for_s: float = 0.0
    selector: Labels = ()
    min_samples: int = 1
    escalate_after_s: float | None = None
    cooldown_s: float = DEFAULT_COOLDOWN_S
    description: str = ""
    line: int = 0
    source: str = field(default="", compare=False)

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets the rule's condition."""
        return compare(value, self.comparison, self.threshold)


def compare(value: float, comparison: str, threshold: float) -> bool:
    """``value <comparison> threshold``."""
    if comparison == ">":
        return value > threshold
    if comparison == ">=":
        return value >= threshold
    if comparison == "<":
        return value < threshold
    if comparison == "<=":
        return value <= threshold
    raise ValueError(f"unknown comparison {comparison!r}")


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``.

    Raises:
        ValueError: not a non-negative duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as 30, '90s', '15m', '2h' or '1d', got {value!r}")
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def default_rules_path() -> Path:
    """The rules shipped with the package, used when ``monitor.alert_rules`` is not set."""
    return Path(str(resources.files("quantcrew.ml_server.services.monitor") / "default_rules.yaml"))


def load_rules(path: Path | None, catalogue: Catalogue = CATALOGUE) -> list[Rule]:
    """The rules of ``path`` (None: the packaged defaults), checked against ``catalogue``.

    Raises:
        RuleFileError: the file cannot be read, does not parse, or holds a bad rule (file and line named).
    """
    path = default_rules_path() if path is None else Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError(path, 0, f"cannot read the alert rules: {exc}") from exc
    return parse_rules(text, path, catalogue)


def parse_rules(text: str, path: Path | str = "<rules>", catalogue: Catalogue = CATALOGUE) -> list[Rule]:
    """Rules from YAML ``text`` (``path`` is only named in errors).

    Raises:
        RuleFileError: see :func:`load_rules`.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc)
        raise RuleFileError(path, line, f"the alert rules are not valid YAML: {problem}") from exc
    if root is None:
        raise RuleFileError(path, 1, "the alert rules file is empty: it needs a top-level 'rules:' list")
    top = _mapping(root, path, "the file")
    unknown = [k for k in top if k != "rules"]
    if unknown:
        key_node = top[unknown[0]][0]
        raise RuleFileError(path, _line(key_node), f"unknown top-level key {unknown[0]!r}; expected 'rules'")
    if "rules" not in top:
        raise RuleFileError(path, _line(root), "missing the top-level 'rules:' list")
    rules_node = top["rules"][1]
    if not isinstance(rules_node, SequenceNode):
        raise RuleFileError(path, _line(rules_node), "'rules' must be a list of rules")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for node in rules_node.value:
        rule = _rule(node, path, catalogue)
        if rule.name in seen:
            raise RuleFileError(path, rule.line, f"rule name {rule.name!r} is used twice (first at line "
                                                 f"{seen[rule.name]})")
        seen[rule.name] = rule.line
        rules.append(rule)
    return rules


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _mapping(node: Node, path: Path | str, what: str) -> dict[str, tuple[Node, Node]]:
    if not isinstance(node, MappingNode):
        raise RuleFileError(path, _line(node), f"{what} must be a mapping of keys to values")
    out: dict[str, tuple[Node, Node]] = {}
    for key, value in node.value:
        if not isinstance(key, ScalarNode):
            raise RuleFileError(path, _line(key), "keys must be plain names")
        name = str(key.value)
        if name in out:
            raise RuleFileError(path, _line(key), f"key {name!r} appears twice")
        out[name] = (key, value)
    return out


def _value(node: Node) -> Any:
    """The Python value of a node (the safe loader's types)."""
    return SafeConstructor().construct_object(node, deep=True)


def _rule(node: Node, path: Path | str, catalogue: Catalogue) -> Rule:
    fields = _mapping(node, path, "a rule")
    start = _line(node)
    for name, (key, _) in fields.items():
        if name not in _REQUIRED and name not in _OPTIONAL:
            raise RuleFileError(path, _line(key), f"unknown field {name!r} in a rule; fields are "
                                                  f"{', '.join(_REQUIRED + _OPTIONAL)}")
    for name in _REQUIRED:
        if name not in fields:
            label = f" {_value(fields['name'][1])!r}" if "name" in fields else ""
            raise RuleFileError(path, start, f"rule{label} is missing the field {name!r}")

    def bad(name: str, message: str) -> RuleFileError:
        return RuleFileError(path, _line(fields[name][1]), f"field {name!r}: {message}")

    def get(name: str) -> Any:
        return _value(fields[name][1])

    name_node = fields["name"][1]  # as written: YAML would read a name such as 'on' or 'no' as a boolean
    rule_name = name_node.value if isinstance(name_node, ScalarNode) else get("name")
    if not isinstance(rule_name, str) or not _NAME.match(rule_name):
        raise bad("name", f"expected a name of letters, digits, '.', '_' or '-', got {rule_name!r}")
    metric = get("metric")
    spec = catalogue.get(metric) if isinstance(metric, str) else None
    if spec is None:
        raise bad("metric", f"unknown metric {metric!r}; known metrics: {', '.join(catalogue.names())}")
    comparison = get("comparison")
    if comparison not in COMPARISONS:
        raise bad("comparison", f"expected one of {', '.join(COMPARISONS)}, got {comparison!r}")
    threshold = get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold != threshold \
            or abs(threshold) == float("inf"):
        raise bad("threshold", f"expected a finite number, got {threshold!r}")
    severity = get("severity")
    if severity not in SEVERITIES:
        raise bad("severity", f"expected one of {', '.join(SEVERITIES)}, got {severity!r}")
    window = float(spec.default_window)
    if "window" in fields:
        raw = get("window")
        try:
            if spec.window == "seconds":
                window = parse_duration(raw)
            elif isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
                raise ValueError(f"{metric} counts its window in observations: expected a whole number >= 1, "
                                 f"got {raw!r}")
            else:
                window = float(raw)
        except ValueError as exc:
            raise bad("window", str(exc)) from exc
        if window <= 0:
            raise bad("window", "must be above 0")
    durations: dict[str, float | None] = {"for": 0.0, "escalate_after": None, "cooldown": DEFAULT_COOLDOWN_S}
    for name in durations:
        if name in fields:
            try:
                durations[name] = parse_duration(get(name))
            except ValueError as exc:
                raise bad(name, str(exc)) from exc
    escalate = durations["escalate_after"]
    if escalate is not None and escalate <= 0:
        raise bad("escalate_after", "must be above 0")
    min_samples = spec.min_samples
    if "min_samples" in fields:
        raw = get("min_samples")
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise bad("min_samples", f"expected a whole number >= 0, got {raw!r}")
        min_samples = raw
    selector: Labels = ()
    if "labels" in fields:
        raw = get("labels")
        if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str | int | float)
                                                and not isinstance(v, bool) for k, v in raw.items()):
            raise bad("labels", f"expected a mapping of label names to values, got {raw!r}")
        if spec.labels and (extra := sorted(set(raw) - set(spec.labels))):
            raise bad("labels", f"{metric} has no label {extra[0]!r}; its labels are {', '.join(spec.labels)}")
        selector = labels_of(raw)
    description = get("description") if "description" in fields else ""
    if not isinstance(description, str):
        raise bad("description", "expected text")
    for_s, cooldown = durations["for"], durations["cooldown"]
    assert for_s is not None and cooldown is not None
    return Rule(name=rule_name, metric=metric, comparison=comparison, threshold=float(threshold),
                severity=severity, window=window, for_s=for_s, selector=selector, min_samples=min_samples,
                escalate_after_s=escalate, cooldown_s=cooldown, description=description, line=start,
                source=str(path))
