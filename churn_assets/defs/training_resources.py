"""Resources of the training graph: the modeling settings and MLflow tracking.

``mlflow`` is a thin ``ConfigurableResource`` over the modeling library's tracking (not
``dagster_mlflow.mlflow_tracking``): that legacy resource opens ONE process-wide active MLflow run per
Dagster run, so the library's one-run-per-candidate ``mlflow.start_run`` fails ("Run ... is already
active") unless every candidate becomes a nested run; it creates the experiment with
``mlflow.set_experiment`` (artifacts under ``./mlruns`` of the working directory instead of the state
folder) and leaves its run RUNNING unless a job hook ends it. See docs/modeling.md ("Dagster assets").
"""

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from churn_assets.modeling.paths import tracking_uri
from churn_assets.modeling.workdir import TrainingWorkdir
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
    def workdir(self) -> TrainingWorkdir:
        """The training assets' work folder (training set, candidates, challenger, decision)."""
        return TrainingWorkdir.of(self.settings())


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


def build_training_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or get_settings()
    cfg = settings.modeling
    return {
        "modeling": ModelingResource(
            home=str(settings.home),
            modeling_json=cfg.model_dump_json(),
            label_delay_weeks=settings.simulation.label_delay_weeks,
        ),
        "mlflow": MlflowResource(
            tracking_uri=cfg.tracking_uri or "",
            experiment_name=cfg.experiment_name,
            registered_model_name=cfg.registered_model_name,
        ),
    }


@dg.definitions
def training_resources() -> dg.Definitions:
    return dg.Definitions(resources=build_training_resources())
