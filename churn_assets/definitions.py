"""The churnops code location (``workspace.yaml`` loads this module).

The assets, checks and jobs are the module-level definitions of ``churn_assets/defs`` (loaded from the
folder); the resources, sensors and schedule are made here from ONE ``Settings`` object. The code
location resolves it once per process with ``get_settings()`` (the environment: the run subprocesses the
daemon launches see the environment the daemon was started with); in-process runs and tests call
:func:`build_definitions` with their own settings.
"""

from pathlib import Path

import dagster as dg

from churn_assets.defs.logs import configure_pipeline_logging
from churn_assets.defs.resources import build_resources
from churn_assets.defs.sensors import build_schedules, build_sensors
from churn_assets.settings import Settings, get_settings

PROJECT_ROOT = Path(__file__).parent.parent


def build_definitions(settings: Settings) -> dg.Definitions:
    """The whole code location for ``settings``."""
    configure_pipeline_logging(settings.logging)
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=PROJECT_ROOT),
        dg.Definitions(
            resources=build_resources(settings),
            sensors=build_sensors(settings.automation),
            schedules=build_schedules(settings.automation),
            executor=dg.in_process_executor,
        ),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(get_settings())
