"""Planted secrets never show: not in the Dagster UI's GraphQL answers, a run's event and compute logs,
the MLflow tracking store, the CLI's output, nor any file of the state folder.

The secrets are real and in use: an API key, the password of a Redis server this test starts with
``--requirepass`` (the online store, the rate limiter and the rollout state connect with it) and a
password in the PostgreSQL URLs of MLflow tracking, the Optuna storage and the audit log (the server's
trust authentication accepts any password, so the URL works as written).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from churn_assets.settings import SecretUrl, Settings, mask_url, settings_env
from tests.ui_helpers import ROOT, dagster_webserver, free_port, subprocess_env, write_instance_yaml

pytestmark = [pytest.mark.service, pytest.mark.e2e, pytest.mark.timeout(600)]

SECRETS = {
    "api_key": f"apikey-{uuid.uuid4().hex}",
    "redis_password": f"redispw-{uuid.uuid4().hex}",
    "pg_password": f"pgpw-{uuid.uuid4().hex}",
    "webhook_key": f"whk{uuid.uuid4().hex}",
    "slack_token": f"xoxb-{uuid.uuid4().hex}",
}


def _leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def test_settings_show_secrets_masked_and_hand_them_to_children_in_clear() -> None:
    settings = Settings(
        postgres_url=f"postgresql+psycopg2://app:{SECRETS['pg_password']}@db:5432/x",  # type: ignore[arg-type]
        serving={"api_key": SECRETS["api_key"]},  # type: ignore[arg-type]
        alerts={  # type: ignore[arg-type]
            "webhook_url": f"https://hooks.slack.com/services/T0/B0/{SECRETS['webhook_key']}",
            "slack_token": SECRETS["slack_token"],
        },
    )
    shown = " ".join([repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())])
    assert _leaks(shown) == []
    assert "postgresql+psycopg2://app:***@db:5432/x" in repr(settings.postgres_url)
    env = settings_env(settings)
    assert env["CHURNOPS_POSTGRES_URL"] == settings.postgres_url.get_secret_value()
    assert json.loads(env["CHURNOPS_SERVING"])["api_key"] == SECRETS["api_key"]
    alerts = json.loads(env["CHURNOPS_ALERTS"])
    assert (
        alerts["webhook_url"].endswith(SECRETS["webhook_key"])
        and alerts["slack_token"] == SECRETS["slack_token"]
    )
    assert mask_url("redis://:pw@h:1/0?password=pw&db=2") == "redis://:***@h:1/0?password=***&db=2"
    assert mask_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert str(SecretUrl("http://user@host/")) == "http://user@host/"  # no password, nothing to hide


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this test only, with a password (``--requirepass``); killed at the end."""
    import redis

    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            SECRETS["redis_password"],
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://:{SECRETS['redis_password']}@127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url, socket_connect_timeout=1).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    pytest.fail(f"redis-server on port {port} did not start")
                time.sleep(0.1)
        with pytest.raises(redis.AuthenticationError):  # the password is really required
            redis.Redis(port=port).ping()
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _small_csv(path: Path, n: int = 600) -> Path:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, 6))
    y = rng.random(n) < 1 / (1 + np.exp(-(X[:, :4].sum(axis=1))))
    frame = pd.DataFrame(X.round(4), columns=[f"x{i}" for i in range(6)])
    frame["churned"] = np.where(y, "yes", "no")
    frame.to_csv(path, index=False)
    return path


def _churnops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("churnops")), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"churnops {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return proc


RESOURCES = """
{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {
  ... on RepositoryLocation { repositories { name allTopLevelResourceDetails {
    name description configFields { name description } configuredValues { key value type } } } } } } } } }
"""
LAUNCH = """
mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }
"""
RUN = """
query Run($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run {
  runId status runConfigYaml tags { key value }
  eventConnection { events { __typename
    ... on MessageEvent { message level stepKey }
    ... on MaterializationEvent { assetKey { path } metadataEntries { __typename label description
      ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr }
      ... on JsonMetadataEntry { jsonString } ... on UrlMetadataEntry { url } } } } } } } }
"""
LOGS = """
query Logs($logKey: [String!]!) { capturedLogs(logKey: $logKey) { stdout stderr } }
"""


def _run_status_report_through_the_webserver(server: Any) -> tuple[dict[str, Any], str]:
    """Launch ``monitoring/status_report`` as the UI would; wait; the run (GraphQL) and its raw answer."""
    params = {
        "selector": {
            "repositoryLocationName": "churn_assets",
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": ["monitoring", "status_report"]}],
        },
        "runConfigData": {},
        "mode": "default",
    }
    launched = server.graphql(LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 180
    while True:
        run = server.graphql(RUN, {"runId": run_id})["runOrError"]
        if run["status"] in {"SUCCESS", "FAILURE", "CANCELED"}:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} did not finish: {run['status']}\n{server.log_tail()}")
        time.sleep(1)
    return run, json.dumps(run)


