"""The code location's resources: the whole typed ``Settings`` and the external handles built from it.

``settings`` is the one resource every asset, check, sensor and schedule reads (``ResourceParam[Settings]``):
a plain object, so nothing of it is resource config and the Dagster UI shows none of its values (secrets
such as ``serving.api_key`` included). The code location's ``@dg.definitions`` resolves it once per
process with ``get_settings()`` -- the runs the daemon launches read the environment the daemon was
started with; in-process runs and tests pass their own object (``build_resources(settings)``).

The other resources are handles on external systems, each built from that same object:

* ``warehouse``: the DuckDB warehouse (raw tables, quarantine, offline feature store);
* ``online_store``: the online feature store the domain factory ``make_online_store`` opens;
* ``compute``: the engine of ``settings.compute`` (``local``, or a Dask cluster the heavy data stages run
  on per customer shard; docs/scale_out.md) -- opened by the assets that use it, for their step only;
* ``mlflow``: dagster-mlflow's ``mlflow_tracking``, the MLflow parent run of one Dagster run (named after
  the job, tagged ``dagster_run_id``). The ``end_mlflow_on_run_finished`` hook of the ``training`` and
  ``retraining`` jobs requires it, so those jobs open it (in one process once; under a multiprocess
  executor each step process resumes the run it finds by that tag) and the hook ends it: FINISHED after
  the job's last step, FAILED on a failed step. Candidate runs logged meanwhile are nested under it
  (``tracking.log_candidate_run``). The MLflow target itself (URI, experiment, registered model) is
  ``settings.modeling``.

``mlflow`` wraps the library's resource only to (1) create the experiment with its artifact root under the
state folder before the library's ``mlflow.set_experiment`` would create it with MLflow's default root (the
working directory) and (2) take its URI and experiment from the settings. Both the resource and the hook
import dagster-mlflow (hence MLflow, ~2 s) when they run, not when the code location loads: every run the
daemon launches loads this code location, most never train. See docs/modeling.md.
"""

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from churn_assets.compute.engine import Engine, open_engine
from churn_assets.feature_store.online import OnlineStore, make_online_store
from churn_assets.settings import Settings
from churn_assets.storage.warehouse import Warehouse

SETTINGS = "settings"


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file (raw tables, quarantine, offline feature store) of ``settings``."""

    settings: dg.ResourceDependency[Settings]

    def warehouse(self) -> Warehouse:
        return Warehouse.of(self.settings)


class OnlineStoreResource(dg.ConfigurableResource):
    """The online feature store of ``settings.feature_store`` (SQLite file by default, Redis in production)."""

    settings: dg.ResourceDependency[Settings]

    @property
    def backend(self) -> str:
        return self.settings.feature_store.online_backend

    def open(self) -> OnlineStore:
        return make_online_store(self.settings)


class ComputeResource(dg.ConfigurableResource):
    """The engine of ``settings.compute``: ``local`` (this process) or a Dask cluster (a ``local:N``
    cluster, or a running scheduler). Opened by the first step of the run process that asks for it
    (:meth:`engine`) and kept for the run's other steps in that process; closed (a ``local:N`` cluster
    stopped) when the run's execution in that process ends."""

    settings: dg.ResourceDependency[Settings]
    _stack: contextlib.ExitStack | None = PrivateAttr(default=None)
    _engine: Engine | None = PrivateAttr(default=None)

    def engine(self) -> contextlib.AbstractContextManager[Engine]:
        if self._engine is None:
            stack = contextlib.ExitStack()
            try:
                self._engine = stack.enter_context(open_engine(self.settings))
            except BaseException:
                stack.close()
                raise
            self._stack = stack
        return contextlib.nullcontext(self._engine)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self._engine = None, None


MLFLOW = "mlflow"  # the key dagster-mlflow's hook reads (context.resources.mlflow)


def _import_dagster_mlflow() -> Any:
    """dagster_mlflow, imported without its "currently in beta" warning (docs/modeling.md says so)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        import dagster_mlflow

    return dagster_mlflow


@dg.resource(
    required_resource_keys={SETTINGS},
    description=(
        "dagster-mlflow mlflow_tracking: the MLflow parent run of this Dagster run (tag dagster_run_id), in "
        "the experiment of settings.modeling, created first with its artifact root under the state folder."
    ),
)
def mlflow_parent_run(context: dg.InitResourceContext) -> Iterator[Any]:
    from churn_assets.modeling.tracking import configure

    settings: Settings = getattr(context.resources, SETTINGS)
    tracking = configure(settings)  # get-or-create the experiment with the state folder's artifact root
    library_config = {
        "experiment_name": settings.modeling.experiment_name,
        "mlflow_tracking_uri": tracking.uri,
    }
    with warnings.catch_warnings():  # "currently in beta" on every call of the resource and its class
        warnings.simplefilter("ignore", dg.BetaWarning)
        run = _import_dagster_mlflow().mlflow_tracking.resource_fn(context.replace_config(library_config))
        parent = next(run)  # the library's MlFlow: started (or resumed) the parent run
    try:
        yield parent
    finally:
        next(run, None)  # the library's teardown: cleanup_on_error ends the run FAILED/KILLED on an error


def _end_mlflow_on_run_finished(context: dg.HookContext, event_list: Any) -> Any:
    return _import_dagster_mlflow().end_mlflow_on_run_finished.hook_fn(context, event_list)


end_mlflow_on_run_finished = dg.HookDefinition(
    name="end_mlflow_on_run_finished",
    hook_fn=_end_mlflow_on_run_finished,
    required_resource_keys={MLFLOW},
)
"""dagster-mlflow's ``end_mlflow_on_run_finished`` (its hook function, imported when it runs): ends the
active MLflow run FINISHED when the job's last node succeeds, FAILED when a step fails."""


def build_resources(settings: Settings) -> dict[str, Any]:
    """Every resource of the code location, for ``settings`` (the definitions and in-process runs)."""
    return {
        SETTINGS: dg.ResourceDefinition.hardcoded_resource(
            settings, description="The churnops Settings of this process (churn_assets/settings.py)."
        ),
        "warehouse": WarehouseResource(settings=settings),
        "online_store": OnlineStoreResource(settings=settings),
        "compute": ComputeResource(settings=settings),
        MLFLOW: mlflow_parent_run,
    }
