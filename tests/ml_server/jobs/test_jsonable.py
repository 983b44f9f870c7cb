"""Plain JSON out of job params and results: numpy values, NaN, what cannot be stored."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pytest

from quantcrew.ml_server.jobs import JobContext, JobManager
from quantcrew.ml_server.jobs.jsonable import dumps, jsonable
from tests.ml_server.jobs.support import WAIT_S


def test_result_with_numpy_values_and_nan_is_stored_as_plain_json(manager: JobManager) -> None:
    def fn(ctx: JobContext) -> dict[str, Any]:
        return {"reward": np.float64(1.25), "steps": np.int64(64), "curve": np.array([1.0, np.nan]), "loss": np.inf}

    done = manager.wait(manager.submit("rl_train", fn, params={}).job_id, WAIT_S)
    assert done.status == "succeeded"
    assert done.result == {"reward": 1.25, "steps": 64, "curve": [1.0, None], "loss": None}


def test_submit_refuses_params_that_are_not_json(manager: JobManager) -> None:
    with pytest.raises(ValueError, match="params of a 'rl_train' job cannot be stored as JSON"):
        manager.submit("rl_train", lambda ctx: {}, params={"env": object()})
    assert manager.list() == []


def test_jsonable_unwraps_numpy_times_and_non_finite_floats() -> None:
    value = {"a": np.float32(0.5), 3: (np.int64(2), float("-inf")), "when": date(2020, 1, 2),
             "at": datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC), "grid": np.eye(2)}
    assert jsonable(value) == {"a": 0.5, "3": [2, None], "when": "2020-01-02", "at": "2020-01-02T03:04:05+00:00",
                               "grid": [[1.0, 0.0], [0.0, 1.0]]}


def test_jsonable_strict_refuses_what_lenient_turns_into_text() -> None:
    odd = {(1, 2): object}
    with pytest.raises(TypeError, match=r"dict key \(1, 2\) \(tuple\) is not a string"):
        jsonable(odd)
    with pytest.raises(TypeError, match="set is not JSON-serialisable"):
        jsonable({"s": {1}})
    assert jsonable(odd, strict=False) == {"(1, 2)": str(object)}


def test_dumps_names_what_cannot_be_stored() -> None:
    assert dumps({"x": np.nan, "y": [1, "a"]}) == '{"x": null, "y": [1, "a"]}'
    with pytest.raises(ValueError, match="the job's result cannot be stored as JSON: object is not"):
        dumps({"x": object()}, what="the job's result")
