"""A world generated as independent customer shards: one :class:`~churn_assets.simulation.world.World` per
shard, each with its own share of the customers and its own seed, so that shards can be simulated on
different machines (a Dask cluster) and a world larger than one machine's memory can be generated.

* Shard ``k`` of ``S`` simulates ``n_customers // S`` customers (the first ``n_customers % S`` shards one
  more) with the seed ``SeedSequence(seed, spawn_key=(S, k))``: the landing files depend only on the
  seed and the shard count, never on where or in which order the shards ran.
* Identifiers are made global by interleaving: a shard's local id ``i`` (1, 2, ...) becomes
  ``(i - 1) * S + k + 1`` for customers, invoices and tickets, so they never collide across shards.
* Each shard's signups replace its own expected churn (a campaign multiplies its own history volume):
  the sum of the shards' Poisson signups is the Poisson signup of the whole, as in one world.
* Each simulated week, every shard writes its six tables into a stage folder; the weekly landing file of
  a table is then the shards' rows in shard order (:func:`land_week`), written atomically as usual.
* State: one pickle per shard and week under ``state_dir`` (``shard-00000.week-00043.pkl``: the shard
  before week 43), loaded and saved by the task that advances the shard, and ``world.json`` naming the
  current week. A task never overwrites the state it started from, so a task the scheduler reruns (its
  worker died) starts from the same state and rewrites the same files; the older states are removed once
  every shard succeeded and ``world.json`` moved on. The coordinating process never holds the customers.

With one shard this is *not* the single :class:`World` of the same seed (the seed is derived); a world is
either generated whole or sharded, and stays so (``ShardedWorld.load`` checks the shard count).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from churn_assets.settings import SimulationSettings
from churn_assets.simulation.landing import write_table
from churn_assets.simulation.world import World
from churn_assets.timeline import Timeline
from data_contracts.raw_tables import RAW_TABLES

# How the shards' tasks run: ``map_tasks(function, [args, ...])`` -> results in order (in this process,
# or ``client.map`` + ``client.gather`` on a Dask cluster).
TaskMap = Callable[[Callable[..., Any], Sequence[tuple[Any, ...]]], list[Any]]
_GLOBAL_IDS = ("customer_id", "invoice_id", "ticket_id")
MANIFEST = "world.json"


def run_here(function: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> list[Any]:
    """:data:`TaskMap` of this process: the tasks one after another."""
    return [function(*a) for a in args]


def shard_settings(sim: SimulationSettings, shard: int, shards: int) -> SimulationSettings:
    """The settings of one shard's world: its share of the customers and its derived seed."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} outside 0..{shards - 1}")
    customers = sim.n_customers // shards + (1 if shard < sim.n_customers % shards else 0)
    if customers < 1:
        raise ValueError(
            f"simulation.n_customers ({sim.n_customers}) is smaller than the shard count ({shards})"
        )
    seed = int(np.random.SeedSequence(sim.seed, spawn_key=(shards, shard)).generate_state(1)[0])
    return sim.model_copy(update={"n_customers": customers, "seed": seed})


def globalize_ids(table: pa.Table, shard: int, shards: int) -> pa.Table:
    """Interleave the shard-local identifiers of a landing table into the world's id space."""
    for name in _GLOBAL_IDS:
        if name in table.column_names:
            local = table.column(name)
            ids = pc.add(pc.multiply(pc.subtract(local, 1), shards), shard + 1)
            table = table.set_column(table.column_names.index(name), name, ids.cast(local.type))
    return table


def _state_path(state_dir: Path, shard: int, week: int) -> Path:
    return state_dir / f"shard-{shard:05d}.week-{week:05d}.pkl"


def _stage_path(stage: Path, table: str, key: str, shard: int) -> Path:
    return stage / table / key / f"shard-{shard:05d}.parquet"


def simulate_shard(
    sim: SimulationSettings,
    shard: int,
    shards: int,
    state_dir: Path,
    stage: Path,
    start: int,
    weeks: int | None,
) -> list[str]:
    """Task: create (``weeks`` None: its history) or load one shard's world at week ``start``, simulate
    its weeks, write each week's tables into ``stage`` and save its state after them (a new file); the
    week keys."""
    if weeks is None:
        world = World.create(shard_settings(sim, shard, shards))
        count = world.timeline.history_weeks
    else:
        world = World.load(_state_path(state_dir, shard, start))
        count = weeks
    keys: list[str] = []
    for _ in range(count):
        key, tables = world.step()
        for table, data in tables.items():
            target = _stage_path(stage, table, key, shard)
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(globalize_ids(data, shard, shards), target)
        keys.append(key)
    world.save(_state_path(state_dir, shard, world.week))
    return keys


