"""``churnops contracts check``: validate raw files against the data contracts (CI, upstream teams)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churn_assets.cli.output import JsonOpt, emit_json, fail, human, json_output

contracts_app = typer.Typer(help="Data contracts of the raw tables.", no_args_is_help=True)


@contracts_app.command("check")
def contracts_check(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Folder with <table>/<week>.parquet|csv or <table>.csv files.", show_default=False
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Validate raw files against the contracts; exit 1 on any violation (the report is printed either way)."""
    if not folder.is_dir():
        fail(f"FOLDER: {folder} is not a folder")
    with json_output(as_json):
        from churn_assets.ingestion.contract_files import check_folder

        reports = check_folder(folder)
        if not reports:
            fail(
                f"FOLDER: no raw files found under {folder} (expected <table>/<week>.parquet or <table>.csv)"
            )
        failed = [r for r in reports if r.violations]
        console = human(as_json)
        if not as_json:
            for r in reports:
                status = (
                    "[green]ok" if not r.violations else f"[red]{r.rejected:,} of {r.rows:,} rows rejected"
                )
                console.print(f"{r.file} ({r.table}, {r.rows:,} rows): {status}")
                for v in r.violations:
                    console.print(
                        f"  [red]✗[/red] table [bold]{r.table}[/bold] column [bold]{v['column_name']}[/bold] "
                        f"rule [bold]{v['rule']}[/bold]: {v['rows']:,} row(s), e.g. {v['example']!s:.60}",
                        soft_wrap=True,
                        highlight=False,
                    )
        console.print(f"{len(reports)} file(s), {len(failed)} with violations")
    if as_json:
        emit_json([r.as_dict() for r in reports])
    raise typer.Exit(1 if failed else 0)
