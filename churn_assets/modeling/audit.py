"""The append-only audit log of registry decisions (what, when, why, who, metric values).

Stored in one SQL table ``registry_audit`` reached through SQLAlchemy: by default a SQLite file
``home/registry/audit.db`` (``settings.modeling.audit_url`` may point at PostgreSQL). The code only
ever INSERTs; on SQLite two triggers additionally make UPDATE and DELETE abort, so history cannot be
rewritten through the database either.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

METADATA = sa.MetaData()
AUDIT = sa.Table(
    "registry_audit",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.String(40)),
    sa.Column("semver", sa.String(40)),
    sa.Column("champion_before", sa.String(40)),
    sa.Column("champion_after", sa.String(40)),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
)
_SQLITE_GUARDS = [
    "CREATE TRIGGER IF NOT EXISTS registry_audit_no_update BEFORE UPDATE ON registry_audit "
    "BEGIN SELECT RAISE(ABORT, 'registry_audit is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS registry_audit_no_delete BEFORE DELETE ON registry_audit "
    "BEGIN SELECT RAISE(ABORT, 'registry_audit is append-only'); END",
]


@dataclass(frozen=True)
class AuditEntry:
    """One audit row: UTC timestamp, action, model version (+ semver), champion before/after, who, why,
    and the metric values the decision was based on."""

    id: int
    at: str
    action: str
    model: str
    version: str | None
    semver: str | None
    champion_before: str | None
    champion_after: str | None
    actor: str
    reason: str
    metrics: dict[str, Any]


class AuditLog:
    """Append-only audit table behind a SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        METADATA.create_all(self.engine)
        if self.engine.dialect.name == "sqlite":
            with self.engine.begin() as conn:
                for ddl in _SQLITE_GUARDS:
                    conn.exec_driver_sql(ddl)

    def append(
        self,
        action: str,
        model: str,
        actor: str,
        reason: str,
        version: str | None = None,
        semver: str | None = None,
        champion_before: str | None = None,
        champion_after: str | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        row = {
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "action": action,
            "model": model,
            "version": version,
            "semver": semver,
            "champion_before": champion_before,
            "champion_after": champion_after,
            "actor": actor,
            "reason": reason,
            "metrics": json.dumps(dict(metrics or {}), default=str, sort_keys=True),
        }
        with self.engine.begin() as conn:
            conn.execute(AUDIT.insert().values(**row))

    def read(self, model: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        """Entries oldest first (optionally only one model, optionally the last ``limit``)."""
        query = sa.select(AUDIT).order_by(AUDIT.c.id.desc())
        if model is not None:
            query = query.where(AUDIT.c.model == model)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [AuditEntry(**{**r, "metrics": json.loads(r["metrics"])}) for r in reversed(rows)]
