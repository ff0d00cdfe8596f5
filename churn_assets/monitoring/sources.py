"""Where monitoring reads its inputs: the champion, its training data, the production window.

* **Champion** (:func:`load_champion`): the registry alias ``champion`` — version, semver, feature
  list, decision threshold (tag ``metric.threshold``), training-data hash (``data_sha256``) and the
  model itself (loaded through MLflow, only when asked).
* **Reference** (:func:`reference_frame`): the champion's training data = the ``train`` split of the
  training set whose sha256 equals the champion's ``data_sha256`` tag, sampled (seeded) to at most
  ``monitoring.reference_max_rows`` rows. The sample is cached per data hash under
  ``<home>/monitoring/reference/`` — the training set file is overwritten by the next training run,
  the cached sample stays with the model it describes (call :func:`reference_frame` right after a
  promotion to pin it).
* **Current window** (:func:`current_window`): the production week's feature rows — the offline
  store's snapshot as of the Monday after the landing week, one row per active customer. Production
  scores every active customer once a week, so this is the rolling 7-day window of scored feature rows.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from churn_assets.feature_store.definitions import ENTITY, EVENT_TIMESTAMP, resolve
from churn_assets.feature_store.offline import OfflineStore, table_name
from churn_assets.modeling.registry import CHAMPION, ModelRegistry
from churn_assets.modeling.tracking import load_model
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.settings import Settings


class MonitoringError(RuntimeError):
    """Monitoring cannot run: a named input (champion, reference, snapshot) is missing."""


@dataclass
class Champion:
    name: str
    version: str
    semver: str
    features: list[str]
    threshold: float
    data_sha256: str
    flavor: str
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    model: Any = None

    def load(self) -> Any:
        if self.model is None:
            self.model = load_model(self.source, self.flavor)
        return self.model


def load_champion(settings: Settings, *, with_model: bool = True) -> Champion:
    """The current champion (raises :class:`MonitoringError` when there is none)."""
    registry = ModelRegistry(settings)
    mv = registry.version_by_alias(CHAMPION)
    if mv is None:
        raise MonitoringError(
            f"no champion in registered model {registry.name!r}: train and promote a model first (churnops train)"
        )
    tags = dict(mv.tags)
    champion = Champion(
        name=registry.name,
        version=str(mv.version),
        semver=tags.get("semver", "?"),
        features=json.loads(tags.get("features", "[]")),
        threshold=float(tags.get("metric.threshold", "0.5")),
        data_sha256=tags.get("data_sha256", ""),
        flavor=tags.get("flavor", "sklearn"),
        source=str(mv.source),
        tags=tags,
    )
    if with_model:
        champion.load()
    return champion


def _unwrap(model: Any, depth: int = 0) -> Any:
    """The innermost estimator with importances (calibration wrappers, FrozenEstimator, pipelines)."""
    if depth > 6 or model is None:
        return None
    if hasattr(model, "booster_") or hasattr(model, "feature_importances_"):
        return model
    for attr in ("calibrated_classifiers_", "steps"):
        inner = getattr(model, attr, None)
        if inner:
            first = inner[0][-1] if attr == "steps" else inner[0]
            found = _unwrap(first, depth + 1)
            if found is not None:
                return found
    for attr in ("estimator", "base_estimator"):
        found = _unwrap(getattr(model, attr, None), depth + 1)
        if found is not None:
            return found
    if hasattr(model, "steps"):
        return _unwrap(model.steps[-1][-1], depth + 1)
    return None


def feature_importance(model: Any, features: list[str]) -> dict[str, float] | None:
    """Gain importance per feature of a LightGBM (or ``feature_importances_`` of a tree model), None
    when the model does not expose one per input feature."""
    inner = _unwrap(model)
    if inner is None:
        return None
    if hasattr(inner, "booster_"):
        values = inner.booster_.feature_importance("gain")
    else:
        values = inner.feature_importances_
    if len(values) != len(features):
        return None
    return {f: float(v) for f, v in zip(features, values, strict=True)}


# ------------------------------------------------------------------------------------ reference
def reference_cache_path(settings: Settings, data_sha256: str) -> Path:
    return settings.monitoring_dir / "reference" / f"{data_sha256[:16]}.parquet"


def reference_frame(settings: Settings, champion: Champion) -> pl.DataFrame:
    """The champion's training rows (train split), sampled; cached per training-data hash."""
    cache = reference_cache_path(settings, champion.data_sha256)
    if cache.exists():
        return pl.read_parquet(cache)
    workdir = TrainingWorkdir.of(settings)
    path = workdir.training_set
    if not workdir.has_training_set():
        raise MonitoringError(f"no training set at {path}: the champion's training data cannot be found")
    stored = workdir.load_meta().get("sha256")
    if stored != champion.data_sha256:
        raise MonitoringError(
            f"the training set at {path} (sha256 {str(stored)[:12]}) is not the training data of champion "
            f"version {champion.version} (data_sha256 {champion.data_sha256[:12]}) and no cached reference "
            f"exists at {cache}"
        )
    frame = pl.read_parquet(path).filter(pl.col("split").cast(pl.String) == "train")
    if path.is_dir():  # sharded (compute.engine = dask): the local file's row order, hence the same sample
        frame = frame.sort("as_of", "customer_id")
    keep = [c for c in frame.columns if c not in ("split", "period", "churned")]
    frame = frame.select(keep)
    cap = settings.monitoring.reference_max_rows
    if frame.height > cap:
        frame = frame.sample(n=cap, seed=settings.monitoring.seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(cache)
    return frame


# ------------------------------------------------------------------------------------ current
def current_window(
    con: duckdb.DuckDBPyConnection, as_of: dt.date, features: list[str] | None = None
) -> pl.DataFrame:
    """``customer_id``, ``as_of`` and the features of every customer active at ``as_of`` (PIT).

    The snapshot of ``as_of`` holds a row per active customer in every group, and a point-in-time
    lookup at ``as_of`` returns exactly that row (the latest one ``<= as_of``). So the groups are
    joined on ``(customer_id, event_timestamp = as_of)`` directly; only when some group lacks a row
    for a customer does this fall back to ``OfflineStore.get_historical_features`` (whose as-of index
    is rebuilt after every write — ~27 s at full scale, against ~2 s for the direct join).
    """
    wanted = resolve(features)
    entity = con.sql(
        f"SELECT {ENTITY}, {EVENT_TIMESTAMP} FROM features.customer_account "
        f"WHERE {EVENT_TIMESTAMP} = CAST($d AS TIMESTAMP) ORDER BY {ENTITY}",
        params={"d": as_of},
    ).pl()
    if entity.height == 0:
        raise MonitoringError(
            f"no feature snapshot as of {as_of}: materialize the feature assets for that week"
        )
    cols, joins, checks = [], [], []
    for i, (group, names) in enumerate(wanted.items()):
        alias = f"g{i}"
        cols += [f"{alias}.{n}" for n in names]
        joins.append(
            f"LEFT JOIN {table_name(group)} {alias} ON {alias}.{ENTITY} = a.{ENTITY} "
            f"AND {alias}.{EVENT_TIMESTAMP} = a.{EVENT_TIMESTAMP}"
        )
        checks.append(f"count(*) FILTER ({alias}.{ENTITY} IS NULL)")
    base = (
        f"FROM features.customer_account a {' '.join(joins)} "
        f"WHERE a.{EVENT_TIMESTAMP} = CAST($d AS TIMESTAMP)"
    )
    [missing] = con.execute(f"SELECT {', '.join(checks)} {base}", {"d": as_of}).fetchall()
    if any(missing):
        frame = OfflineStore(con).get_historical_features(entity, features)
        frame = frame.with_columns(pl.col(EVENT_TIMESTAMP).cast(pl.Date).alias("as_of")).drop(EVENT_TIMESTAMP)
        return frame
    out = con.sql(
        f"SELECT a.{ENTITY}, {', '.join(cols)}, CAST(a.{EVENT_TIMESTAMP} AS DATE) AS as_of {base} ORDER BY a.{ENTITY}",
        params={"d": as_of},
    ).pl()
    return out
