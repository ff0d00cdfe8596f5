"""Helpers that turn domain objects into Dagster metadata values."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pandera.polars as pa


def contract_table_schema(contract: type[pa.DataFrameModel]) -> dg.TableSchema:
    schema = contract.to_schema()
    columns = []
    for name, column in schema.columns.items():
        checks = ", ".join(str(c.name) for c in column.checks)
        columns.append(
            dg.TableColumn(
                name=name,
                type=str(column.dtype),
                description=column.description,
                constraints=dg.TableColumnConstraints(
                    nullable=bool(column.nullable),
                    unique=bool(column.unique),
                    other=[checks] if checks else [],
                ),
            )
        )
    return dg.TableSchema(columns=columns)


def png_markdown(path: str | Path, title: str = "") -> dg.MetadataValue:
    """A PNG embedded as a base64 data URI in markdown (the Dagster UI renders it inline)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return dg.MetadataValue.md(
        f"{f'**{title}**' if title else ''}\n\n![{title}](data:image/png;base64,{data})"
    )


def markdown_table(rows: Sequence[dict[str, Any]], limit: int = 20) -> str:
    """A markdown table of ``rows`` (dicts with the same keys); '' when empty."""
    if not rows:
        return ""
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows[:limit]:
        cells = [str(row.get(h, "")).replace("|", "\\|").replace("\n", " ")[:120] for h in headers]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > limit:
        lines.append(f"\n… {len(rows) - limit} more rows")
    return "\n".join(lines)
