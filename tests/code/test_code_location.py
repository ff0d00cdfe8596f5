"""The Dagster code location loads from workspace.yaml, with the lineage the UI shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from churn_assets.orchestration import load_definitions

ROOT = Path(__file__).resolve().parents[2]


def test_workspace_validates_with_the_dagster_cli(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All code locations passed validation" in proc.stdout + proc.stderr


def test_lineage_landing_to_raw_to_features_to_online() -> None:
    graph = load_definitions().resolve_asset_graph()
    parents = lambda key: {p.to_user_string() for p in graph.get(dg.AssetKey(key)).parent_keys}  # noqa: E731
    assert parents(["raw", "usage"]) == {"landing/usage"}
    assert parents(["features", "customer_usage"]) == {"raw/usage", "raw/engagement", "raw/support_tickets"}
    assert parents(["features", "customer_cohort"]) == {"raw/accounts", "raw/churn_events"}
    assert parents(["features", "online_store"]) == {
        "features/customer_account",
        "features/customer_usage",
        "features/customer_billing",
        "features/customer_engagement",
        "features/customer_cohort",
    }


def test_every_raw_asset_has_a_blocking_contract_check() -> None:
    graph = load_definitions().resolve_asset_graph()
    specs = [spec for assets_def in graph.assets_defs for spec in assets_def.check_specs]
    contract = {
        s.asset_key.path[1]: s for s in specs if s.asset_key.path[0] == "raw" and s.name == "contract"
    }
    assert set(contract) == {"accounts", "usage", "engagement", "billing", "support_tickets", "churn_events"}
    assert all(spec.blocking for spec in contract.values())


def test_the_weekly_job_resolves_without_the_mixed_backfill_policy_warning() -> None:
    """The weekly job runs one week per run by design; Dagster's mixed-policy warning is silenced for it only."""
    code = (
        "from churn_assets.orchestration import load_definitions\n"
        "defs = load_definitions()\n"
        "job = defs.resolve_job_def('weekly_production')\n"
        "print('max partitions per run:', job.backfill_policy.max_partitions_per_run)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "max partitions per run: 1" in proc.stdout
    assert "varying BackfillPolicies" not in proc.stderr, proc.stderr
