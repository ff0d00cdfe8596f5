"""Modeling commands of ``churnops``: train-table, experiments, promote, rollback, audit.

Human output (tables) goes to stdout and progress to stderr; with ``--json`` stdout is one JSON
document and the tables go to stderr (:mod:`churn_assets.cli.output`). MLflow, scikit-learn and
LightGBM are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from churn_assets.cli.output import JsonOpt, emit_json, err, fail, human, json_output

if TYPE_CHECKING:
    from rich.progress import TaskID


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


SHOWN_PARAMS = {
    "learning_rate",
    "num_leaves",
    "max_depth",
    "n_estimators",
    "members",
    "weights",
    "C",
    "hidden",
    "max_iter",
    "imbalance",
    "calibration",
}
ModelNameOpt = Annotated[
    str | None,
    typer.Option(
        "--model-name",
        help="Registered model (default: the production model, settings modeling.registered_model_name).",
        show_default=False,
    ),
]
AUDIT_METRICS = ("auc", "challenger_auc", "champion_auc", "rolled_back_auc", "restored_auc")


def _short(value: str) -> str:
    try:
        return f"{float(value):.3g}"
    except ValueError:
        return value


def train_table_cmd(
    file: Annotated[
        Path, typer.Argument(help="CSV file with one row per customer.", exists=True, dir_okay=False)
    ],
    target: Annotated[str, typer.Option("--target", help="Label column.")],
    positive: Annotated[str, typer.Option("--positive", help="Value of the label column meaning churn.")],
    id_col: Annotated[str | None, typer.Option("--id", help="Identifier column (dropped).")] = None,
    time_col: Annotated[
        str | None, typer.Option("--time", help="Time column: time-based split instead of stratified.")
    ] = None,
    budget_seconds: Annotated[
        float | None, typer.Option("--budget-seconds", help="Optuna wall-clock budget (default: settings).")
    ] = None,
    trials: Annotated[int | None, typer.Option("--trials", help="Optuna trials (default: settings).")] = None,
    model_name: Annotated[
        str | None,
        typer.Option(
            "--model-name",
            help="Registered model of this table (default: the file's name, e.g. my-shop-churn). The "
            "production model's name is refused unless every feature is in the feature store.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Profile a CSV, infer its contract, tune + compare candidates, calibrate, evaluate, register
    (as a registered model of its own, promoted against that model's earlier versions only)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, TaskID] = {}
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    )

    def on_progress(task: str, done: int, total: int) -> None:
        if task not in tasks:
            tasks[task] = progress.add_task(task, total=total)
        progress.update(tasks[task], completed=done, total=total)

    with json_output(as_json):
        from churn_assets.modeling.registry import RegistryError
        from churn_assets.modeling.splits import TrainingDataError
        from churn_assets.modeling.train_table import train_table
        from churn_assets.settings import get_settings

        try:
            with progress:
                result = train_table(
                    file,
                    target,
                    positive,
                    get_settings(),
                    id_col=id_col,
                    time_col=time_col,
                    budget_seconds=budget_seconds,
                    trials=trials,
                    progress=on_progress,
                    model_name=model_name,
                )
        except (TrainingDataError, RegistryError) as exc:
            fail(str(exc))
        _print_training(result, human(as_json))
    if as_json:
        emit_json({k: v for k, v in result.items() if k not in ("contract", "profile")})


def _print_training(result: dict[str, Any], out: Console) -> None:
    profile = result["profile"]
    table = Table(
        title=f"Profile: {profile['path']} — {profile['rows']:,} rows, target rate {profile['target_rate']:.1%}"
    )
    for col in ("column", "type", "missing", "blank", "distinct", "examples"):
        table.add_column(col)
    for c in profile["columns"]:
        table.add_row(
            c["name"],
            c["dtype"],
            str(c["missing"]),
            str(c["blank_strings"]),
            str(c["distinct"]),
            ", ".join(c["examples"]),
        )
    out.print(table)
    out.print("[bold]Inferred pandera contract (YAML):[/bold]")
    out.print(result["contract"], markup=False, highlight=False)
    for action in result["cleaning"]["actions"]:
        out.print(f"  cleaning: {action}")
    runs = Table(title=f"Candidates ({result['split']['kind']} split {result['split']['sizes']})")
    for col in ("model", "val AUC", "test AUC", "imbalance"):
        runs.add_column(col)
    for name, auc in result["candidates_test_auc"].items():
        mark = " ← best" if name == result["best_model"] else ""
        runs.add_row(
            name + mark, _fmt(result["candidates_val_auc"][name]), _fmt(auc), result["imbalance"][name]
        )
    out.print(runs)
    m = result["test_metrics"]
    out.print(
        f"best {result['best_model']} (calibration {result['calibration']}, threshold {result['threshold']:.3f}): "
        f"test AUC {m['auc']:.3f} recall {m['recall']:.3f} precision {m['precision']:.3f} F1 {m['f1']:.3f} "
        f"Brier {m['brier']:.3f}"
    )
    out.print(
        f"registered {result['model_name']} version {result['model_version']} ({result['semver']}): "
        f"{result['promotion']} — {result['promotion_reason']}"
    )


def experiments_cmd(
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            help="The MLflow run holding the table (default: the latest training run).",
            show_default=False,
        ),
    ] = None,
    all_runs: Annotated[
        bool, typer.Option("--all", help="Every MLflow run of the experiment instead (newest first).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The experiment table of the latest training run (or --run): model, params, val / test AUC,
    recall, F1, fit time; --all lists every MLflow run."""
    with json_output(as_json):
        from churn_assets.modeling.tracking import experiment_table, list_runs
        from churn_assets.settings import get_settings

        if all_runs:
            rows = list_runs(get_settings())
        else:
            try:
                table = experiment_table(get_settings(), run)
            except Exception as exc:  # an unknown run id or a run without the table artifact
                fail(f"cannot read the experiment table{f' of run {run}' if run else ''}: {exc}", 1)
    if all_runs:
        _print_runs(rows, as_json)
        return
    if as_json:  # one row per candidate, each naming its training run; [] before any training
        emit_json(
            []
            if table is None
            else [
                {
                    **r,
                    "training_run_id": table.run_id,
                    "training_run": table.run_name,
                    "started": table.started,
                }
                for r in table.rows
            ]
        )
        return
    if table is None:
        human(as_json).print(
            "no training run has logged an experiment table yet (churnops train / train-table)"
        )
        return
    out = Table(
        title=f"Experiments of run {table.run_name} ({table.run_id[:8]}, {table.started}): "
        "val AUC chooses, test metrics at each candidate's val-F1 threshold"
    )
    for col in ("run", "model", "params", "val AUC", "test AUC", "recall", "F1", "fit time"):
        out.add_column(col)
    for r in table.rows:
        params = ", ".join(f"{k}={_short(str(v))}" for k, v in r["params"].items() if k in SHOWN_PARAMS)
        out.add_row(
            str(r["run_id"])[:8],
            r["model"] + (" ← chosen" if r.get("chosen") else ""),
            params,
            _fmt(r["val_auc"]),
            _fmt(r["test_auc"]),
            _fmt(r["recall"]),
            _fmt(r["f1"]),
            f"{r['train_seconds']:.1f}s" if r.get("train_seconds") is not None else "-",
        )
    human(as_json).print(out)


