"""The code location's resources: the whole typed ``Settings`` and the external handles built from it.

``settings`` is the one resource every asset, check, sensor and schedule reads (``ResourceParam[Settings]``):
a plain object, so nothing of it is resource config and the Dagster UI shows none of its values (secrets
such as ``serving.api_key`` included). The code location's ``@dg.definitions`` resolves it once per
process with ``get_settings()`` -- the runs the daemon launches read the environment the daemon was
started with; in-process runs and tests pass their own object (``build_resources(settings)``).

The other resources are handles on external systems, each built from that same object:

* ``warehouse``: the DuckDB warehouse (raw tables, quarantine, offline feature store);
* ``online_store``: the online feature store the domain factory ``make_online_store`` opens;
* ``mlflow``: MLflow tracking + registry target.

``mlflow`` is a thin ``ConfigurableResource`` over the modeling library's tracking (not
``dagster_mlflow.mlflow_tracking``): that legacy resource opens ONE process-wide active MLflow run per
Dagster run, so the library's one-run-per-candidate ``mlflow.start_run`` fails ("Run ... is already
active") unless every candidate becomes a nested run; it creates the experiment with
``mlflow.set_experiment`` (artifacts under ``./mlruns`` of the working directory instead of the state
folder) and leaves its run RUNNING unless a job hook ends it. See docs/modeling.md ("Dagster assets").
"""

from typing import TYPE_CHECKING, Any

import dagster as dg

from churn_assets.feature_store.online import OnlineStore, make_online_store
from churn_assets.modeling.paths import tracking_uri
from churn_assets.settings import Settings
from churn_assets.storage.warehouse import Warehouse

if TYPE_CHECKING:  # MLflow is imported when a run tracks, not when the code location loads
    from churn_assets.modeling.tracking import Tracking

SETTINGS = "settings"


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file (raw tables, quarantine, offline feature store) of ``settings``."""

    settings: dg.ResourceDependency[Settings]

    def warehouse(self) -> Warehouse:
        return Warehouse(self.settings.warehouse_path, memory_limit=self.settings.duckdb_memory_limit)


class OnlineStoreResource(dg.ConfigurableResource):
    """The online feature store of ``settings.feature_store`` (SQLite file by default, Redis in production)."""

    settings: dg.ResourceDependency[Settings]

    @property
    def backend(self) -> str:
        return self.settings.feature_store.online_backend

    def open(self) -> OnlineStore:
        return make_online_store(self.settings)


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking + registry target. ``tracking_uri`` empty = SQLite under the modeling home."""

    tracking_uri: str = ""
    experiment_name: str = "churnops"
    registered_model_name: str = "churn-model"

    def bind(self, settings: Settings) -> Settings:
        """``settings`` with this resource's tracking target (what the modeling library reads)."""
        modeling = settings.modeling.model_copy(
            update={
                "tracking_uri": self.tracking_uri or None,
                "experiment_name": self.experiment_name,
                "registered_model_name": self.registered_model_name,
            }
        )
        return settings.model_copy(update={"modeling": modeling})

    def tracking(self, settings: Settings) -> "Tracking":
        from churn_assets.modeling.tracking import configure

        return configure(self.bind(settings))

    def uri(self, settings: Settings) -> str:
        return tracking_uri(self.bind(settings))


def build_resources(settings: Settings) -> dict[str, Any]:
    """Every resource of the code location, for ``settings`` (the definitions and in-process runs)."""
    cfg = settings.modeling
    return {
        SETTINGS: dg.ResourceDefinition.hardcoded_resource(
            settings, description="The churnops Settings of this process (churn_assets/settings.py)."
        ),
        "warehouse": WarehouseResource(settings=settings),
        "online_store": OnlineStoreResource(settings=settings),
        "mlflow": MlflowResource(
            tracking_uri=cfg.tracking_uri or "",
            experiment_name=cfg.experiment_name,
            registered_model_name=cfg.registered_model_name,
        ),
    }
