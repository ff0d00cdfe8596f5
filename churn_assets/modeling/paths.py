"""Where modeling state lives: one function per store, all derived from :class:`Settings`.

The functions return the URLs in clear (they carry any password, for the code that connects):
show them only through :func:`churn_assets.settings.mask_url`.

Defaults keep everything in the state folder (``settings.home``):

* ``home/optuna/optuna.db`` — Optuna studies (SQLite RDB storage);
* ``home/mlflow/mlflow.db`` + ``home/mlflow/artifacts`` — MLflow tracking and model registry;
* ``home/registry/audit.db`` — the append-only promotion audit log.

Each can be pointed elsewhere (e.g. PostgreSQL) via ``settings.modeling``.
"""

from __future__ import annotations

from pathlib import Path

from churn_assets.settings import Settings


def _sqlite_url(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def optuna_storage_url(settings: Settings) -> str:
    """RDB URL of the Optuna storage."""
    url = settings.modeling.optuna_storage
    return url.get_secret_value() if url else _sqlite_url(settings.optuna_dir / "optuna.db")


def tracking_uri(settings: Settings) -> str:
    """MLflow tracking (and registry) URI."""
    url = settings.modeling.tracking_uri
    return url.get_secret_value() if url else _sqlite_url(settings.mlflow_dir / "mlflow.db")


def artifact_location(settings: Settings) -> str:
    """Explicit artifact root of the experiment (otherwise MLflow writes into the cwd)."""
    path = settings.mlflow_dir / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve().as_uri()


def mlflow_ui_options(settings: Settings) -> list[str]:
    """``mlflow ui`` options that open this project's tracking store and artifact root (``make mlflow-ui``)."""
    return [
        "--backend-store-uri",
        tracking_uri(settings),
        "--default-artifact-root",
        artifact_location(settings),
    ]


def audit_url(settings: Settings) -> str:
    """SQLAlchemy URL of the promotion audit log."""
    url = settings.modeling.audit_url
    return url.get_secret_value() if url else _sqlite_url(settings.registry_dir / "audit.db")
