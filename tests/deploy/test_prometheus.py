"""deploy/prometheus and deploy/grafana: valid for Prometheus' own tools, and in step with the settings.

* ``promtool check config`` / ``check rules`` / ``test rules`` (Debian's ``prometheus`` package, installed
  by ``make services``) pass; ``tests.yml`` has a case where each alert fires and one where it does not.
* Every alert threshold equals its setting, the latency SLOs are bucket bounds of the latency histogram, and
  the scrape targets are the settings' default addresses.
* The dashboard's panels all query the provisioned datasource. That every query returns data from a real
  Prometheus scraping the running service is tests/serving/test_prometheus_live.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from churn_assets.serving.http_metrics import LATENCY_BUCKETS
from churn_assets.settings import AutomationSettings, MonitoringSettings, ServingSettings

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

# alert -> (comparison, the setting's value as the rule writes it)
SERVING, MONITORING, AUTOMATION = ServingSettings(), MonitoringSettings(), AutomationSettings()
THRESHOLDS: dict[str, tuple[str, float]] = {
    "ChurnErrorRateHigh": (">", SERVING.slo_error_rate),
    "ChurnLatencyP95High": (">", SERVING.slo_latency_p95_ms / 1000),
    "ChurnLatencyP99High": (">", SERVING.slo_latency_p99_ms / 1000),
    "ChurnBreakerOpen": ("==", 2),  # churn_breaker_state: 2 = open
    "ChurnRateLimitRejections": (">", 0),
    "ChurnRateLimiterDegraded": ("==", 1),
    "ChurnModelAUCBelowThreshold": ("<", MONITORING.auc_threshold),
    "ChurnModelEstimatedAUCBelowThreshold": ("<", MONITORING.auc_threshold),
    "ChurnFeatureDrift": (">=", AUTOMATION.retrain_min_drifted_features),
    "ChurnServiceDown": ("==", 0),
    "ChurnMonitoringExporterDown": ("==", 0),
}
COMPARISON = re.compile(r"(>=|<=|==|!=|>|<)\s*(-?[0-9.eE+-]+)\s*$")


def alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load((PROM / "rules.yml").read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def promtool(*args: str) -> str:
    if not Path(PROMTOOL).exists():
        pytest.fail(f"{PROMTOOL} is missing: `make services` installs Debian's prometheus package (apt-get)")
    done = subprocess.run(
        [PROMTOOL, *args], cwd=PROM, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_promtool_accepts_the_config_and_the_rules() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert f"SUCCESS: {len(alerts())} rules found" in promtool("check", "rules", "rules.yml")


def test_promtool_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "tests.yml")


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases = [
        c for t in yaml.safe_load((PROM / "tests.yml").read_text())["tests"] for c in t["alert_rule_test"]
    ]
    for name in alerts():
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c.get("exp_alerts") for c in mine), f"{name}: no case where it fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{name}: no case where it stays silent"


def test_every_threshold_is_its_setting() -> None:
    rules = alerts()
    assert set(rules) == set(THRESHOLDS)
    for name, (op, value) in THRESHOLDS.items():
        found = COMPARISON.search(rules[name]["expr"].strip())
        assert found is not None, f"{name}: expression does not end in a comparison"
        assert found.group(1) == op, f"{name}: compares with {found.group(1)}, expected {op}"
        assert float(found.group(2)) == pytest.approx(value), f"{name}: {found.group(2)} != setting {value}"


def test_latency_slos_are_histogram_bucket_bounds() -> None:
    for ms in (SERVING.slo_latency_p95_ms, SERVING.slo_latency_p99_ms):
        assert ms / 1000 in LATENCY_BUCKETS, f"SLO {ms} ms is not a bucket of churn_request_seconds"


def test_scrape_targets_are_the_default_addresses() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = {
        j["job_name"]: [t for s in j["static_configs"] for t in s["targets"]]
        for j in config["scrape_configs"]
    }
    assert targets == {
        "churn-service": [f"{SERVING.host}:{SERVING.port}"],
        "churn-monitoring": [f"{MONITORING.metrics_host}:{MONITORING.metrics_port}"],
    }
    assert config["rule_files"] == ["rules.yml"]


def test_dashboard_panels_query_the_provisioned_datasource() -> None:
    [source] = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "churnops.yml").read_text())[
        "datasources"
    ]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "churnops.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
    dashboard = json.loads((GRAFANA / "dashboards" / "churnops.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"]), panel["title"]
