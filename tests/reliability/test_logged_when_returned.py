"""A prediction is logged exactly when it is returned, also when something fails after scoring: the response
is built (serialised) before the prediction-log write, and the deadline is committed right before that write.

In process, on a real runtime: a LightGBM model, the SQLite online store and the prediction-log writer in a
temporary home. A response that cannot be serialised has no natural trigger left (ids are bounded by the
schema), so the test makes one: a scored item holding a value JSON cannot represent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from churn_assets.serving.http_metrics import metrics_for
from churn_assets.serving.prediction_log import read_predictions
from churn_assets.serving.resilience import Deadline, RequestTimedOut
from churn_assets.serving.routes import FastPath
from churn_assets.serving.runtime import Runtime
from tests.serving_helpers import in_process_runtime

pytestmark = pytest.mark.reliability


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    with in_process_runtime(tmp_path, 10) as rt:
        yield rt


def _logged(rt: Runtime) -> int:
    rt.writer.flush()
    return read_predictions(rt.settings).height


def _scoring(rt: Runtime, ids: list[int], deadline: Deadline | None = None):  # type: ignore[no-untyped-def]
    feats = rt.features_for(ids)
    return rt.score_rows(ids, [feats[c] for c in ids], explain=True, deadline=deadline)


def test_a_response_that_fails_to_serialise_is_not_logged(runtime: Runtime) -> None:
    fast = FastPath(runtime.settings.serving, lambda: runtime, metrics_for())
    ok = fast.respond(runtime, _scoring(runtime, [1, 2]), Deadline(60))
    assert ok.status_code == 200 and _logged(runtime) == 2
    broken = _scoring(runtime, [3])
    assert broken.records, "scored: a log record is ready"
    broken.items[0]["reasons"] = [{"feature": "tenure_days", "contribution": object()}]
    with pytest.raises(TypeError):
        fast.respond(runtime, broken, Deadline(60))
    assert _logged(runtime) == 2  # the failed response logged nothing


def test_a_deadline_passing_after_scoring_logs_nothing(runtime: Runtime) -> None:
    fast = FastPath(runtime.settings.serving, lambda: runtime, metrics_for())
    now = [0.0]
    deadline = Deadline(1.0, clock=lambda: now[0])
    scoring = _scoring(runtime, [4, 5], deadline)  # scored at t = 0
    now[0] = 1.0  # the deadline passes before the response is handed back
    with pytest.raises(RequestTimedOut) as info:
        fast.respond(runtime, scoring, deadline)
    assert info.value.stage == "commit"
    assert deadline.expire()  # the waiter answers 504 ...
    assert _logged(runtime) == 0  # ... and the log has nothing of it
