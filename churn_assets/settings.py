"""The one typed settings object of churnops.

Every tunable (paths, scale, seed, service URLs, thresholds) lives here. Values come from
environment variables prefixed ``CHURNOPS_`` (nested fields use ``__``, e.g.
``CHURNOPS_SIMULATION__N_CUSTOMERS=20000``) or an optional ``.env`` file, and fall back to
embedded defaults that run everything on one machine: DuckDB, SQLite, local MLflow.

No other module reads ``os.environ``; call :func:`get_settings` instead.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SCALES: dict[str, int] = {"tiny": 2_000, "small": 20_000, "full": 500_000}


class SimulationSettings(BaseModel):
    """Knobs of the simulated telecom world (see docs/simulation.md)."""

    seed: int = 42
    n_customers: int = Field(20_000, gt=0, description="Active customer base at the start of history.")
    start_date: dt.date = Field(
        dt.date(2023, 10, 2), description="Monday on which raw history starts (13 weeks of lookback)."
    )
    lookback_weeks: int = Field(13, ge=0, description="Weeks of raw data before the first snapshot month.")
    history_months: int = Field(18, ge=1, description="Monthly labelled feature snapshots in history.")
    label_horizon_days: int = Field(90, gt=0, description="A label is churn within this many days.")
    label_delay_weeks: int = Field(1, ge=0, description="Churn events reach the warehouse this late.")
    # Scripted production scenario (week numbers count production weeks from 1).
    campaign_start_week: int | None = Field(4, description="Week an acquisition campaign starts; None=off.")
    campaign_share: float = Field(0.7, ge=0, le=1, description="Share of new signups from the campaign.")
    campaign_signup_multiplier: float = Field(4.0, ge=1, description="Signup volume during the campaign.")
    concept_shift_week: int | None = Field(6, description="Week the churn drivers shift; None = off.")
    concept_shift_ramp_weeks: int = Field(8, ge=1, description="Weeks over which the shift fades in.")
    campaign_weeks: int | None = Field(16, ge=1, description="Weeks the campaign runs; None = until the end.")
    initial_tenure_years: float = Field(
        6.0, gt=0, description="Signup dates of the initial base spread over this many years before start."
    )

    @model_validator(mode="after")
    def _monday(self) -> SimulationSettings:
        if self.start_date.weekday() != 0:
            raise ValueError(f"simulation.start_date must be a Monday, got {self.start_date} ")
        return self


class FeatureStoreSettings(BaseModel):
    online_backend: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = "churnops:fs"


class ContractSettings(BaseModel):
    max_quarantine_share: float = Field(
        0.01, ge=0, le=1, description="A raw partition with more rejected rows than this blocks features."
    )


class Settings(BaseSettings):
    """Root settings. ``home`` holds every piece of local state (git-ignored)."""

    model_config = SettingsConfigDict(
        env_prefix="CHURNOPS_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    home: Path = Field(Path(".churnops"), description="Folder for all local state.")
    scale: Literal["tiny", "small", "full"] | None = Field(
        None, description="Shortcut for simulation.n_customers (tiny=2k, small=20k, full=500k)."
    )
    simulation: SimulationSettings = SimulationSettings()
    feature_store: FeatureStoreSettings = FeatureStoreSettings()
    contracts: ContractSettings = ContractSettings()
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"

    @model_validator(mode="after")
    def _apply_scale(self) -> Settings:
        if self.scale is not None:
            self.simulation = self.simulation.model_copy(update={"n_customers": SCALES[self.scale]})
        self.home = self.home.expanduser().resolve()
        return self

    # Derived paths: one place decides the layout of the state folder.
    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def online_sqlite_path(self) -> Path:
        return self.home / "online_store.sqlite"

    @property
    def world_state_path(self) -> Path:
        return self.home / "world" / "state.pkl"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
