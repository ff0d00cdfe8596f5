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
    chunk_rows: Annotated[
        int | None,
        typer.Option(min=1, help="Rows validated at a time (default: setting contracts.chunk_rows)."),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            min=0, help="Example rows reported per (column, rule) (default: contracts.sample_rows_per_rule)."
        ),
    ] = None,
) -> None:
    """Validate raw files against the contracts; exit 1 on any violation (the report is printed either way).

    An unreadable file (empty, not UTF-8, malformed CSV, not Parquet) is a violation of rule
    file_readable(<reason>) on the pseudo-column <file>; the other files are still checked.
    """
    if not folder.is_dir():
        fail(f"FOLDER: {folder} is not a folder")
    with json_output(as_json):
        import dataclasses

        from rich.markup import escape

        from churn_assets.ingestion.contract_files import ContractOptions, check_folder
        from churn_assets.settings import get_settings

        options = ContractOptions.from_settings(get_settings())
        if chunk_rows is not None:
            options = dataclasses.replace(options, chunk_rows=chunk_rows)
        if samples is not None:
            options = dataclasses.replace(options, sample_rows=samples)
        reports = check_folder(folder, options)
        if not reports:
            fail(
                f"FOLDER: no raw files found under {folder} (expected <table>/<week>.parquet or <table>.csv)"
            )
        failed = [r for r in reports if r.violations]
        console = human(as_json)
        if not as_json:
            for r in reports:
                if not r.readable:
                    status = "[red]unreadable"
                elif r.violations and r.rejected:
                    status = f"[red]{r.rejected:,} of {r.rows:,} rows rejected"
                elif r.violations:
                    status = "[red]the file breaks the contract"
                else:
                    status = "[green]ok"
                rows = f"{r.rows:,} rows" if r.rows is not None else "rows unknown"
                console.print(
                    f"{escape(r.file)} ({r.table}, {rows}): {status}", soft_wrap=True, highlight=False
                )
                for v in r.violations:
                    console.print(
                        f"  [red]✗[/red] table [bold]{r.table}[/bold] column [bold]{escape(str(v['column_name']))}[/bold] "
                        f"rule [bold]{escape(str(v['rule']))}[/bold]: {v['rows']:,} row(s), "
                        f"e.g. {escape(str(v['example'])[:120])}",
                        soft_wrap=True,
                        highlight=False,
                    )
                for w in r.warnings:
                    console.print(f"  [yellow]warning[/yellow]: {escape(w)}", soft_wrap=True, highlight=False)
        console.print(f"{len(reports)} file(s), {len(failed)} with violations")
    if as_json:
        emit_json([r.as_dict() for r in reports])
    raise typer.Exit(1 if failed else 0)
