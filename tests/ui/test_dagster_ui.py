"""The Dagster UI in a real browser: open the asset graph, launch a materialization, see it succeed.

What is exercised, end to end: `dagster-webserver` loads the code location from `workspace.yaml` in a
subprocess whose only configuration is its environment (``DAGSTER_HOME`` and ``CHURNOPS_*``, exactly
as a user sets them); headless Chromium (the Debian package, driven by Playwright) opens the `raw`
group's asset graph, selects the node `raw/accounts` with a click, opens "Materialize selected",
picks one week in the partition dialog of the dynamic ``weeks`` partitions and clicks "Launch 1 run".
The webserver launches the run (``DefaultRunLauncher``: a subprocess of the code server), and the
test confirms through the GraphQL API (HTTP POST /graphql) that the run carries the UI's tag,
succeeded, materialized that partition and passed its blocking `contract` check, and that the rows
are in the warehouse.

Why `raw/accounts` for the first week: a raw asset is the first real step of the graph whose inputs
(the landed files) exist without any other run, so one click tests the UI's launch path and nothing
else; the first week of `accounts` holds the whole initial customer base, so the run writes a
non-trivial number of rows that the test can count. The week partitions are registered beforehand on
the same instance, as `churnops simulate` does. Runs start without the daemon (see
`tests.ui_helpers.write_instance_yaml`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

from churn_assets.ingestion.landing import landing_path
from churn_assets.orchestration import register_weeks
from churn_assets.settings import Settings
from churn_assets.storage.warehouse import Warehouse
from tests.pipeline_helpers import simulate, small_settings
from tests.ui_helpers import (
    CHROMIUM_ARGS,
    Webserver,
    dagster_webserver,
    require_chromium,
    subprocess_env,
    write_instance_yaml,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CUSTOMERS = 400
MONTHS = 1
TABLE = "accounts"

RUNS = """
query ($partition: String!) {
  runsOrError(filter: {tags: [{key: "dagster/partition", value: $partition}]}) {
    __typename ... on Runs { results { runId status assetSelection { path } tags { key value } } }
  }
}
"""
RUN_STATS = """
query ($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run {
    status stats { ... on RunStatsSnapshot { stepsSucceeded stepsFailed materializations } } } }
}
"""
MATERIALIZATIONS = """
query ($path: [String!]!, $partition: String!) {
  assetOrError(assetKey: {path: $path}) { __typename ... on Asset {
    assetMaterializations(partitions: [$partition]) {
      runId partition metadataEntries { label ... on IntMetadataEntry { intValue } } } } }
}
"""
CHECKS = """
query ($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) { __typename ... on AssetNode {
    assetChecksOrError { __typename ... on AssetChecks { checks {
      name executionForLatestMaterialization { runId status evaluation { success } } } } } } }
}
"""


def _env(settings: Settings) -> dict[str, str]:
    """The environment that makes the webserver's Settings() equal ``settings``."""
    return subprocess_env(
        {
            "DAGSTER_HOME": str(settings.dagster_home),
            "CHURNOPS_HOME": str(settings.home),
            "CHURNOPS_SIMULATION__N_CUSTOMERS": str(settings.simulation.n_customers),
            "CHURNOPS_SIMULATION__HISTORY_MONTHS": str(settings.simulation.history_months),
        }
    )


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, list[str]]:
    settings = small_settings(tmp_path / "churnops", customers=CUSTOMERS, months=MONTHS)
    weeks = simulate(settings)
    write_instance_yaml(settings.dagster_home)
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))  # the yaml's storage reads it
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        register_weeks(instance, weeks)
    return settings, weeks


@pytest.mark.timeout(360)
def test_materialize_a_partition_from_the_asset_graph(world, tmp_path: Path) -> None:
    settings, weeks = world
    chromium = require_chromium()
    week = weeks[0]
    where = f"(asset_graph.png, launched.png and webserver.log in {tmp_path})"
    started = time.monotonic()
    with dagster_webserver(_env(settings), tmp_path / "webserver.log") as server:
        ready = time.monotonic()
        assert _runs(server, week) == [], "no run may exist before the click"
        # A fresh instance greets its first visitor with a newsletter dialog that can cover the graph and
        # swallow clicks (seen in CI): mark it seen on the server, as its own Skip button does.
        server.graphql("mutation SetNuxSeen { setNuxSeen }")
        short_id = _launch_from_the_ui(server, chromium, tmp_path, week, n_weeks=len(weeks))
        launched = time.monotonic()
        run = _wait_for_run(server, week, timeout=150)
        finished = time.monotonic()
        assert run["runId"].startswith(short_id), (run["runId"], short_id, where)

        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert tags.get("dagster/from_ui") == "true", tags
        assert [a["path"] for a in run["assetSelection"]] == [["raw", TABLE]]
        assert run["status"] == "SUCCESS", (
            f"run {run['runId']} ended {run['status']} {where}:\n{server.log_tail()}"
        )

        stats = server.graphql(RUN_STATS, {"runId": run["runId"]})["runOrError"]["stats"]
        assert stats["stepsFailed"] == 0 and stats["materializations"] == 1, (stats, where)

        events = server.graphql(MATERIALIZATIONS, {"path": ["raw", TABLE], "partition": week})
        materializations = events["assetOrError"]["assetMaterializations"]
        assert [(m["runId"], m["partition"]) for m in materializations] == [(run["runId"], week)], where
        metadata = {e["label"]: e.get("intValue") for e in materializations[0]["metadataEntries"]}

        checks = server.graphql(CHECKS, {"path": ["raw", TABLE]})["assetNodeOrError"]["assetChecksOrError"]
        (contract,) = [c for c in checks["checks"] if c["name"] == "contract"]
        execution = contract["executionForLatestMaterialization"]
        assert execution["runId"] == run["runId"] and execution["evaluation"]["success"], (execution, where)

    # Shown with `pytest -rP` (docs/architecture.md quotes it).
    print(
        f"webserver ready {ready - started:.1f} s, UI to launched {launched - ready:.1f} s, "
        f"run finished {finished - launched:.1f} s later"
    )
    landed = pl.read_parquet(landing_path(settings.landing_dir, TABLE, week)).height
    with Warehouse.of(settings).connect(read_only=True) as con:
        (stored,) = con.execute(f"SELECT count(*) FROM raw.{TABLE} WHERE week_start = ?", [week]).fetchone()  # type: ignore[misc]
    assert landed >= CUSTOMERS * 0.9, "the first week lands the initial customer base"
    assert stored == landed == metadata["dagster/row_count"]
    assert metadata["rows_rejected"] == 0