def land_week(stage: Path, landing_dir: Path, key: str, shards: int) -> None:
    """Write the landing files of week ``key``: each table's shard files concatenated in shard order."""
    for table in RAW_TABLES:
        parts = [pq.read_table(_stage_path(stage, table, key, k)) for k in range(shards)]
        write_table(landing_dir, table, key, pa.concat_tables(parts))


@dataclass(frozen=True)
class ShardedWorld:
    """A sharded world's coordinates (the customers stay in the shard states): where its state lives,
    its settings, the shard count and the next week to simulate."""

    settings: SimulationSettings
    shards: int
    state_dir: Path
    week: int

    @property
    def timeline(self) -> Timeline:
        return Timeline.from_settings(self.settings)

    @property
    def history_done(self) -> bool:
        return self.week >= self.timeline.history_weeks

    @classmethod
    def load(cls, state_dir: Path, shards: int | None = None) -> ShardedWorld:
        manifest = json.loads((state_dir / MANIFEST).read_text())
        if shards is not None and manifest["shards"] != shards:
            raise ValueError(
                f"the world under {state_dir} was generated with {manifest['shards']} shards, not {shards}"
            )
        return cls(
            SimulationSettings.model_validate(manifest["settings"]),
            int(manifest["shards"]),
            state_dir,
            int(manifest["week"]),
        )

    def _save(self, week: int) -> ShardedWorld:
        world = ShardedWorld(self.settings, self.shards, self.state_dir, week)
        manifest = {"settings": self.settings.model_dump(mode="json"), "shards": self.shards, "week": week}
        tmp = self.state_dir / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(self.state_dir / MANIFEST)
        return world

    def _run(
        self, weeks: int | None, landing_dir: Path, map_tasks: TaskMap
    ) -> tuple[ShardedWorld, list[str]]:
        stage = self.state_dir / f".stage-week-{self.week:05d}"
        shutil.rmtree(stage, ignore_errors=True)
        try:
            args = [
                (self.settings, k, self.shards, self.state_dir, stage, self.week, weeks)
                for k in range(self.shards)
            ]
            results = map_tasks(simulate_shard, args)
            keys = results[0]
            if any(r != keys for r in results):
                raise RuntimeError(f"the shards of {self.state_dir} simulated different weeks: {results}")
            for key in keys:
                land_week(stage, landing_dir, key, self.shards)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        world = self._save(self.week + len(keys))
        for old in self.state_dir.glob("shard-*.week-*.pkl"):
            if not old.name.endswith(f".week-{world.week:05d}.pkl"):
                old.unlink()
        return world, keys

    @classmethod
    def simulate_history(
        cls,
        sim: SimulationSettings,
        shards: int,
        state_dir: Path,
        landing_dir: Path,
        map_tasks: TaskMap = run_here,
    ) -> tuple[ShardedWorld, list[str]]:
        """Create the sharded world and land its history; the world and the week keys."""
        if shards < 1:
            raise ValueError(f"the shard count must be at least 1, not {shards}")
        state_dir.mkdir(parents=True, exist_ok=True)
        if (state_dir / MANIFEST).exists():
            raise FileExistsError(f"a sharded world already exists under {state_dir}")
        return cls(sim, shards, state_dir, 0)._run(None, Path(landing_dir), map_tasks)

    def advance(
        self, weeks: int, landing_dir: Path, map_tasks: TaskMap = run_here
    ) -> tuple[ShardedWorld, list[str]]:
        """Land ``weeks`` more production weeks; the advanced world and the week keys."""
        if not self.history_done:
            raise RuntimeError("simulate the history before advancing into production")
        if weeks < 0:
            raise ValueError("weeks must be >= 0")
        return self._run(weeks, Path(landing_dir), map_tasks)


__all__ = [
    "ShardedWorld",
    "TaskMap",
    "globalize_ids",
    "land_week",
    "run_here",
    "shard_settings",
    "simulate_shard",
]
