"""The Dask cluster of ``compute.engine = dask`` and the customer shards its tasks work on.

``dask_client`` connects to the scheduler the settings name — a running one (``tcp://host:8786``) or a
``LocalCluster`` of N worker processes on loopback (``local:N``) started for the run and stopped after it
— and checks, before any work is submitted, that every worker can read and write the storage root. Bad
configuration fails here with an error that names the setting, never half-way through a stage.

Customers are assigned to shards by :func:`~churn_assets.storage.customer_shards.shard_of` (re-exported
here), a stable multiplicative hash of the integer ``customer_id``.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn_assets.settings import ComputeSettings
from churn_assets.storage.customer_shards import HASH_MULTIPLIER, ComputeConfigError, shard_expr, shard_of

if TYPE_CHECKING:
    from distributed import Client, LocalCluster


def _storage_access(root: str) -> str | None:
    """Run on a worker: None if it can list, write and delete a file under ``root``, else the reason."""
    path = Path(root)
    if not path.is_dir():
        return f"{root} is not a directory on this worker"
    probe = path / f".churnops-probe-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"ok")
        ok = probe.read_bytes() == b"ok"
        probe.unlink()
    except OSError as exc:
        return f"cannot write {root}: {exc.strerror or exc}"
    return None if ok else f"read back a different file under {root}"


def check_storage(client: Client, root: Path) -> int:
    """Raise unless every worker of ``client`` can read and write ``root``; the number of workers checked."""
    answers: dict[str, str | None] = client.run(_storage_access, str(root))
    if not answers:
        raise ComputeConfigError("compute.scheduler: the Dask scheduler has no workers")
    refused = {worker: reason for worker, reason in answers.items() if reason}
    if refused:
        lines = "; ".join(f"{worker}: {reason}" for worker, reason in sorted(refused.items()))
        raise ComputeConfigError(
            f"{len(refused)} of {len(answers)} Dask workers cannot use the storage root {root} "
            f"(settings `home`, which every worker must reach at the same path): {lines}"
        )
    return len(answers)


@contextlib.contextmanager
def local_cluster(compute: ComputeSettings) -> Iterator[LocalCluster]:
    """The ``LocalCluster`` of a ``local:N`` scheduler: N worker processes on loopback with the settings'
    threads and memory limit, stopped when the block ends."""
    from distributed import LocalCluster

    workers = compute.local_workers
    if workers is None:
        raise ComputeConfigError(f"compute.scheduler: {compute.scheduler} is not local:N")
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=compute.threads_per_worker,
        memory_limit=compute.worker_memory_limit,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # a free port: parallel clusters never collide
        silence_logs=logging.WARNING,
    ) as cluster:
        yield cluster


@contextlib.contextmanager
def dask_client(compute: ComputeSettings, *, storage_root: Path | None = None) -> Iterator[Client]:
    """A client of the configured cluster for the duration of the block (a ``local:N`` cluster is started
    and stopped with it); with ``storage_root``, every worker's access to it is checked first."""
    from distributed import Client

    with contextlib.ExitStack() as stack:
        if compute.local_workers is not None:
            cluster = stack.enter_context(local_cluster(compute))
            client = stack.enter_context(Client(cluster, set_as_default=False))
        else:
            try:
                client = stack.enter_context(
                    Client(
                        compute.scheduler,
                        timeout=f"{compute.connect_timeout_seconds}s",
                        set_as_default=False,
                    )
                )
            except (OSError, TimeoutError) as exc:
                raise ComputeConfigError(
                    f"compute.scheduler: no Dask scheduler answered at {compute.scheduler} within "
                    f"{compute.connect_timeout_seconds:g} s (compute.connect_timeout_seconds): {exc}"
                ) from exc
        if storage_root is not None:
            check_storage(client, storage_root)
        yield client


def _worker_addresses(dask_scheduler: Any) -> list[str]:
    return list(dask_scheduler.workers)


def scheduler_workers(client: Client) -> set[str]:
    """The addresses of the workers the scheduler knows now, asked of the scheduler itself.

    Not ``Client.scheduler_info()``: that returns the client's cached identity, which the client's own
    periodic refresh overwrites with one that has no per-worker entries — read between the two, every
    worker looks gone (a LightGBM fit's watcher then reported both workers "lost" mid-fit)."""
    return set(client.run_on_scheduler(_worker_addresses))


def worker_count(client: Client) -> int:
    """Workers the scheduler knows now (recorded in run metadata)."""
    return len(scheduler_workers(client))


def engine_label(compute: ComputeSettings) -> str:
    """What ran a stage, for metadata: ``local`` or ``dask <scheduler>``."""
    return "local" if compute.engine == "local" else f"dask {compute.scheduler}"


__all__ = [
    "HASH_MULTIPLIER",
    "ComputeConfigError",
    "check_storage",
    "dask_client",
    "engine_label",
    "local_cluster",
    "scheduler_workers",
    "shard_expr",
    "shard_of",
    "worker_count",
]