def _launch_from_the_ui(server: Webserver, chromium: Path, tmp_path: Path, week: str, n_weeks: int) -> str:
    """Asset graph -> click raw/<TABLE> -> Materialize selected -> pick ``week`` -> Launch 1 run.

    Returns the short run id the UI reports in its "Launched run" toast.
    """
    from playwright.sync_api import expect, sync_playwright

    graph_png = tmp_path / "asset_graph.png"
    launched_png = tmp_path / "launched.png"
    failure_png = tmp_path / "ui_failure.png"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user data dir
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1600},  # tall enough for all six raw nodes
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(60_000)  # generous: the UI renders slowly on a loaded 2-core box
        # A fresh instance greets its first visitor with a newsletter dialog: dismiss it when it shows.
        page.add_locator_handler(
            page.get_by_text("Join the Dagster community"),
            lambda: page.get_by_role("button", name="Skip").click(),
        )
        try:
            page.goto(f"{server.url}/locations/churn_assets/asset-groups/raw")
            node = page.locator(f"[data-tooltip='{TABLE}']")  # the raw node's title (landing is a link)
            node.wait_for()
            # The registered week partitions have reached the UI (the node's partition count).
            page.get_by_text(f"{n_weeks} partitions").first.wait_for()
            page.screenshot(path=graph_png)

            # The partition list below is a popover with role "dialog" too: name the launch dialog.
            dialog = page.get_by_role("dialog").filter(has_text=f"Launch runs to materialize raw / {TABLE}")
            # The newsletter dialog can pop up over the graph and swallow a click (seen in CI): if the
            # launch dialog does not open, dismiss what is in the way and click again.
            for attempt in range(3):
                node.click()
                page.get_by_role("button", name="Materialize selected").click()
                try:
                    expect(dialog).to_be_visible(timeout=20_000)
                    break
                except AssertionError:
                    if attempt == 2:
                        raise
                    page.keyboard.press("Escape")
            dialog.get_by_text("Select a partition").click()
            page.get_by_placeholder("Filter partitions").fill(week)
            option = page.locator("label").filter(has_text=week)
            option.click()
            expect(option.get_by_role("checkbox")).to_be_checked(timeout=30_000)
            page.keyboard.press("Escape")  # close the partition list, keep the dialog
            expect(dialog).to_contain_text("1 partition", timeout=30_000)
            dialog.get_by_role("button", name="Launch 1 run").click()
            # "Launching..." lasts until the webserver has handed the run to the launcher.
            expect(dialog).to_be_hidden(timeout=60_000)
            toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
            expect(toast).to_be_visible(timeout=30_000)
            page.screenshot(path=launched_png)
            short_id = toast.inner_text().split()[-1]
        except Exception as exc:
            page.screenshot(path=failure_png)
            pytest.fail(
                f"UI step failed: {exc}\nscreenshots: {graph_png} (asset graph), {failure_png} (at failure)\n"
                f"webserver log:\n{server.log_tail()}"
            )
        finally:
            context.close()
    return short_id


def _runs(server: Webserver, week: str) -> list[dict[str, Any]]:
    return server.graphql(RUNS, {"partition": week})["runsOrError"]["results"]  # type: ignore[no-any-return]


def _wait_for_run(server: Webserver, week: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = _runs(server, week)
        assert len(runs) <= 1, f"one click must launch one run, got {runs}"
        if runs and runs[0]["status"] in {"SUCCESS", "FAILURE", "CANCELED"}:
            return runs[0]
        time.sleep(1)
    pytest.fail(f"no finished run for week {week} after {timeout:.0f} s: {runs}\n{server.log_tail()}")
