"""Resources of the training graph: the modeling settings and MLflow.

* ``modeling`` (:class:`ModelingResource`): where training state lives and the modeling settings.
* ``mlflow_config`` (:class:`MlflowResource`): the MLflow tracking + registry target (URI, experiment,
  registered model) every asset that reads or writes MLflow binds its settings with.
* ``mlflow``: dagster-mlflow's ``mlflow_tracking`` -- the MLflow parent run of one Dagster run (named
  after the job, tagged ``dagster_run_id``). Only the ``end_mlflow_on_run_finished`` hook of the
  ``training`` and ``retraining`` jobs requires it, so those two jobs open it (every step of theirs:
  in one process it is opened once, under a multiprocess executor each step process resumes the run
  it finds by that tag) and the hook ends it: FINISHED after the job's last step, FAILED on a failed
  step. Candidate runs logged meanwhile are nested under it (``tracking.log_candidate_run``).

``mlflow_resources(settings)`` returns the two MLflow entries to register. ``mlflow`` wraps the library's
resource only to (1) create the experiment with its artifact root under the state folder before the
library's ``mlflow.set_experiment`` would create it with MLflow's default root (the working directory)
and (2) take its URI / experiment from ``mlflow_config`` (one source of truth). Both the resource and the
hook import dagster-mlflow (hence MLflow, ~2 s) when they run, not when the code location loads: every
run the daemon launches loads this code location, most never train. See docs/modeling.md.
"""

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from churn_assets.modeling.paths import tracking_uri
from churn_assets.settings import ModelingSettings, Settings, SimulationSettings, get_settings

if TYPE_CHECKING:  # MLflow is imported when a run tracks, not when the code location loads
    from churn_assets.modeling.tracking import Tracking


class ModelingResource(dg.ConfigurableResource):
    """Where training state lives (``home``) and the modeling settings (JSON of ``ModelingSettings``)."""

    home: str
    modeling_json: str = "{}"
    label_delay_weeks: int = 1

    def settings(self) -> Settings:
        return Settings(
            home=Path(self.home),
            modeling=ModelingSettings.model_validate_json(self.modeling_json),
            simulation=SimulationSettings(label_delay_weeks=self.label_delay_weeks),
        )

    @property
    def workdir(self) -> Path:
        """Folder of the training assets' files (training set, candidates, challenger)."""
        return Path(self.home) / "training"


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking + registry target (resource key ``mlflow_config``). ``tracking_uri`` empty = SQLite
    under the modeling home."""

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


MLFLOW_RUN_KEY = "mlflow"  # the key dagster-mlflow's hook reads (context.resources.mlflow)
MLFLOW_CONFIG_KEY = "mlflow_config"


def _import_dagster_mlflow() -> Any:
    """dagster_mlflow, imported without its "currently in beta" warning (docs/modeling.md says so)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        import dagster_mlflow

    return dagster_mlflow


@dg.resource(
    required_resource_keys={"modeling", MLFLOW_CONFIG_KEY},
    description=(
        "dagster-mlflow mlflow_tracking: the MLflow parent run of this Dagster run (tag dagster_run_id), "
        "in the experiment of mlflow_config, created first with its artifact root under the state folder."
    ),
)
def mlflow_parent_run(context: dg.InitResourceContext) -> Iterator[Any]:
    from churn_assets.modeling.tracking import configure

    config: MlflowResource = getattr(context.resources, MLFLOW_CONFIG_KEY)
    settings = config.bind(context.resources.modeling.settings())
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
    required_resource_keys={MLFLOW_RUN_KEY},
)
"""dagster-mlflow's ``end_mlflow_on_run_finished`` (its hook function, imported when it runs): ends the
active MLflow run FINISHED when the job's last node succeeds, FAILED when a step fails."""


def mlflow_resources(settings: Settings | None = None) -> dict[str, Any]:
    """The MLflow resources to register: ``mlflow_config`` (target) and ``mlflow`` (the parent run)."""
    cfg = (settings or get_settings()).modeling
    return {
        MLFLOW_CONFIG_KEY: MlflowResource(
            tracking_uri=cfg.tracking_uri or "",
            experiment_name=cfg.experiment_name,
            registered_model_name=cfg.registered_model_name,
        ),
        MLFLOW_RUN_KEY: mlflow_parent_run,
    }


def build_training_resources(settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    return {
        "modeling": ModelingResource(
            home=str(settings.home),
            modeling_json=settings.modeling.model_dump_json(),
            label_delay_weeks=settings.simulation.label_delay_weeks,
        ),
        **mlflow_resources(settings),
    }


@dg.definitions
def training_resources() -> dg.Definitions:
    return dg.Definitions(resources=build_training_resources())
