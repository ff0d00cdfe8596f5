"""Shared fixtures. Services (Redis, PostgreSQL) are real; an absent one fails the test loudly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REDIS_URL = "redis://127.0.0.1:6379/0"
# SQLAlchemy 2.1 defaults postgresql:// to psycopg 3; dagster-postgres needs psycopg2: name it.
POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"Redis is required at {REDIS_URL} and did not answer ({exc}); start it (see .ci/run)")
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_url() -> str:
    import sqlalchemy as sa

    try:
        with sa.create_engine(POSTGRES_URL).connect() as c:
            c.execute(sa.text("select 1"))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(
            f"PostgreSQL is required at {POSTGRES_URL} and did not answer ({exc}); start it (see .ci/run)"
        )
    return POSTGRES_URL


@pytest.fixture
def fresh_postgres_database(postgres_url: str):
    """Factory: (re)create an empty database on the real server and return its URL."""
    import sqlalchemy as sa

    def make(name: str) -> str:
        engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as con:
            con.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            con.execute(sa.text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return postgres_url.rsplit("/", 1)[0] + f"/{name}"

    return make
