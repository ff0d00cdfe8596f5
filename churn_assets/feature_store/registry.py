"""Feature registry: the declared features as rows, and feature → model dependency records.

:func:`registry_rows` and :func:`render_registry_table` feed ``churnops features list [--json]``.
Which model versions use which features is recorded in the DuckDB table
``features.model_dependencies(model_name, model_version, feature, group_name, recorded_at)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import duckdb
from rich.table import Table

from churn_assets.feature_store.definitions import FEATURE_GROUPS, resolve
from churn_assets.feature_store.offline import SCHEMA, utcnow

DEPENDENCY_TABLE = f"{SCHEMA}.model_dependencies"


def registry_rows() -> list[dict[str, Any]]:
    """One JSON-ready dict per declared feature, in declaration order.

    Keys: ``group, feature, dtype, description, owner, entity, update_frequency, ttl_days, sources``
    (``sources`` is a list of raw table names).
    """
    return [
        {
            "group": g.name,
            "feature": f.name,
            "dtype": f.dtype,
            "description": f.description,
            "owner": g.owner,
            "entity": g.entity,
            "update_frequency": g.update_frequency,
            "ttl_days": g.ttl / dt.timedelta(days=1),
            "sources": list(g.sources),
        }
        for g in FEATURE_GROUPS
        for f in g.features
    ]


def render_registry_table(rows: Sequence[dict[str, Any]]) -> Table:
    """A rich table of :func:`registry_rows`: a line per feature, group facts once, rules between groups.

    Rows that carry ``status`` (and ``last_used_at``), as ``churnops features list`` adds from the feature
    lifecycle, get a ``status`` and a ``last used`` column."""
    lifecycle = bool(rows) and "status" in rows[0]
    table = Table(title=f"Feature registry: {len(rows)} features", show_lines=False)
    columns = ["group", "feature", "dtype", "description", "owner", "freshness", "TTL", "sources"]
    for column in columns + (["status", "last used"] if lifecycle else []):
        table.add_column(column, overflow="fold")
    for i, row in enumerate(rows):
        first = i == 0 or rows[i - 1]["group"] != row["group"]
        last = i == len(rows) - 1 or rows[i + 1]["group"] != row["group"]
        table.add_row(
            row["group"] if first else "",
            row["feature"],
            row["dtype"],
            row["description"],
            row["owner"] if first else "",
            row["update_frequency"] if first else "",
            f"{row['ttl_days']:g} d" if first else "",
            ", ".join(row["sources"]) if first else "",
            *([str(row["status"] or "—"), str(row.get("last_used_at") or "—")[:10]] if lifecycle else []),
            end_section=last,
        )
    return table


def ensure_dependency_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``features.model_dependencies`` when it does not exist."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {DEPENDENCY_TABLE} (model_name VARCHAR NOT NULL,"
        " model_version VARCHAR NOT NULL, feature VARCHAR NOT NULL, group_name VARCHAR NOT NULL,"
        " recorded_at TIMESTAMP NOT NULL, PRIMARY KEY (model_name, model_version, feature))"
    )


def record_model_features(
    con: duckdb.DuckDBPyConnection,
    model_name: str,
    model_version: str | int,
    features: Sequence[str] | None,
    *,
    recorded_at: dt.datetime | None = None,
) -> int:
    """Record that ``model_name`` ``model_version`` uses ``features`` (references as in ``resolve``).

    Replaces what was recorded for that model version; returns the number of features recorded.
    Unknown features raise ``KeyError``.
    """
    ensure_dependency_table(con)
    resolved = resolve(list(features) if features is not None else None)
    rows = [
        (model_name, str(model_version), feature, group, recorded_at or utcnow())
        for group, names in resolved.items()
        for feature in dict.fromkeys(names)
    ]
    con.begin()
    try:
        con.execute(
            f"DELETE FROM {DEPENDENCY_TABLE} WHERE model_name = ? AND model_version = ?",
            [model_name, str(model_version)],
        )
        if rows:
            con.executemany(f"INSERT INTO {DEPENDENCY_TABLE} VALUES (?, ?, ?, ?, ?)", rows)
    except BaseException:
        con.rollback()
        raise
    con.commit()
    return len(rows)


def models_using(con: duckdb.DuckDBPyConnection, feature: str) -> list[dict[str, Any]]:
    """Model versions recorded as using ``feature`` (a bare name or ``group:feature``), newest first.

    Each item: ``model_name, model_version, group_name, recorded_at``.
    """
    ensure_dependency_table(con)
    name = feature.split(":", 1)[1] if ":" in feature else feature
    rows = con.execute(
        f"SELECT model_name, model_version, group_name, recorded_at FROM {DEPENDENCY_TABLE}"
        " WHERE feature = ? ORDER BY recorded_at DESC, model_name, model_version",
        [name],
    ).fetchall()
    return [
        dict(zip(("model_name", "model_version", "group_name", "recorded_at"), r, strict=True)) for r in rows
    ]


def dependency_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every recorded (model version, feature) pair: ``model_name, model_version, feature, group_name,
    recorded_at``, by model name, version number, then feature; empty when nothing was recorded (also on a
    read-only connection to a warehouse without the table)."""
    [(exists,)] = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = 'model_dependencies'",
        [SCHEMA],
    ).fetchall()
    if not exists:
        return []
    rows = con.execute(
        f"SELECT model_name, model_version, feature, group_name, recorded_at FROM {DEPENDENCY_TABLE}"
        " ORDER BY model_name, TRY_CAST(model_version AS BIGINT), model_version, feature"
    ).fetchall()
    keys = ("model_name", "model_version", "feature", "group_name", "recorded_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]
