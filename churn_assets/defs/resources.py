"""Dagster resources: thin, typed handles on the domain objects, configured from Settings."""

import datetime as dt
from pathlib import Path

import dagster as dg

from churn_assets.feature_store.online import OnlineStore, RedisOnlineStore, SQLiteOnlineStore
from churn_assets.settings import Settings, get_settings
from churn_assets.storage.warehouse import Warehouse
from churn_assets.timeline import Timeline


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file (raw tables, quarantine, offline feature store)."""

    path: str
    memory_limit: str | None = None

    def warehouse(self) -> Warehouse:
        return Warehouse(self.path, memory_limit=self.memory_limit)


class LandingZoneResource(dg.ConfigurableResource):
    """Folder where raw files land, one ``{table}/{week}.parquet`` per table and week."""

    path: str

    @property
    def folder(self) -> Path:
        return Path(self.path)


class OnlineStoreResource(dg.ConfigurableResource):
    """The online feature store backend (SQLite file by default, Redis in production)."""

    backend: str = "sqlite"
    sqlite_path: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = "churnops:fs"

    def open(self) -> OnlineStore:
        if self.backend == "redis":
            return RedisOnlineStore(self.redis_url, self.redis_key_prefix)
        return SQLiteOnlineStore(Path(self.sqlite_path))


class ContractPolicyResource(dg.ConfigurableResource):
    """How strict the raw contract checks are."""

    max_quarantine_share: float = 0.01


class TimelineResource(dg.ConfigurableResource):
    """The simulated calendar (which weeks carry feature snapshots)."""

    start_date: str
    lookback_weeks: int
    history_months: int
    label_horizon_days: int
    label_delay_weeks: int = 1

    def timeline(self) -> Timeline:
        return Timeline(
            start_date=dt.date.fromisoformat(self.start_date),
            lookback_weeks=self.lookback_weeks,
            history_months=self.history_months,
            label_horizon_days=self.label_horizon_days,
            label_delay_weeks=self.label_delay_weeks,
        )


def build_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or get_settings()
    sim, fs = settings.simulation, settings.feature_store
    return {
        "warehouse": WarehouseResource(
            path=str(settings.warehouse_path), memory_limit=settings.duckdb_memory_limit
        ),
        "landing": LandingZoneResource(path=str(settings.landing_dir)),
        "online_store": OnlineStoreResource(
            backend=fs.online_backend,
            sqlite_path=str(settings.online_sqlite_path),
            redis_url=fs.redis_url,
            redis_key_prefix=fs.redis_key_prefix,
        ),
        "contract_policy": ContractPolicyResource(
            max_quarantine_share=settings.contracts.max_quarantine_share
        ),
        "calendar": TimelineResource(
            start_date=sim.start_date.isoformat(),
            lookback_weeks=sim.lookback_weeks,
            history_months=sim.history_months,
            label_horizon_days=sim.label_horizon_days,
            label_delay_weeks=sim.label_delay_weeks,
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(), executor=dg.in_process_executor)
