"""A global surrogate: a shallow decision tree fitted to a model's outputs, with its fidelity.

The tree learns to mimic the model (its targets are the model's outputs, not the truth) on the
first rows and is judged on the LAST ``holdout_fraction`` of them, never shuffled (rows are
bars or observations in time order, as everywhere in this server). Its fidelity says how far
its rules can be trusted as a description of the model:

* a continuous output: R^2 of the tree's predictions against the model's outputs on the
  held-out rows (1: the tree reproduces the model; 0: no better than the mean);
* a class output: the share of held-out rows where the tree picks the model's class, beside
  the share of the most frequent class (what a tree that learned nothing would score).

The tree is returned as readable rules, one per leaf: the conditions on the path to it, what it
predicts there and how many training rows reached it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor, export_text

__all__ = ["MIN_HOLDOUT", "MIN_TRAIN", "Rule", "Surrogate", "fit_surrogate"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MIN_TRAIN = 10
"""Fewest rows the tree is fitted on."""
MIN_HOLDOUT = 5
"""Fewest held-out rows its fidelity is measured on."""


@dataclass(frozen=True)
class Rule:
    """One leaf: the conditions that lead to it, its answer and the training rows that reached it."""

    conditions: list[str]
    output: float | None
    label: str | None
    samples: int


@dataclass(frozen=True)
class Surrogate:
    """The fitted tree, its fidelity on the held-out rows and its rules."""

    kind: Literal["regression", "classification"]
    depth: int
    fidelity: float
    fidelity_metric: Literal["r2", "agreement"]
    baseline: float
    n_train: int
    n_holdout: int
    rules: list[Rule]
    text: str
    tree: Any


def _r2(y: FloatArray, pred: FloatArray) -> float:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    ss_res = float(((y - pred) ** 2).sum())
    if ss_tot <= 1e-24 * max(1.0, float((y ** 2).sum())):
        # a constant output: a tree that reproduces it is perfect, any other is not
        return 1.0 if ss_res <= 1e-24 * max(1.0, float((y ** 2).sum())) else 0.0
    return 1.0 - ss_res / ss_tot


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _rules(tree: Any, names: Sequence[str], labels: Sequence[str] | None) -> list[Rule]:
    t = tree.tree_
    out: list[Rule] = []

    def walk(node: int, path: list[str]) -> None:
        left, right = int(t.children_left[node]), int(t.children_right[node])
        if left == right:  # a leaf
            value = t.value[node]
            samples = int(t.n_node_samples[node])
            if labels is None:
                out.append(Rule(list(path), float(value[0][0]), None, samples))
            else:
                k = int(np.argmax(value[0]))
                out.append(Rule(list(path), None, str(labels[int(tree.classes_[k])]), samples))
            return
        name, thr = names[int(t.feature[node])], float(t.threshold[node])
        walk(left, [*path, f"{name} <= {_fmt(thr)}"])
        walk(right, [*path, f"{name} > {_fmt(thr)}"])

    walk(0, [])
    return out


def fit_surrogate(x: FloatArray, y: npt.ArrayLike, names: Sequence[str], *, labels: Sequence[str] | None = None,
                  max_depth: int = 3, holdout_fraction: float = 0.25, seed: int = 0) -> Surrogate:
    """A depth-``max_depth`` tree fitted to the outputs ``y`` of rows ``x``, judged on the last rows.

    Args:
        x: The rows (readable features), ``(n, d)``.
        y: The model's output of each row: numbers, or class indices when ``labels`` is given.
        names: Column names (the rules' wording).
        labels: Class names by index; given, the tree classifies and fidelity is agreement.
        max_depth: Depth of the tree (1 to 4).
        holdout_fraction: Share of the rows, the last ones, held out to measure fidelity.
        seed: ``random_state`` of the tree (ties between equally good splits).

    Raises:
        ValueError: too few rows for the fit and the holdout, a depth outside 1..4, names of
            another length than the columns.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if len(names) != d:
        raise ValueError(f"{len(names)} names for {d} columns")
    if not 1 <= max_depth <= 4:
        raise ValueError("a surrogate tree is 1 to 4 levels deep")
    # the share asked for, unless it would leave fewer than MIN_TRAIN rows to fit
    n_hold = max(MIN_HOLDOUT, min(int(np.floor(n * holdout_fraction)), n - MIN_TRAIN))
    n_train = n - n_hold
    if n_train < MIN_TRAIN:
        raise ValueError(f"a surrogate needs at least {MIN_TRAIN + MIN_HOLDOUT} rows ({MIN_TRAIN} to fit, "
                         f"{MIN_HOLDOUT} held out); got {n}")
    x_fit, x_hold = x[:n_train], x[n_train:]
    if labels is None:
        target = np.asarray(y, dtype=np.float64).reshape(-1)
        reg = DecisionTreeRegressor(max_depth=max_depth, random_state=seed).fit(x_fit, target[:n_train])
        fidelity = _r2(target[n_train:], np.asarray(reg.predict(x_hold), dtype=np.float64))
        return Surrogate("regression", int(reg.get_depth()), fidelity, "r2", 0.0, n_train, n_hold,
                         _rules(reg, names, None), export_text(reg, feature_names=list(names)), reg)
    codes = np.asarray(y, dtype=np.int64).reshape(-1)
    clf = DecisionTreeClassifier(max_depth=max_depth, random_state=seed).fit(x_fit, codes[:n_train])
    hold = codes[n_train:]
    agreement = float((np.asarray(clf.predict(x_hold), dtype=np.int64) == hold).mean())
    majority = float(np.bincount(hold).max() / hold.shape[0])
    class_names = [str(labels[int(c)]) for c in clf.classes_]
    return Surrogate("classification", int(clf.get_depth()), agreement, "agreement", majority, n_train, n_hold,
                     _rules(clf, names, labels),
                     export_text(clf, feature_names=list(names), class_names=class_names), clf)
