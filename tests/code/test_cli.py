"""The ``churnops`` command line as a user runs it: a subprocess per command, stdout and stderr apart.

What is asserted:
* importing the CLI loads none of the heavy libraries (a deterministic guard of ``--help``'s speed);
* ``--json`` means the same for every command that has it: the whole stdout is one JSON document
  (``json.loads``) on success -- also when ``contracts check`` exits 1 -- and empty on an error, whose
  one line goes to stderr;
* bad arguments and missing state are one line on stderr that says what to do, without a traceback;
* ``churnops run`` on a tiny world prints each step's start and end on stderr while the run executes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from churn_assets.settings import SCALES
from tests.modeling_helpers import TELCO_CSV

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "data_contracts" / "samples"
HEAVY = ("dagster", "mlflow", "sklearn", "lightgbm", "bentoml", "pandera", "polars")


def churnops(*args: object, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m churn_assets.cli ARGS`` with its own state folder (no CHURNOPS_* leaking in)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHURNOPS_", "DAGSTER_"))}
    clean.update(CHURNOPS_HOME=str(home), COLUMNS="200", **env)
    return subprocess.run(
        [sys.executable, "-m", "churn_assets.cli", *map(str, args)],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=900,
    )


def json_document(result: subprocess.CompletedProcess[str]) -> object:
    """The whole stdout parsed as one JSON document (fails the test with both streams otherwise)."""
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"stdout is not one JSON document ({exc})\n{result.stdout}\n{result.stderr}"
        ) from exc


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_importing_the_cli_loads_no_heavy_library() -> None:
    code = f"import sys, churn_assets.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr


@pytest.mark.parametrize(
    "group", [[], ["contracts"], ["features"], ["rollout"], ["run"], ["train"], ["simulate"], ["status"]]
)
def test_help_of_every_group(group: list[str], tmp_path: Path) -> None:
    result = churnops(*group, "--help", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage: " in result.stdout and result.stderr == ""


def test_scale_help_names_every_scale(tmp_path: Path) -> None:
    help_text = churnops("simulate", "--help", home=tmp_path).stdout
    assert all(scale in help_text for scale in SCALES)


@pytest.mark.parametrize(("folder", "code"), [("good", 0), ("bad", 1)])
def test_contracts_check_json_is_one_document_also_on_violations(
    folder: str, code: int, tmp_path: Path
) -> None:
    result = churnops("contracts", "check", SAMPLES / folder, "--json", home=tmp_path)
    assert result.returncode == code, result.stderr
    reports = json_document(result)
    assert isinstance(reports, list) and reports
    assert all({"file", "table", "rows", "rejected", "violations"} <= set(r) for r in reports)
    assert any(r["violations"] for r in reports) is (folder == "bad")
    assert "file(s)" in result.stderr  # the human summary still reaches the terminal


def test_contracts_check_of_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    result = churnops("contracts", "check", tmp_path / "nope", "--json", home=tmp_path)
    assert_one_line_error(result, 2, "FOLDER", "not a folder")


def test_features_list_json(tmp_path: Path) -> None:
    rows = json_document(churnops("features", "list", "--json", home=tmp_path))
    assert isinstance(rows, list) and {"group", "feature"} <= set(rows[0])


@pytest.mark.parametrize(
    "command", [["status"], ["experiments"], ["audit"], ["rollout", "status"], ["rollout", "rollback"]]
)
def test_json_commands_on_a_fresh_home(command: list[str], tmp_path: Path) -> None:
    result = churnops(*command, "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json_document(result)
    if command[0] == "rollout":
        assert isinstance(document, dict) and document["phase"] == "none"
    elif command == ["status"]:
        assert isinstance(document, dict) and {"model", "traffic"} <= set(document)
    else:
        assert document == []


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (["promote", "--approve", "--by", "ann"], ["challenger"]),
        (["rollback"], ["previous"]),
        (["rollout", "advance"], ["no rollout is active"]),
        (["bento-build"], ["churnops train"]),
    ],
)
def test_json_commands_without_state_fail_in_one_line_with_empty_stdout(
    command: list[str], words: list[str], tmp_path: Path
) -> None:
    result = churnops(*command, "--json", home=tmp_path)
    assert result.returncode in (1, 2), result.stderr
    assert_one_line_error(result, result.returncode, *words)


def test_bad_arguments_and_missing_state_are_one_line(tmp_path: Path) -> None:
    assert_one_line_error(churnops("simulate", "--scale", "huge", home=tmp_path), 2, "--scale", "tiny")
    assert_one_line_error(churnops("contracts", "check", home=tmp_path), 2, "Missing argument", "--help")
    assert_one_line_error(churnops("audit", "--limit", "0", home=tmp_path), 2, "--limit")
    assert_one_line_error(churnops("nope", home=tmp_path), 2, "No such command")
    assert_one_line_error(churnops("promote", home=tmp_path), 2, "--approve", "--by")
    assert_one_line_error(churnops("train", home=tmp_path), 2, "churnops simulate")
    assert_one_line_error(churnops("run", home=tmp_path), 2, "churnops simulate")
    assert_one_line_error(churnops("features", "get", "1", "--json", home=tmp_path), 2, "churnops run")


@pytest.mark.skipif(not TELCO_CSV.exists(), reason=f"{TELCO_CSV} is not on this machine")
def test_train_table_json_is_one_document(tmp_path: Path) -> None:
    small = tmp_path / "telco_600.csv"
    small.write_text("".join(TELCO_CSV.read_text().splitlines(keepends=True)[:601]))
    result = churnops(
        "train-table", small, "--target", "Churn", "--positive", "Yes", "--id", "customerID",
        "--trials", "2", "--budget-seconds", "10", "--json", home=tmp_path / "home",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    document = json_document(result)
    assert isinstance(document, dict) and document["model_version"] and "test_metrics" in document
    assert "Inferred pandera contract" in result.stderr  # the tables went to stderr


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    home = tmp_path_factory.mktemp("tiny")
    env = {"CHURNOPS_SCALE": "tiny", "CHURNOPS_SIMULATION__HISTORY_MONTHS": "4"}
    simulated = churnops("simulate", home=home, **env)
    assert simulated.returncode == 0, simulated.stderr
    return home, env


@pytest.mark.e2e
def test_run_prints_step_progress_on_stderr(tiny_world: tuple[Path, dict[str, str]]) -> None:
    home, env = tiny_world
    result = churnops("run", home=home, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    started = [line for line in lines if line.strip().startswith("step ") and line.endswith(" started")]
    succeeded = [line for line in lines if " succeeded in " in line and line.strip().endswith(" s")]
    assert any("raw__usage started" in line for line in started), result.stderr
    assert any("features__online_store succeeded in" in line for line in succeeded), result.stderr
    assert len(started) == len(succeeded) >= 6
    assert "churn_pipeline succeeded" in result.stdout  # the summary table stays on stdout
    assert "step " not in result.stdout

    features = json_document(churnops("features", "get", "1", "2", "--json", home=home, **env))
    assert isinstance(features, dict) and [c["customer_id"] for c in features["customers"]] == [1, 2]


def test_step_tracker_reports_seconds_and_the_root_cause_of_a_failed_step() -> None:
    import dagster as dg

    from churn_assets.orchestration.reporting import StepTracker, StepUpdate
    from churn_assets.orchestration.runs import listened_run_id

    @dg.op
    def fine() -> int:
        return 1

    @dg.op
    def broken(value: int) -> None:
        raise ValueError(f"column churn_flag has {value} null(s)\nsecond line")

    @dg.job
    def two_steps() -> None:
        broken(fine())

    tracker, updates = StepTracker(), []

    def on_event(entry: dg.EventLogEntry) -> None:
        update = tracker.update(entry)
        if update is not None:
            updates.append(update)

    instance = dg.DagsterInstance.ephemeral()
    result = two_steps.execute_in_process(
        instance=instance, raise_on_error=False, run_id=listened_run_id(instance, on_event)
    )
    assert not result.success
    assert [(u.step, u.status) for u in updates] == [
        ("fine", "started"),
        ("fine", "succeeded"),
        ("broken", "started"),
        ("broken", "failed"),
    ]
    assert updates[0] == StepUpdate("fine", "started")
    assert all(u.seconds is not None and u.seconds >= 0 for u in updates if u.status != "started")
    assert updates[-1].error == "ValueError: column churn_flag has 1 null(s)"
