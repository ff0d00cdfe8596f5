"""Pipeline commands of ``churnops``: ``simulate``, ``run``, ``train`` and ``demo``.

``run`` and ``train`` execute a Dagster job in this process and print each step as it starts and
ends (with elapsed seconds) on stderr, read from the run's events as the Dagster instance stores
them; the run summary table goes to stdout. Heavy modules (Dagster, the simulation, the demo) are
imported inside the commands.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from churn_assets.cli.output import err, fail, out

if TYPE_CHECKING:
    import dagster as dg
    from rich.progress import Progress

    from churn_assets.orchestration.reporting import StepUpdate
    from churn_assets.orchestration.runs import EventListener
    from churn_assets.settings import Settings

ScaleOpt = Annotated[
    str | None,
    typer.Option(
        "--scale",
        help="World size: tiny, small or full (2k, 20k, 500k customers; settings.SCALES).",
        show_default=False,
    ),
]


def settings_for(scale: str | None = None) -> Settings:
    """The process settings, with ``--scale`` applied to the simulation's customer count."""
    from churn_assets.settings import SCALES, get_settings

    settings = get_settings()
    if scale is None:
        return settings
    if scale not in SCALES:
        fail(f"--scale: unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return settings.model_copy(
        update={
            "scale": scale,
            "simulation": settings.simulation.model_copy(update={"n_customers": SCALES[scale]}),
        }
    )


def _progress() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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


def _simulate_sharded(
    settings: Settings, weeks: int | None, overwrite: bool, shards: int | None
) -> list[str]:
    """The world as independent customer shards (simulation/sharded.py), each shard a task of the
    configured engine: in this process (local) or on the Dask cluster (dask)."""
    import shutil

    from churn_assets.compute.engine import open_engine
    from churn_assets.simulation.sharded import MANIFEST, ShardedWorld
    from data_contracts.raw_tables import RAW_TABLES

    state = settings.sharded_world_dir
    exists = (state / MANIFEST).exists()
    keys: list[str] = []
    with open_engine(settings) as engine:
        if weeks is None or not exists:
            if exists and not overwrite:
                err.print(f"[yellow]A world already exists at {state}; reusing it (--overwrite to rebuild).")
                return []
            if shards is None:
                fail("no sharded world to continue: pass --shards N to create one")
            if exists:
                shutil.rmtree(state)
                for table in RAW_TABLES:
                    shutil.rmtree(settings.landing_dir / table, ignore_errors=True)
            err.print(
                f"simulating history ({settings.simulation.n_customers:,} customers, {shards} shards, {engine.label})"
            )
            world, keys = ShardedWorld.simulate_history(
                settings.simulation, shards, state, settings.landing_dir, engine.map_tasks
            )
            if weeks is None:
                return keys
        else:
            world = ShardedWorld.load(state, shards)
        err.print(f"simulating {weeks} production week(s) ({world.shards} shards, {engine.label})")
        world, more = world.advance(weeks, settings.landing_dir, engine.map_tasks)
    return keys + more


