"""A local explanation of one prediction by feature perturbation.

For one row, each feature is moved in turn and the model asked again:

* ``delta_plus`` / ``delta_minus``: the change in the output when the feature is moved up /
  down by ``k`` robust standard deviations (1.4826 x the median absolute deviation over the
  reference rows; their plain std when the MAD is 0);
* ``delta_median``: the change when the feature is replaced by its median over the reference
  rows, so ``-delta_median`` is what the row's unusual value of it added to the output.

Features are ranked by ``effect``: ``-delta_median`` in ``"median"`` mode (signed: positive
pushed the output up), ``(delta_plus - delta_minus) / 2`` in ``"shift"`` mode (the local slope
per ``k`` robust std), by magnitude. A feature constant over the reference rows is not moved
(its deltas are 0). A feature spanning several columns (a windowed model) moves in every column
at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.services.explain.permutation import IntArray, Predict, check_output, single_groups

__all__ = ["LocalEffect", "LocalMode", "local_effects", "robust_std"]

FloatArray = npt.NDArray[np.float64]
LocalMode = Literal["median", "shift"]

_MAD_TO_STD = 1.4826


@dataclass(frozen=True)
class LocalEffect:
    """One feature's effect on one prediction."""

    name: str
    value: float
    effect: float
    delta_plus: float
    delta_minus: float
    delta_median: float


def robust_std(values: FloatArray) -> FloatArray:
    """Per column: 1.4826 x the median absolute deviation, or the plain std where that is 0."""
    v = np.asarray(values, dtype=np.float64)
    med = np.median(v, axis=0)
    mad = _MAD_TO_STD * np.median(np.abs(v - med), axis=0)
    return np.where(mad > 0.0, mad, v.std(axis=0))


def local_effects(predict: Predict, row: FloatArray, reference: FloatArray, names: Sequence[str], *,
                  groups: Sequence[IntArray] | None = None, k: float = 1.0, mode: LocalMode = "median",
                  value_columns: Sequence[int] | None = None) -> tuple[float, list[LocalEffect]]:
    """The output of ``row`` and each feature's effect on it, largest ``|effect|`` first.

    Args:
        predict: The model, rows -> outputs.
        row: The row explained, ``(d,)``.
        reference: Rows that define each feature's median and robust std, ``(m, d)``.
        names: One name per group (per column when ``groups`` is None).
        groups: Column indices of each feature; None: one column each.
        k: How many robust std a feature moves in ``delta_plus`` / ``delta_minus``.
        mode: What ``effect`` is (see the module docstring).
        value_columns: The column whose value each feature reports (the last of its group by default).

    Raises:
        ValueError: no reference row, names and groups of different lengths, or a ``predict``
            answer that is not one finite value per row.

    All the perturbed rows go through ``predict`` in one call.
    """
    row = np.asarray(row, dtype=np.float64).reshape(-1)
    reference = np.asarray(reference, dtype=np.float64)
    if reference.ndim != 2 or reference.shape[0] < 1:
        raise ValueError("a local explanation needs at least 1 reference row")
    d = row.shape[0]
    cols = list(groups) if groups is not None else single_groups(d)
    if len(cols) != len(names):
        raise ValueError(f"{len(names)} names for {len(cols)} features")
    spread = robust_std(reference)
    median = np.median(reference, axis=0)
    block = np.tile(row, (1 + 3 * len(cols), 1))
    for j, group in enumerate(cols):
        moves = np.where(spread[group] > 0.0, k * spread[group], 0.0)
        block[1 + 3 * j, group] += moves
        block[2 + 3 * j, group] -= moves
        block[3 + 3 * j, group] = np.where(spread[group] > 0.0, median[group], row[group])
    out = check_output(predict(block), block.shape[0])
    base = float(out[0])
    effects: list[LocalEffect] = []
    for j, (name, group) in enumerate(zip(names, cols, strict=True)):
        plus, minus, to_median = (float(out[1 + 3 * j + i]) - base for i in range(3))
        effect = (-to_median if mode == "median" else (plus - minus) / 2.0) + 0.0  # no -0.0
        col = int(value_columns[j]) if value_columns is not None else int(group[-1])
        effects.append(LocalEffect(str(name), float(row[col]), effect, plus, minus, to_median))
    return base, sorted(effects, key=lambda e: -abs(e.effect))
