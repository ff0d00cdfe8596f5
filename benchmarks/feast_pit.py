"""Feast side of ``pit_retrieval.py``: Feast's PIT retrieval on the same Parquet files.

Runs inside the Feast venv (``benchmarks/setup_feast.sh``), so it imports nothing from churnops:
the groups come from ``meta.json`` written by ``pit_retrieval.py``. Prints one JSON line:
``{"first": s, "best": s, "rows": n, "rss_mb": mb}``.

Usage: ``.churnops/bench/feast-venv/bin/python benchmarks/feast_pit.py --data DIR --store file|duckdb``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.repo_config import RepoConfig
from feast.types import Float64, Int64, String
from peak_rss import peak_rss_mb  # the sibling benchmarks/peak_rss.py: this runs as a file

FEAST_TYPES = {"int64": Int64, "float64": Float64, "string": String}


def feature_store(data: Path, store_type: str, repo: Path) -> tuple[FeatureStore, list[str]]:
    """A Feast store over ``data``'s Parquet files with one FeatureView per group."""
    meta = json.loads((data / "meta.json").read_text())
    config = RepoConfig(
        project="churnops_bench",
        provider="local",
        registry=str(repo / "registry.db"),
        offline_store={"type": store_type},
        online_store={"type": "sqlite", "path": str(repo / "online.db")},
        entity_key_serialization_version=3,
        repo_path=str(repo),
    )
    store = FeatureStore(config=config)
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    views, refs = [], []
    for group in meta["groups"]:
        source = FileSource(
            name=f"{group['name']}_source",
            path=str((data / f"{group['name']}.parquet").resolve()),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_at",
        )
        views.append(
            FeatureView(
                name=group["name"],
                entities=[customer],
                ttl=dt.timedelta(seconds=group["ttl_seconds"]),
                schema=[Field(name=name, dtype=FEAST_TYPES[dtype]) for name, dtype in group["features"]],
                source=source,
                online=False,
            )
        )
        refs += [f"{group['name']}:{name}" for name, _ in group["features"]]
    store.apply([customer, *views])
    return store, refs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--entity-rows", type=int, required=True)
    parser.add_argument("--store", choices=["file", "duckdb"], required=True)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    entity: pd.DataFrame = pd.read_parquet(args.data / f"entity_{args.entity_rows}.parquet")
    with tempfile.TemporaryDirectory() as repo:
        store, refs = feature_store(args.data, args.store, Path(repo))
        times: list[float] = []
        cpu: list[float] = []
        rows = 0
        for _ in range(args.repeats + 1):
            started, cpu_started = time.perf_counter(), time.process_time()
            out = store.get_historical_features(entity_df=entity, features=refs).to_df()
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
            rows = len(out)
            del out
    best = min(range(1, len(times)), key=times.__getitem__) if len(times) > 1 else 0
    result: dict[str, Any] = {
        "first": times[0],
        "best": times[best],
        "cpu": cpu[best],
        "rows": rows,
        "rss_mb": peak_rss_mb(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
