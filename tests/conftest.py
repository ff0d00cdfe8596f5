"""Shared fixtures. Services (Redis, PostgreSQL) are real; an absent one fails the test loudly."""

from __future__ import annotations

import os

import pytest

from churn_assets.settings import Settings

# The repository root is importable (``tests.*``, ``bento.*``) through pytest's ``pythonpath`` option
# in pyproject.toml. The service URLs are the product's own settings (CHURNOPS_FEATURE_STORE__REDIS_URL,
# CHURNOPS_POSTGRES_URL), so the tests reach the same servers the product is configured for.

SHARED_SERVICE_GROUP = "shared-churn-service"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist (`make test`: ``--dist loadgroup``): a test file runs whole in one process,
    and every test of the session's shared churn service (``tests/serving/conftest.py``'s ``service``)
    runs in the same process, in collection order — they share its registry, rollout state and
    prediction log, so they run in the order they run without xdist."""
    root = config.rootpath
    for item in items:
        if "service" in getattr(item, "fixturenames", ()):
            group = SHARED_SERVICE_GROUP
        else:
            group = str(item.path.relative_to(root))
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = Settings().feature_store.redis_url.get_secret_value()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"Redis is required at {url} and did not answer ({exc}); start it with `make services`")
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    import sqlalchemy as sa

    # The default names psycopg2 (SQLAlchemy 2.1 defaults postgresql:// to psycopg 3; dagster-postgres
    # needs psycopg2).
    url = Settings().postgres_url.get_secret_value()
    try:
        with sa.create_engine(url).connect() as c:
            c.execute(sa.text("select 1"))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(
            f"PostgreSQL is required at {url} and did not answer ({exc}); start it with `make services`"
        )
    return url


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


@pytest.fixture(scope="session")
def history_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tiny worlds' simulated histories run through the main job once per session
    (tests/monitoring_helpers.py, ``HistoryCache``), shared by the session's pytest-xdist processes: their
    temporary folders (``popen-gw0``, ``popen-gw1``) sit in one session folder."""
    from tests.monitoring_helpers import HistoryCache

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "histories"
    root.mkdir(exist_ok=True)
    return HistoryCache(root)


@pytest.fixture(scope="session")
def dask_client_2w():
    """A real Dask cluster for the session: a scheduler and 2 worker processes on loopback, 1 GiB each."""
    from churn_assets.compute.cluster import dask_client
    from churn_assets.settings import ComputeSettings

    compute = ComputeSettings(engine="dask", scheduler="local:2", worker_memory_limit="1GiB")
    with dask_client(compute) as client:
        yield client
