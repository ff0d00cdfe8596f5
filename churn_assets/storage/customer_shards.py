"""Customer shards: which of N shards a customer's rows belong to, the same in numpy, polars and DuckDB.

:func:`shard_of` is a multiplicative hash of the integer ``customer_id``: stable across processes,
machines and library versions (unlike Python's ``hash`` or a dataframe library's hash), so a customer's
rows land on the same shard in every stage and every week. The Dask engine (``churn_assets.compute``)
partitions its work by it; the training set summarises its rows per shard with it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

# Knuth's multiplicative constant for 64 bits (2^64 / golden ratio); the product wraps modulo 2^64.
HASH_MULTIPLIER = 0x9E3779B97F4A7C15


class ComputeConfigError(RuntimeError):
    """The ``compute`` settings cannot work: the message names the setting and what is wrong."""


def _check(shards: int) -> None:
    if shards < 1:
        raise ComputeConfigError(f"compute.shards must be at least 1, not {shards}")


def shard_of(customer_id: np.ndarray, shards: int) -> np.ndarray:
    """The shard (0 .. shards-1) of each customer id: the high 32 bits of ``id * golden`` mod ``shards``."""
    _check(shards)
    ids = np.asarray(customer_id).astype(np.uint64, copy=False)
    with np.errstate(over="ignore"):
        mixed = ids * np.uint64(HASH_MULTIPLIER)
    return ((mixed >> np.uint64(32)) % np.uint64(shards)).astype(np.int32)


def shard_expr(shards: int, column: str = "customer_id") -> pl.Expr:
    """:func:`shard_of` as a polars expression (same values; polars integer arithmetic wraps as numpy's)."""
    _check(shards)
    mixed = pl.col(column).cast(pl.UInt64) * pl.lit(HASH_MULTIPLIER, dtype=pl.UInt64)
    return ((mixed // pl.lit(1 << 32, dtype=pl.UInt64)) % shards).cast(pl.Int32)


def shard_sql(shards: int, column: str = "customer_id") -> str:
    """:func:`shard_of` as a DuckDB expression (128-bit arithmetic for the wrap-around multiplication
    modulo 2^64)."""
    _check(shards)
    return (
        f"CAST(((CAST({column} AS HUGEINT) * {HASH_MULTIPLIER}::HUGEINT) % {1 << 64}::HUGEINT) "
        f"// {1 << 32} % {shards} AS INTEGER)"
    )


__all__ = ["HASH_MULTIPLIER", "ComputeConfigError", "shard_expr", "shard_of", "shard_sql"]