def test_planted_secrets_do_not_show_anywhere(
    tmp_path: Path, private_redis: str, fresh_postgres_database: Any
) -> None:
    # MLflow and Optuna each keep an alembic_version table: one database each.
    secret_pg_url = _with_password(fresh_postgres_database("churnops_secrets"))
    secret_optuna_url = _with_password(fresh_postgres_database("churnops_secrets_optuna"))
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    write_instance_yaml(dagster_home)
    env = subprocess_env(
        {
            "CHURNOPS_HOME": str(home),
            "DAGSTER_HOME": str(dagster_home),
            "CHURNOPS_SERVING__API_KEY": SECRETS["api_key"],
            "CHURNOPS_POSTGRES_URL": secret_pg_url,
            "CHURNOPS_MODELING__TRACKING_URI": secret_pg_url,
            "CHURNOPS_MODELING__OPTUNA_STORAGE": secret_optuna_url,
            "CHURNOPS_MODELING__AUDIT_URL": secret_pg_url,
            "CHURNOPS_FEATURE_STORE__ONLINE_BACKEND": "redis",
            "CHURNOPS_FEATURE_STORE__REDIS_URL": private_redis,
            "CHURNOPS_SERVING__REDIS_URL": private_redis,
            "CHURNOPS_SERVING__ROLLOUT_BACKEND": "redis",
            "CHURNOPS_SERVING__RATE_LIMIT_STORAGE": "redis",
        }
    )
    settings = _settings_from(env)
    assert settings.serving.api_key is not None
    assert settings.serving.api_key.get_secret_value() == SECRETS["api_key"]

    # 1. The secrets work where they are used: Redis with its password, PostgreSQL through the URLs.
    _use_redis(settings)

    # 2. The CLI: a small training (MLflow, Optuna and the audit log on PostgreSQL), then its reports.
    csv = _small_csv(tmp_path / "secret shop.csv")
    cli_output = []
    for args in (
        (
            "train-table",
            str(csv),
            "--target",
            "churned",
            "--positive",
            "yes",
            "--trials",
            "2",
            "--budget-seconds",
            "20",
            "--json",
        ),
        (
            "train-table",
            str(csv),
            "--target",
            "churned",
            "--positive",
            "yes",
            "--trials",
            "2",
            "--budget-seconds",
            "20",
        ),
        ("experiments", "--json"),
        ("audit", "--model-name", "secret-shop", "--json"),
        ("status", "--json"),
        ("status",),
    ):
        proc = _churnops(env, *args)
        cli_output.append(proc.stdout + proc.stderr)
        if args[0] == "audit":
            assert json.loads(proc.stdout)  # the audit log holds the training's entries
    assert _leaks("\n".join(cli_output)) == [], "a secret in the CLI output"

    # 3. The MLflow tracking store: params and tags of every run, tags of every registered version.
    tracked = _mlflow_contents(settings)
    assert '"model": "logistic_regression"' in tracked  # the search found the training's runs
    assert _leaks(tracked) == [], "a secret in MLflow params/tags"

    # 4. The Dagster UI (a real dagster-webserver): resources, a run launched from it, its event and
    #    compute logs.
    with dagster_webserver(env, tmp_path / "webserver.log") as server:
        resources_answer = json.dumps(server.graphql(RESOURCES))
        assert '"settings"' in resources_answer
        run, run_answer = _run_status_report_through_the_webserver(server)
        assert run["status"] == "SUCCESS", run_answer[-3000:]
        assert "report" in run_answer  # the status report's metadata is in the answer searched
        step_logs = json.dumps(
            server.graphql(LOGS, {"logKey": [run["runId"], "compute_logs", "monitoring__status_report"]})
        )
        graphql_answers = resources_answer + run_answer + step_logs
    assert _leaks(graphql_answers) == [], "a secret in the UI's GraphQL answers"
    assert _leaks((tmp_path / "webserver.log").read_text(errors="replace")) == []

    # 5. Every file of the state folder (Dagster event log and compute logs, MLflow artifacts, prediction
    #    log, ...) and of the test's folder.
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("compute_logs" in str(p) for p in files), "no compute log was captured"
    leaked = [(str(p), _leaks(p.read_bytes().decode("latin-1"))) for p in files]
    assert [x for x in leaked if x[1]] == []


def _with_password(url: str) -> str:
    """``url`` (``scheme://user@host/db``) with the planted PostgreSQL password."""
    scheme, rest = url.split("://", 1)
    userinfo, host = rest.split("@", 1)
    return f"{scheme}://{userinfo.split(':', 1)[0]}:{SECRETS['pg_password']}@{host}"


def _settings_from(env: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return Settings(_env_file=None)  # type: ignore[call-arg]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _use_redis(settings: Settings) -> None:
    import datetime as dt

    from churn_assets.feature_store.definitions import FEATURE_GROUPS
    from churn_assets.feature_store.online import make_online_store
    from churn_assets.serving.resilience import CustomerRateLimit
    from churn_assets.serving.rollout import RolloutStore
    from tests.feature_helpers import random_group_frame

    as_of = dt.datetime(2025, 6, 2)
    store = make_online_store(settings)
    try:
        group = FEATURE_GROUPS[0]
        store.write(group.name, random_group_frame(group, [1, 2], [as_of], seed=0), now=as_of)
        read = store.read([1, 2], group.feature_names, now=as_of)
        assert read is not None
    finally:
        store.close()
    assert CustomerRateLimit(settings).hit(1) is None  # counted in Redis, under the limit
    assert RolloutStore(settings).set_stable("1", by="test").stable_version == "1"


def _mlflow_contents(settings: Settings) -> str:
    from churn_assets.modeling.tracking import configure

    tracking = configure(settings)
    client = tracking.client
    runs = client.search_runs([tracking.experiment_id], max_results=500)
    assert runs, "the training logged no run"
    dump: list[Any] = [
        {"params": r.data.params, "tags": r.data.tags, "metrics": list(r.data.metrics), "info": dict(r.info)}
        for r in runs
    ]
    for model in client.search_registered_models():
        dump.append({"model": model.name, "tags": model.tags, "description": model.description})
        for mv in client.search_model_versions(f"name='{model.name}'"):
            dump.append({"version": mv.version, "tags": mv.tags, "source": mv.source})
    return json.dumps(dump, default=str)
