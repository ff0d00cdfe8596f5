"""Resource carrying the whole churnops ``Settings`` to the production, rollout and retraining assets."""

import dagster as dg

from churn_assets.settings import Settings, get_settings


class ChurnopsSettingsResource(dg.ConfigurableResource):
    """The process's ``Settings`` as JSON (so a run launched by the daemon sees the launcher's values)."""

    settings_json: str

    def settings(self) -> Settings:
        return Settings.model_validate_json(self.settings_json)


def build_automation_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or get_settings()
    return {"churnops": ChurnopsSettingsResource(settings_json=settings.model_dump_json())}


@dg.definitions
def automation_resources() -> dg.Definitions:
    return dg.Definitions(resources=build_automation_resources())
