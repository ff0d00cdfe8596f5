"""Resource of the monitoring assets: the monitoring settings (JSON of ``MonitoringSettings``)."""

import dagster as dg

from churn_assets.settings import MonitoringSettings, Settings, get_settings


class MonitoringResource(dg.ConfigurableResource):
    """Drift / performance rule settings (alert floors, Bonferroni alpha, AUC threshold, ...)."""

    monitoring_json: str = "{}"

    def config(self) -> MonitoringSettings:
        return MonitoringSettings.model_validate_json(self.monitoring_json)

    def bind(self, settings: Settings) -> Settings:
        """``settings`` with these monitoring settings."""
        return settings.model_copy(update={"monitoring": self.config()})


def build_monitoring_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or get_settings()
    return {"monitoring": MonitoringResource(monitoring_json=settings.monitoring.model_dump_json())}


@dg.definitions
def monitoring_resources() -> dg.Definitions:
    return dg.Definitions(resources=build_monitoring_resources())
