"""Read customers' features from the online store at the simulated clock (``churnops features get``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from churn_assets.feature_store.offline import OfflineStore
from churn_assets.feature_store.online import make_online_store
from churn_assets.settings import Settings
from churn_assets.storage.warehouse import Warehouse


def read_online(settings: Settings, customer_ids: Sequence[int]) -> dict[str, Any]:
    """Values and per-group staleness; "now" is the newest snapshot in the offline store."""
    with Warehouse.of(settings).connect() as con:
        times = OfflineStore(con).snapshot_times("customer_account")
    if not times:
        raise RuntimeError("the feature store is empty: run `churnops demo` (or `churnops run`) first")
    store = make_online_store(settings)
    try:
        result = store.read(list(customer_ids), now=max(times))
    finally:
        store.close()
    return {
        "now": result.now.isoformat(),
        "backend": settings.feature_store.online_backend,
        "customers": [
            {
                "customer_id": c.customer_id,
                "found": c.found,
                "features": c.values,
                "staleness": {
                    group: (
                        str(state.staleness) if state.served else ("expired" if state.expired else "missing")
                    )
                    for group, state in c.groups.items()
                },
            }
            for c in result
        ],
    }
