"""dagster-mlflow's parent run without training: the hook on the training / retraining jobs, and a two-step
job under the multiprocess executor (each step its own process) logging through ``log_candidate_run``."""

import os
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from churn_assets.defs.jobs import RETRAINING_JOB, TRAINING_JOB
from churn_assets.defs.resources import build_resources, end_mlflow_on_run_finished
from churn_assets.modeling.tracking import configure, log_candidate_run
from churn_assets.orchestration import load_definitions
from churn_assets.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.mark.parametrize(("job_name", "last_step"), [(TRAINING_JOB, "champion"), (RETRAINING_JOB, "start")])
def test_training_jobs_end_their_parent_run_after_their_last_step(job_name: str, last_step: str) -> None:
    job = load_definitions().resolve_job_def(job_name)
    assert end_mlflow_on_run_finished in job.hook_defs
    assert "mlflow" in job.resource_defs
    # The library ends the run FINISHED when this node succeeds; it always materializes (a kept champion
    # is recorded, not skipped), so a successful run reaches it.
    assert job.nodes_in_topological_order[-1].name.endswith(f"__{last_step}")


def _log(settings: Settings, name: str) -> None:
    X = pd.DataFrame({"tenure_days": np.arange(20.0), "plan": pd.Categorical(["a", "b"] * 10)})
    model = LogisticRegression().fit(X[["tenure_days"]], np.arange(20) % 2)
    log_candidate_run(
        configure(settings), name, model, "sklearn", {}, {"auc": 0.5}, input_example=X[["tenure_days"]]
    )


def two_steps(home: str) -> dg.JobDefinition:
    settings = Settings(home=Path(home))

    @dg.op
    def first() -> int:
        _log(settings, "first")
        return os.getpid()

    @dg.op
    def second(first_pid: int) -> None:
        assert os.getpid() != first_pid  # really another process
        _log(settings, "second")

    @dg.job(
        resource_defs=build_resources(settings),
        executor_def=dg.multiprocess_executor,
        hooks={end_mlflow_on_run_finished},
    )
    def two_step_job() -> None:
        second(first())

    return two_step_job


def test_multiprocess_steps_share_one_parent_run(tmp_path: Path) -> None:
    """The step that creates the parent and the step that ends it are different processes (the second
    resumes the parent it finds by its dagster_run_id tag)."""
    home = tmp_path / "home"
    job = dg.build_reconstructable_job(
        __name__,
        "two_steps",
        reconstructable_args=(str(home),),
        reconstructor_working_directory=str(Path(__file__).parents[2]),  # where `tests` imports from
    )
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.execute_job(job, instance=instance)
    assert result.success
    tracking = configure(Settings(home=home))
    runs = tracking.client.search_runs([tracking.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("dagster_run_id") == result.run_id]
    assert parent.info.run_name == "two_step_job" and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["first", "second"]
    assert len(runs) == 3  # nothing logged outside the parent
    assert all(r.info.artifact_uri.startswith((home / "mlflow" / "artifacts").as_uri()) for r in runs)
    for child in children:
        [output] = child.outputs.model_outputs
        info = mlflow.models.get_model_info(f"models:/{output.model_id}")
        assert info.signature is not None and info.signature.inputs.input_names() == ["tenure_days"]
