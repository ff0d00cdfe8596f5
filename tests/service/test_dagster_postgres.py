"""The main job on a Dagster instance whose storage is the real PostgreSQL server."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from tests.pipeline_helpers import run, simulate, small_settings

pytestmark = [pytest.mark.service, pytest.mark.e2e]

DOCS_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "dagster" / "dagster_postgres.yaml"
DATABASE = "churnops_dagster_test"


@pytest.fixture
def pg_database(fresh_postgres_database) -> str:
    return fresh_postgres_database(DATABASE)


def test_pipeline_runs_on_dagster_with_postgres_storage(
    tmp_path: Path, pg_database: str, monkeypatch
) -> None:
    config = yaml.safe_load(DOCS_CONFIG.read_text())
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "CHURNOPS_DAGSTER_PG_URL"}
    monkeypatch.setenv("CHURNOPS_DAGSTER_PG_URL", pg_database)

    settings = small_settings(tmp_path / "state", customers=600, months=2)
    weeks = simulate(settings)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(DOCS_CONFIG, dagster_home / "dagster.yaml")  # exactly what the docs tell users to do
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        result = run(settings, weeks, instance)
        assert result.success
        assert instance.get_materialized_partitions(dg.AssetKey(["raw", "accounts"])) == set(weeks)

    # The run and its events are rows in PostgreSQL, not in a local SQLite file.
    engine = sa.create_engine(pg_database)
    with engine.connect() as con:
        runs = con.execute(sa.text("SELECT status FROM runs")).scalars().all()
        materializations = con.execute(
            sa.text("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        ).scalar_one()
        partitions = con.execute(sa.text("SELECT count(*) FROM dynamic_partitions")).scalar_one()
    engine.dispose()
    assert runs == ["SUCCESS"]
    assert materializations >= len(weeks) * 6
    assert partitions == len(weeks)
