"""The ``churnops`` command line (typer + rich)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from churn_assets.cli_modeling import register as register_modeling_commands
from churn_assets.cli_monitoring import register as register_monitoring_commands
from churn_assets.cli_serving import register as register_serving_commands
from churn_assets.settings import SCALES, Settings, get_settings

if TYPE_CHECKING:
    import dagster as dg

app = typer.Typer(help="churnops: customer-churn MLOps on Dagster.", no_args_is_help=True)
contracts_app = typer.Typer(help="Data contracts of the raw tables.", no_args_is_help=True)
features_app = typer.Typer(help="The feature store.", no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")
app.add_typer(features_app, name="features")
register_modeling_commands(app)
register_serving_commands(app)
register_monitoring_commands(app)

# Piped output (CI logs, files) gets wide lines instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

ScaleOpt = Annotated[
    str | None,
    typer.Option(
        "--scale", help=f"World size: {', '.join(f'{k}={v:,}' for k, v in SCALES.items())} customers."
    ),
]


def _settings(scale: str | None = None) -> Settings:
    settings = get_settings()
    if scale is not None:
        if scale not in SCALES:
            raise typer.BadParameter(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
        settings = settings.model_copy(
            update={
                "scale": scale,
                "simulation": settings.simulation.model_copy(update={"n_customers": SCALES[scale]}),
            }
        )
    return settings


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def _simulate(settings: Settings, weeks: int | None, overwrite: bool) -> list[str]:
    from churn_assets.simulation import World

    state = settings.world_state_path
    with _progress() as progress:
        if weeks is None or not state.exists():
            if state.exists() and not overwrite:
                err.print(f"[yellow]A world already exists at {state}; reusing it (--overwrite to rebuild).")
                return []
            world = World.create(settings.simulation)
            task = progress.add_task(
                f"simulating history ({settings.simulation.n_customers:,} customers)", total=None
            )
            keys = world.simulate_history(
                settings.landing_dir, progress=lambda i, n: progress.update(task, completed=i, total=n)
            )
            world.save(state)
            if weeks is None:
                return keys
        else:
            keys = []
            world = World.load(state)
        task = progress.add_task(f"simulating {weeks} production week(s)", total=weeks)
        keys += world.advance(
            weeks, settings.landing_dir, progress=lambda i, n: progress.update(task, completed=i)
        )
        world.save(state)
    return keys


@app.command()
def simulate(
    weeks: Annotated[int | None, typer.Option("--weeks", help="Production weeks to append.")] = None,
    scale: ScaleOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Rebuild the history even if a world exists.")] = False,
) -> None:
    """Simulate the history (first call) or append N production weeks of raw data."""
    from churn_assets.orchestration import instance_for, register_weeks

    settings = _settings(scale)
    keys = _simulate(settings, weeks, overwrite)
    new = register_weeks(instance_for(settings), keys)
    console.print(f"landed {len(keys)} week(s) under {settings.landing_dir}; {len(new)} new partition(s)")


@app.command()
def run(
    weeks: Annotated[
        str | None, typer.Option("--weeks", help="FIRST..LAST week keys; default: every landed week.")
    ] = None,
) -> None:
    """Run the main pipeline (raw -> contracts -> features -> online store) as one Dagster run."""
    settings = _settings()
    raise typer.Exit(_run_pipeline(settings, weeks))


def _landed_weeks(settings: Settings) -> list[str]:
    from churn_assets.ingestion.landing import landed_weeks

    return landed_weeks(settings.landing_dir, "usage")


def _run_pipeline(settings: Settings, weeks: str | None) -> int:
    from churn_assets.definitions import build_definitions
    from churn_assets.orchestration import instance_for, run_pipeline

    keys = _landed_weeks(settings)
    if weeks:
        first, _, last = weeks.partition("..")
        keys = [k for k in keys if first <= k <= (last or first)]
    if not keys:
        err.print("[red]no landed weeks: run `churnops simulate` first")
        return 2
    started = time.perf_counter()
    err.print(f"running churn_pipeline over {len(keys)} week(s): {keys[0]} .. {keys[-1]}")
    result = run_pipeline(instance_for(settings), keys, definitions=build_definitions(settings))
    _print_run_summary(settings, result, time.perf_counter() - started)
    return 0 if result.success else 1


def _print_run_summary(settings: Settings, result: dg.ExecuteInProcessResult, seconds: float) -> None:
    from churn_assets.orchestration.reporting import pipeline_summary

    summary = pipeline_summary(settings, result)
    table = Table(title=f"churn_pipeline {'succeeded' if summary.success else 'FAILED'} in {seconds:,.1f} s")
    for col in ("asset", "rows", "detail"):
        table.add_column(col)
    for row in summary.rows:
        table.add_row(row.asset, f"{row.rows:,}" if row.rows is not None else "-", row.detail)
    console.print(table)
    for line in summary.notes:
        console.print(line)


@app.command()
def train() -> None:
    """Run the training job: training set -> candidates -> challenger + gates -> champion decision."""
    from churn_assets.orchestration import instance_for, run_training

    settings = _settings()
    started = time.perf_counter()
    err.print("running the training job (tuning budget: settings.modeling)")
    result = run_training(instance_for(settings))
    _print_run_summary(settings, result, time.perf_counter() - started)
    raise typer.Exit(0 if result.success else 1)


@app.command()
def demo(
    scale: ScaleOpt = None,
    weeks: Annotated[
        int | None,
        typer.Option(
            "--weeks", help="Production weeks driven by the Dagster daemon (default automation.demo_weeks)."
        ),
    ] = None,
) -> None:
    """The whole story: history -> pipeline -> champion v1 + bento -> N production weeks run by the daemon."""
    from churn_assets.orchestration.demo import (
        bootstrap,
        check_world,
        demo_settings,
        final_report,
        run_weeks,
    )

    settings = demo_settings(_settings(scale))
    check_world(settings)
    started = time.perf_counter()
    _simulate(settings, None, overwrite=False)
    code = _run_pipeline(settings, None)
    if code != 0:
        raise typer.Exit(code)
    bootstrap(settings, err.print)
    n = settings.automation.demo_weeks if weeks is None else weeks
    rows = run_weeks(settings, n, lambda line: err.print(line, highlight=False)) if n > 0 else []
    if rows:
        from churn_assets.orchestration.demo import HEADERS

        table = Table(title=f"{n} production weeks driven by the Dagster daemon's sensors")
        for col in HEADERS:
            table.add_column(col)
        for row in rows:
            table.add_row(*row.cells())
        console.print(table)
    console.print("\n[bold]MLOps status report[/bold]")
    console.print(final_report(settings), highlight=False)
    console.print(
        f"\ndemo finished in {time.perf_counter() - started:,.0f} s; state: {settings.home}\n"
        "explore: [bold]make ui[/bold] (Dagster UI at http://127.0.0.1:3000)"
    )
    failed = [r for r in rows if r.failed_runs]
    raise typer.Exit(1 if failed else 0)


@contracts_app.command("check")
def contracts_check(
    folder: Annotated[
        Path, typer.Argument(help="Folder with <table>/<week>.parquet|csv or <table>.csv files.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Validate raw files against the contracts; exit 1 on any violation."""
    from churn_assets.ingestion.contract_files import check_folder

    if not folder.is_dir():
        err.print(f"[red]{folder} is not a folder")
        raise typer.Exit(2)
    reports = check_folder(folder)
    if not reports:
        err.print(f"[red]no raw files found under {folder} (expected <table>/<week>.parquet or <table>.csv)")
        raise typer.Exit(2)
    failed = [r for r in reports if r.violations]
    if as_json:
        print(json.dumps([r.as_dict() for r in reports], indent=2, default=str))
    else:
        for r in reports:
            status = "[green]ok" if not r.violations else f"[red]{r.rejected:,} of {r.rows:,} rows rejected"
            console.print(f"{r.file} ({r.table}, {r.rows:,} rows): {status}")
            for v in r.violations:
                console.print(
                    f"  [red]✗[/red] table [bold]{r.table}[/bold] column [bold]{v['column_name']}[/bold] "
                    f"rule [bold]{v['rule']}[/bold]: {v['rows']:,} row(s), e.g. {v['example']!s:.60}",
                    soft_wrap=True,
                    highlight=False,
                )
        console.print(f"{len(reports)} file(s), {len(failed)} with violations")
    raise typer.Exit(1 if failed else 0)


@features_app.command("list")
def features_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Print the feature registry: groups, features, types, owners, freshness."""
    from churn_assets.feature_store.registry import registry_rows, render_registry_table

    rows = registry_rows()
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        console.print(render_registry_table(rows))


@features_app.command("get")
def features_get(
    customer_ids: Annotated[list[int], typer.Argument(help="Customer ids.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Read customers' features from the online store, with staleness."""
    from churn_assets.feature_store.online_read import read_online

    payload = read_online(get_settings(), customer_ids)
    if as_json:
        print(json.dumps(payload, indent=2, default=str))
        return
    for customer in payload["customers"]:
        table = Table(title=f"customer {customer['customer_id']}")
        table.add_column("feature")
        table.add_column("value")
        for name, value in customer["features"].items():
            table.add_row(name, "[dim]expired/missing" if value is None else str(value))
        console.print(table)
        console.print(f"staleness: {customer['staleness']}")


def main() -> None:  # pragma: no cover - console entry point
    app(sys.argv[1:])
