"""WARN monitoring checks and alerts, end to end on real Dagster runs and a real HTTP receiver.

The monitoring checks run in real in-process runs (their job: the checks only, against report metadata
recorded for the week, so no pipeline has to run first). The alert sensors are evaluated the way the
daemon does it (``evaluate_tick`` with the cursor of the previous tick) and post to a webhook receiver
on a free loopback port; the breaker sensor reads a real Prometheus exposition.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import prometheus_client
import pytest

from churn_assets.automation.alerts import (
    Alert,
    AlertLedger,
    AlertSender,
    BreakerCursor,
    breaker_state,
    post_json,
)
from churn_assets.automation.triggers import WEEK_TAG
from churn_assets.definitions import build_definitions
from churn_assets.defs.jobs import PRODUCTION_JOB
from churn_assets.defs.keys import (
    CHALLENGER,
    DRIFT_REPORT,
    MONITORING_CHECKS,
    NO_MATERIAL_DRIFT,
    PERFORMANCE_REPORT,
    ROLLOUT_STEP,
)
from churn_assets.defs.monitoring_checks import monitoring_checks
from churn_assets.defs.partitions import WEEKS
from churn_assets.defs.sensors import build_sensors
from churn_assets.monitoring.checks import auc_outcome, drift_outcome, estimated_auc_outcome
from churn_assets.settings import AlertSettings, AutomationSettings, Settings

DRIFTED_WEEK, QUIET_WEEK = "2025-06-02", "2025-06-09"
BASE_URL = "http://dagster.example:3001"
SENSORS = {s.name: s for s in build_sensors(AutomationSettings())}


class Receiver:
    """A webhook receiver on a free loopback port: records every JSON POST; answers 503 to the first
    ``fail_first`` requests."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.authorization: list[str] = []
        self.requests = 0
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests += 1
                if receiver.requests <= receiver.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.posts.append(json.loads(body))
                receiver.paths.append(self.path)
                receiver.authorization.append(self.headers.get("authorization", ""))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')  # what Slack's Web API answers (webhooks ignore it)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/churnops"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        inst.add_dynamic_partitions(WEEKS, [DRIFTED_WEEK, QUIET_WEEK])
        yield inst


def settings_for(tmp_path: Path, webhook: str | None, **alerts: Any) -> Settings:
    return Settings(
        home=tmp_path / "home",
        alerts=AlertSettings(
            webhook_url=webhook,
            webserver_base_url=BASE_URL,
            retry_backoff_seconds=0.05,
            **alerts,
        ),
    )


def record_reports(
    instance: dg.DagsterInstance, week: str, *, drifted: list[str], auc: float, est: float
) -> None:
    """The week's report metadata as the monitoring assets store it (keys of docs/monitoring.md)."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=DRIFT_REPORT,
            partition=week,
            metadata={
                "n_drifted_features": len(drifted),
                "drifted_features": dg.MetadataValue.json(drifted),
                "max_severity": "HIGH" if drifted else "NONE",
                "model_version": "3",
            },
        )
    )
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=PERFORMANCE_REPORT,
            partition=week,
            metadata={
                "auc": auc,
                "estimated_auc": est,
                "labelled_rows": 1800,
                "labelled_week": "2025-05-05",
                "labelled_model_version": "3",
                "model_version": "3",
                "prediction_rows": 2000,
            },
        )
    )


def checks_job(settings: Settings) -> dg.JobDefinition:
    """The code location's real ``weekly_production`` job, subset to its three monitoring checks."""
    job = build_definitions(settings).resolve_job_def(PRODUCTION_JOB)
    return job.get_subset(asset_selection=set(), asset_check_selection=set(MONITORING_CHECKS))


# Stand-ins for the rollout step and the challenger's gates: same asset keys and metadata as the real
# ones, without a registry and a trained model behind them.
@dg.asset(key=ROLLOUT_STEP)
def rolled_back_step() -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            "action": "rollback",
            "week": DRIFTED_WEEK,
            "phase_before": "canary_25",
            "phase_after": "none",
            "stable_version": "3",
            "reason": f"week {DRIFTED_WEEK}: candidate error rate 4.1 % > 1 %",
        }
    )


@dg.asset(key=CHALLENGER)
def challenger() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"version": "4"})