def simulate(
    weeks: Annotated[
        int | None, typer.Option("--weeks", min=1, help="Production weeks to append.", show_default=False)
    ] = None,
    scale: ScaleOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Rebuild the history even if a world exists.")] = False,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            min=1,
            help="Generate the world as N independent customer shards (per-shard seeds; on the Dask "
            "cluster when compute.engine = dask); later calls continue it.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Simulate the history (first call) or append N production weeks of raw data."""
    from churn_assets.orchestration import instance_for, register_weeks

    settings = settings_for(scale)
    if shards is not None and settings.world_state_path.exists():
        fail(f"a world generated whole exists at {settings.world_state_path}: it cannot continue as shards")
    if shards is not None or settings.sharded_world_dir.exists():
        keys = _simulate_sharded(settings, weeks, overwrite, shards)
    else:
        keys = _simulate(settings, weeks, overwrite)
    new = register_weeks(instance_for(settings), keys)
    out.print(f"landed {len(keys)} week(s) under {settings.landing_dir}; {len(new)} new partition(s)")


def run(
    weeks: Annotated[
        str | None,
        typer.Option(
            "--weeks", help="FIRST..LAST week keys; default: every landed week.", show_default=False
        ),
    ] = None,
) -> None:
    """Run the main pipeline (raw -> contracts -> features -> online store) as one Dagster run."""
    raise typer.Exit(_run_pipeline(settings_for(), weeks))


def _landed_weeks(settings: Settings) -> list[str]:
    from churn_assets.ingestion.landing import landed_weeks

    return landed_weeks(settings.landing_dir, "usage")


def _run_pipeline(settings: Settings, weeks: str | None) -> int:
    from churn_assets.definitions import build_definitions
    from churn_assets.orchestration import instance_for, run_pipeline

    keys = _landed_weeks(settings)
    if not keys:
        fail(f"no landed weeks under {settings.landing_dir}: run `churnops simulate` first")
    if weeks:
        first, _, last = weeks.partition("..")
        selected = [k for k in keys if first <= k <= (last or first)]
        if not selected:
            fail(f"--weeks {weeks}: no landed week in that range (landed: {keys[0]} .. {keys[-1]})")
        keys = selected
    started = time.perf_counter()
    err.print(f"running churn_pipeline over {len(keys)} week(s): {keys[0]} .. {keys[-1]}")
    result = run_pipeline(
        instance_for(settings), keys, definitions=build_definitions(settings), on_event=_step_printer()
    )
    _print_run_summary(settings, result, time.perf_counter() - started)
    return 0 if result.success else 1


def _step_printer() -> EventListener:
    """An ``on_event`` listener printing step started / succeeded / failed lines on stderr."""
    from churn_assets.orchestration.reporting import StepTracker

    tracker = StepTracker()

    def on_event(entry: dg.EventLogEntry) -> None:
        update = tracker.update(entry)
        if update is not None:
            err.print(_step_line(update), highlight=False, soft_wrap=True)

    return on_event


_STATUS_STYLE = {"started": "dim", "succeeded": "green", "failed": "red", "skipped": "yellow"}


def _step_line(update: StepUpdate) -> str:
    from rich.markup import escape

    style = _STATUS_STYLE.get(update.status, "yellow")
    seconds = f" in {update.seconds:,.1f} s" if update.seconds is not None else ""
    error = f": {escape(update.error)}" if update.error else ""
    return f"  step [bold]{escape(update.step)}[/bold] [{style}]{update.status}[/{style}]{seconds}{error}"


def _print_run_summary(settings: Settings, result: dg.ExecuteInProcessResult, seconds: float) -> None:
    from churn_assets.orchestration.reporting import pipeline_summary

    summary = pipeline_summary(settings, result)
    table = Table(
        title=f"{result.job_def.name} {'succeeded' if summary.success else 'FAILED'} in {seconds:,.1f} s"
    )
    for col in ("asset", "rows", "detail"):
        table.add_column(col)
    for row in summary.rows:
        table.add_row(row.asset, f"{row.rows:,}" if row.rows is not None else "-", row.detail)
    out.print(table)
    for line in summary.notes:
        out.print(line)


def train() -> None:
    """Run the training job: training set -> candidates -> challenger + gates -> champion decision."""
    from churn_assets.definitions import build_definitions
    from churn_assets.orchestration import instance_for, run_training

    settings = settings_for()
    if not _landed_weeks(settings):
        fail(f"no simulated data under {settings.home}: run `churnops simulate`, then `churnops run` first")
    if not settings.warehouse_path.exists():
        fail(f"no feature store at {settings.warehouse_path}: run `churnops run` first")
    started = time.perf_counter()
    err.print("running the training job (tuning budget: settings.modeling)")
    result = run_training(
        instance_for(settings), definitions=build_definitions(settings), on_event=_step_printer()
    )
    _print_run_summary(settings, result, time.perf_counter() - started)
    raise typer.Exit(0 if result.success else 1)


def demo(
    scale: ScaleOpt = None,
    weeks: Annotated[
        int | None,
        typer.Option(
            "--weeks",
            min=0,
            help="Production weeks driven by the sensors (default automation.demo_weeks).",
            show_default=False,
        ),
    ] = None,
    driver: Annotated[
        Literal["in_process", "daemon"] | None,
        typer.Option(
            "--driver",
            help="Who ticks the sensors and runs their runs: this process, or a dagster-daemon "
            "(default automation.demo_driver).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """The whole story: history -> pipeline -> champion v1 + bento -> N production weeks run by the sensors."""
    from churn_assets.orchestration.demo import (
        HEADERS,
        bootstrap,
        check_world,
        demo_settings,
        final_report,
        live_summary,
        run_weeks,
        shared_cluster,
        with_live_service,
    )

    settings = with_live_service(demo_settings(settings_for(scale)))
    if driver is not None:
        settings = settings.model_copy(
            update={"automation": settings.automation.model_copy(update={"demo_driver": driver})}
        )
    check_world(settings)
    started = time.perf_counter()

    def say(line: str) -> None:
        err.print(line, highlight=False)

    with shared_cluster(settings, say) as settings:
        _simulate(settings, None, overwrite=False)
        code = _run_pipeline(settings, None)
        if code != 0:
            raise typer.Exit(code)
        bootstrap(settings, err.print)
        n = settings.automation.demo_weeks if weeks is None else weeks
        rows = run_weeks(settings, n, say) if n > 0 else []
        if rows:
            by = "the Dagster daemon" if settings.automation.demo_driver == "daemon" else "this process"
            table = Table(title=f"{n} production weeks driven by the sensors (ticked by {by})")
            for col in HEADERS:
                table.add_column(col)
            for row in rows:
                table.add_row(*row.cells())
            out.print(table)
            out.print(live_summary(rows), highlight=False)
    out.print("\n[bold]MLOps status report[/bold]")
    out.print(final_report(settings), highlight=False)
    out.print(
        f"\ndemo finished in {time.perf_counter() - started:,.0f} s; state: {settings.home}\n"
        "explore: [bold]make ui[/bold] (Dagster UI at http://127.0.0.1:3000)"
    )
    failed = [r for r in rows if r.failed_runs]
    raise typer.Exit(1 if failed else 0)


PANEL = "Pipeline"


def register(app: typer.Typer) -> None:
    """Add the pipeline commands to the ``churnops`` app."""
    app.command("simulate", rich_help_panel=PANEL)(simulate)
    app.command("run", rich_help_panel=PANEL)(run)
    app.command("train", rich_help_panel=PANEL)(train)
    app.command("demo", rich_help_panel=PANEL)(demo)