def _print_runs(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        emit_json(rows)
        return
    table = Table(title="Experiment runs (test metrics)")
    for col in ("run", "model", "params", "AUC", "recall", "F1", "fit time"):
        table.add_column(col)
    for r in rows:
        params = ", ".join(f"{k}={_short(v)}" for k, v in r["params"].items() if k in SHOWN_PARAMS)
        table.add_row(
            r["run_id"][:8],
            r["model"],
            params,
            _fmt(r["auc"]),
            _fmt(r["recall"]),
            _fmt(r["f1"]),
            f"{r['train_seconds']:.1f}s" if r["train_seconds"] is not None else "-",
        )
    human(as_json).print(table)


def promote_cmd(
    approve: Annotated[
        bool, typer.Option("--approve", help="Approve the pending challenger (manual mode).")
    ] = False,
    by: Annotated[
        str | None, typer.Option("--by", help="Name of the approver (recorded in the audit log).")
    ] = None,
    model_name: ModelNameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Manual-mode promotion: approve the challenger waiting for sign-off."""
    if not approve or not by:
        fail("--approve and --by NAME are both required: churnops promote --approve --by NAME")
    with json_output(as_json):
        from churn_assets.modeling.registry import ModelRegistry, RegistryError
        from churn_assets.settings import get_settings

        try:
            decision = ModelRegistry(get_settings(), name=model_name).approve(by=by)
        except RegistryError as exc:
            fail(str(exc), 1)
        human(as_json).print(
            f"version {decision.challenger} is now champion (was {decision.champion_before}); approved by {by}"
        )
    if as_json:
        emit_json(decision.__dict__)


def rollback_cmd(
    by: Annotated[str, typer.Option("--by", help="Who rolls back (recorded in the audit log).")] = "cli",
    reason: Annotated[
        str, typer.Option("--reason", help="Why (recorded in the audit log).")
    ] = "manual rollback",
    model_name: ModelNameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the previous champion the champion again (the current one becomes `previous`)."""
    with json_output(as_json):
        from churn_assets.modeling.registry import ModelRegistry, RegistryError
        from churn_assets.settings import get_settings

        try:
            decision = ModelRegistry(get_settings(), name=model_name).rollback(by=by, reason=reason)
        except RegistryError as exc:
            fail(str(exc), 1)
        human(as_json).print(f"champion rolled back: {decision.champion_before} → {decision.champion_after}")
    if as_json:
        emit_json(decision.__dict__)


def audit_cmd(
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the last N entries.", show_default=False)
    ] = None,
    model_name: ModelNameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The append-only registry audit log: what, when, why, who, metric values."""
    with json_output(as_json):
        from churn_assets.modeling.audit import AuditLog
        from churn_assets.modeling.paths import audit_url
        from churn_assets.settings import get_settings

        settings = get_settings()
        name = model_name or settings.modeling.registered_model_name
        entries = AuditLog(audit_url(settings)).read(name, limit)
    if as_json:
        emit_json([e.__dict__ for e in entries])
        return
    table = Table(title=f"Registry audit log: {name}")
    for col in ("at (UTC)", "action", "version", "champion", "who", "why", "metrics"):
        table.add_column(col)
    for e in entries:
        keys = [k for k in AUDIT_METRICS if k in e.metrics] + [k for k in e.metrics if k.startswith("gate.")]
        metrics = ", ".join(f"{k}={_fmt(e.metrics[k])}" for k in keys if e.metrics[k] is not None)
        champion = f"{e.champion_before or '-'} → {e.champion_after or '-'}"
        table.add_row(e.at, e.action, f"{e.version} ({e.semver})", champion, e.actor, e.reason, metrics)
    human(as_json).print(table)


PANEL = "Models"


def register(app: typer.Typer) -> None:
    """Add the modeling commands to the ``churnops`` app."""
    app.command("train-table", rich_help_panel=PANEL)(train_table_cmd)
    app.command("experiments", rich_help_panel=PANEL)(experiments_cmd)
    app.command("promote", rich_help_panel=PANEL)(promote_cmd)
    app.command("rollback", rich_help_panel=PANEL)(rollback_cmd)
    app.command("audit", rich_help_panel=PANEL)(audit_cmd)