@dg.asset_check(asset=CHALLENGER, name="auc_floor", blocking=True)
def auc_floor() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="test AUC 0.652 < 0.70")


@dg.asset(key=dg.AssetKey(["production", "broken"]))
def broken() -> None:
    raise RuntimeError("feature store unreachable")


def run_job(assets: list[Any], checks: list[Any], tags: dict[str, str], instance: dg.DagsterInstance) -> str:
    job = dg.define_asset_job("job_under_test", tags=tags)
    defs = dg.Definitions(assets=assets, asset_checks=checks, jobs=[job], executor=dg.in_process_executor)
    result = defs.resolve_job_def("job_under_test").execute_in_process(
        instance=instance, raise_on_error=False
    )
    return result.run_id


def tick(instance: dg.DagsterInstance, settings: Settings, name: str, cursor: str | None) -> str | None:
    """One daemon tick of the sensor ``name``: evaluates it with the previous cursor, returns the new one."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"settings": settings})
    data = SENSORS[name].evaluate_tick(context)
    return data.cursor


# ---- the checks -----------------------------------------------------------------------------------
def test_monitoring_checks_warn_without_failing_the_run(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    settings = settings_for(tmp_path, None)
    record_reports(
        instance,
        DRIFTED_WEEK,
        drifted=["arpu", "tenure_days", "logins_7d", "tickets_30d"],
        auc=0.71,
        est=0.74,
    )
    record_reports(instance, QUIET_WEEK, drifted=["arpu"], auc=0.83, est=0.81)
    job = checks_job(settings)
    drifted = job.execute_in_process(instance=instance, partition_key=DRIFTED_WEEK)
    quiet = job.execute_in_process(instance=instance, partition_key=QUIET_WEEK)

    assert drifted.success and quiet.success  # WARN checks: a drifted week never turns a run red
    verdicts = {(e.check_name, e.passed, e.severity) for e in drifted.get_asset_check_evaluations()}
    assert verdicts == {
        ("no_material_drift", False, dg.AssetCheckSeverity.WARN),
        ("auc_at_or_above_0_78", False, dg.AssetCheckSeverity.WARN),
        ("estimated_auc_at_or_above_0_78", False, dg.AssetCheckSeverity.WARN),
    }
    assert all(e.passed for e in quiet.get_asset_check_evaluations())
    by_name = {e.check_name: e for e in drifted.get_asset_check_evaluations()}
    assert by_name["no_material_drift"].description.startswith("4 drifted feature(s) >= 3: arpu")
    assert "realised AUC 0.710 < 0.78" in (by_name["auc_at_or_above_0_78"].description or "")
    assert "estimated AUC (CBPE) 0.740 < 0.78" in (
        by_name["estimated_auc_at_or_above_0_78"].description or ""
    )
    # The UI's verdict for the week: the check's latest evaluation is a failed WARN.
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([NO_MATERIAL_DRIFT])
    assert record[NO_MATERIAL_DRIFT].run_id == quiet.run_id  # the newest evaluation: the quiet week


def test_the_weekly_job_runs_the_checks_and_they_block_nothing(tmp_path: Path) -> None:
    job = build_definitions(settings_for(tmp_path, None)).resolve_job_def(PRODUCTION_JOB)
    assert set(MONITORING_CHECKS) <= set(job.asset_layer.asset_graph.asset_check_keys)
    specs = [spec for check in monitoring_checks for spec in check.check_specs]
    assert {spec.key for spec in specs} == set(MONITORING_CHECKS)
    assert not any(spec.blocking for spec in specs)


def test_check_verdicts_use_the_thresholds_and_explain_what_was_not_evaluated() -> None:
    assert drift_outcome({"n_drifted_features": 2, "drifted_features": ["a", "b"]}, 3).passed
    assert not drift_outcome({"n_drifted_features": 2, "drifted_features": ["a", "b"]}, 2).passed
    history = drift_outcome({"skipped": "2024-01-01 is a history week", "n_drifted_features": 0}, 3)
    assert history.passed and not history.evaluated
    no_labels = auc_outcome({"estimated_auc": 0.7}, 0.78)
    assert no_labels.passed and not no_labels.evaluated
    assert "complete labels" in no_labels.description
    assert not auc_outcome({"auc": 0.7799}, 0.78).passed and auc_outcome({"auc": 0.78}, 0.78).passed
    assert not estimated_auc_outcome({"estimated_auc": 0.6}, 0.65).passed
    assert not estimated_auc_outcome({"estimated_auc": float("nan")}, 0.78).evaluated


# ---- the alerts -----------------------------------------------------------------------------------
def test_each_alert_arrives_once_with_its_week_and_run_link(
    tmp_path: Path, instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    settings = settings_for(tmp_path, receiver.url)
    # First ticks: the run-status sensors start from the newest event (nothing before them is alerted).
    success_cursor = tick(instance, settings, "week_alerts", None)
    failure_cursor = tick(instance, settings, "run_failure_alerts", None)

    record_reports(instance, DRIFTED_WEEK, drifted=["arpu", "tenure_days", "logins_7d"], auc=0.71, est=0.74)
    week_run = checks_job(settings).execute_in_process(instance=instance, partition_key=DRIFTED_WEEK).run_id
    rollback_run = run_job([rolled_back_step], [], {WEEK_TAG: DRIFTED_WEEK}, instance)
    blocked_run = run_job([challenger], [auc_floor], {WEEK_TAG: QUIET_WEEK}, instance)
    failed_run = run_job([broken], [], {"dagster/partition": QUIET_WEEK}, instance)
    range_tags = {
        "dagster/asset_partition_range_start": DRIFTED_WEEK,
        "dagster/asset_partition_range_end": QUIET_WEEK,
    }
    failed_range_run = run_job([broken], [], range_tags, instance)
    assert instance.get_run_by_id(blocked_run).status == dg.DagsterRunStatus.FAILURE

    next_success = tick(instance, settings, "week_alerts", success_cursor)
    next_failure = tick(instance, settings, "run_failure_alerts", failure_cursor)
    # The same ticks evaluated again (a daemon that died before storing the cursor) and the next ticks.
    tick(instance, settings, "week_alerts", success_cursor)
    tick(instance, settings, "run_failure_alerts", failure_cursor)
    tick(instance, settings, "week_alerts", next_success)
    tick(instance, settings, "run_failure_alerts", next_failure)

    got = {}
    for post in receiver.posts:
        assert set(post) == {"text", "blocks"}  # Slack's incoming-webhook JSON
        context = " ".join(e["text"] for b in post["blocks"] if b["type"] == "context" for e in b["elements"])
        got.setdefault(post["blocks"][0]["text"]["text"], []).append((post["text"], context))
    failed = "churnops: Run of job_under_test failed"
    expected = [
        ("churnops: Material feature drift", DRIFTED_WEEK, week_run),
        ("churnops: Champion AUC below threshold", DRIFTED_WEEK, week_run),
        ("churnops: Estimated AUC below threshold", DRIFTED_WEEK, week_run),
        ("churnops: Rollout rolled back", DRIFTED_WEEK, rollback_run),
        ("churnops: Retraining blocked by promotion gates", QUIET_WEEK, blocked_run),
        (failed, QUIET_WEEK, failed_run),
        (failed, f"{DRIFTED_WEEK}..{QUIET_WEEK}", failed_range_run),  # a multi-week run: its range
    ]
    assert set(got) == {title for title, _, _ in expected}
    for title, week, run_id in expected:
        [(text, context)] = [(t, c) for t, c in got[title] if run_id in t]  # exactly once
        link = f"{BASE_URL}/runs/{run_id}"
        assert f"week {week}" in text and link in text
        assert f"*week* {week}" in context and f"<{link}|Dagster run {run_id[:8]}>" in context
    assert "auc_floor: test AUC 0.652 < 0.70" in got["churnops: Retraining blocked by promotion gates"][0][0]
    assert all("feature store unreachable" in text for text, _ in got[failed])
    assert (
        "3 drifted feature(s) >= 3: arpu, tenure_days, logins_7d"
        in got["churnops: Material feature drift"][0][0]
    )
    assert len(receiver.posts) == receiver.requests == len(expected)


def test_breaker_alert_once_per_opening(
    tmp_path: Path, instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    registry = prometheus_client.CollectorRegistry()
    gauge = prometheus_client.Gauge(
        "churn_breaker_state", "breaker: 0 closed, 1 half-open, 2 open", registry=registry
    )
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        service = f"http://127.0.0.1:{server.server_address[1]}"
        settings = settings_for(tmp_path, receiver.url, service_url=service)
        # The newest production week's run: the breaker alert links it (the traffic of that week).
        weekly = dg.define_asset_job(PRODUCTION_JOB, tags={"dagster/partition": QUIET_WEEK})
        defs = dg.Definitions(assets=[challenger], jobs=[weekly], executor=dg.in_process_executor)
        run_id = defs.resolve_job_def(PRODUCTION_JOB).execute_in_process(instance=instance).run_id
        cursor = None
        for state in (0, 2, 2, 1, 0, 2, 2):  # closed, open (alert), still open, half-open, closed, open again
            gauge.set(state)
            cursor = tick(instance, settings, "breaker_alerts", cursor)
        last = BreakerCursor.decode(cursor)
        assert (last.state, last.opened) == (2, 2)
        # A reset cursor (a new count) alerts the next opening again: its key is new.
        assert tick(instance, settings, "breaker_alerts", None) != cursor
    finally:
        server.shutdown()
        thread.join(timeout=5)
    assert [p["blocks"][0]["text"]["text"] for p in receiver.posts] == [
        "churnops: Feature-store circuit breaker open"
    ] * 3
    for post in receiver.posts:
        assert f"week {QUIET_WEEK}" in post["text"] and f"{BASE_URL}/runs/{run_id}" in post["text"]
        assert service in post["text"]


def test_a_slack_token_posts_through_dagster_slack(
    tmp_path: Path, instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    """With a bot token the alert goes through dagster-slack's client to chat.postMessage (here the
    receiver stands in for the Slack Web API, ``alerts.slack_api_url``), beside no webhook."""
    settings = settings_for(
        tmp_path,
        None,
        slack_token="xoxb-test-token",
        slack_channel="#churn-alerts",
        slack_api_url=receiver.url.rsplit("/", 2)[0] + "/api/",
    )
    cursor = tick(instance, settings, "run_failure_alerts", None)
    failed_run = run_job([broken], [], {"dagster/partition": DRIFTED_WEEK}, instance)
    tick(instance, settings, "run_failure_alerts", cursor)
    tick(instance, settings, "run_failure_alerts", cursor)  # evaluated again: nothing resent
    [post] = receiver.posts
    assert receiver.paths == ["/api/chat.postMessage"]
    assert receiver.authorization == ["Bearer xoxb-test-token"]
    assert post["channel"] == "#churn-alerts"
    assert f"week {DRIFTED_WEEK}" in post["text"] and f"{BASE_URL}/runs/{failed_run}" in post["text"]
    assert post["blocks"][0]["text"]["text"] == "churnops: Run of job_under_test failed"


def test_delivery_retries_a_5xx_and_never_raises(tmp_path: Path) -> None:
    payload = {"text": "t", "blocks": []}
    with Receiver(fail_first=2) as flaky:
        ok = post_json(flaky.url, payload, timeout=2, max_attempts=3, backoff=0.01)
    assert ok.delivered and ok.attempts == 3 and flaky.posts == [payload]
    with Receiver(fail_first=5) as down:
        failed = post_json(down.url, payload, timeout=2, max_attempts=3, backoff=0.01)
    assert not failed.delivered and failed.attempts == 3 and failed.status == 503 and down.requests == 3
    with Receiver() as closed:
        url = closed.url
    refused = post_json(url, payload, timeout=1, max_attempts=2, backoff=0.01)
    assert not refused.delivered and refused.attempts == 2 and "ConnectError" in (refused.error or "")

    # An alert no channel took is not marked sent: the next evaluation tries again.
    sender = AlertSender(
        AlertSettings(webhook_url=url, max_attempts=1, timeout_seconds=1), AlertLedger(tmp_path / "alerts")
    )
    alert = Alert("drift", "drift:2025-06-02", "t", "d", "2025-06-02")
    assert not sender.send(alert).delivered
    assert sender.ledger.keys() == []


def test_breaker_state_reads_the_max_over_workers() -> None:
    text = '# TYPE churn_breaker_state gauge\nchurn_breaker_state{pid="1"} 0.0\nchurn_breaker_state{pid="2"} 2.0\n'
    assert breaker_state(text) == 2
    assert breaker_state("# nothing here\n") is None
