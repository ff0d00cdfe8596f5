"""Writing one landing week: the six raw tables as Parquet files with the exact contract schemas.

Layout: ``{landing_dir}/{table}/{week_key}.parquet``. Columns are built straight from numpy arrays
into Arrow (categoricals via dictionary arrays), in contract order and with the Arrow types that
read back as the contract's polars dtypes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from data_contracts.raw_tables import RAW_TABLES, polars_schema

# Column name -> values: a numpy array (converted to the contract type) or a ready Arrow array.
Columns = dict[str, "np.ndarray | pa.Array"]


def _arrow_type(dtype: pl.DataType) -> pa.DataType:
    if dtype == pl.Date:
        return pa.date32()
    if dtype == pl.Int64:
        return pa.int64()
    if dtype == pl.Float64:
        return pa.float64()
    if dtype == pl.String:
        return pa.string()
    if dtype == pl.Boolean:
        return pa.bool_()
    if isinstance(dtype, pl.Datetime) or dtype == pl.Datetime:
        return pa.timestamp("us")
    raise TypeError(f"no Arrow mapping for {dtype}")


ARROW_SCHEMAS: dict[str, pa.Schema] = {
    table: pa.schema([(name, _arrow_type(dtype)) for name, dtype in polars_schema(table).items()])
    for table in RAW_TABLES
}


def categorical(codes: np.ndarray, categories: tuple[str, ...]) -> pa.Array:
    """String column from integer codes into ``categories`` (no per-row Python objects)."""
    dictionary = pa.array(list(categories), pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), dictionary).cast(pa.string())


def to_table(table: str, columns: Columns, n_rows: int) -> pa.Table:
    """Arrow table of ``table`` from numpy arrays / Arrow arrays keyed by column name."""
    schema = ARROW_SCHEMAS[table]
    arrays = []
    for field in schema:
        values = columns[field.name]
        if isinstance(values, pa.Array):
            arr = values if values.type == field.type else values.cast(field.type)
        elif pa.types.is_date32(field.type):
            arr = pa.array(np.asarray(values, np.int32), pa.int32()).view(pa.date32())
        elif pa.types.is_timestamp(field.type):
            arr = pa.array(np.asarray(values, np.int64), pa.int64()).view(pa.timestamp("us"))
        else:
            arr = pa.array(values, field.type)
        if len(arr) != n_rows:
            raise ValueError(f"{table}.{field.name}: {len(arr)} values, expected {n_rows}")
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=schema)


def empty_table(table: str) -> pa.Table:
    return ARROW_SCHEMAS[table].empty_table()


def write_table(landing_dir: Path, table: str, key: str, data: pa.Table) -> Path:
    """Write one partition atomically (temporary file, then rename)."""
    folder = Path(landing_dir) / table
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.parquet"
    tmp = folder / f".{key}.parquet.tmp"
    pq.write_table(data, tmp, compression="zstd", compression_level=1)
    os.replace(tmp, path)
    return path
