"""Synthetic feature frames built from the declarations in :mod:`churn_assets.feature_store.definitions`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from churn_assets.feature_store.definitions import ENTITY, EVENT_TIMESTAMP, FeatureGroup, feature_group

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon")


def random_group_frame(
    group: FeatureGroup | str,
    customer_ids: Sequence[int],
    timestamps: Sequence[dt.datetime],
    *,
    seed: int = 0,
    null_share: float = 0.0,
) -> pa.Table:
    """A seeded random frame with one row per (customer, timestamp), sorted by customer then time.

    Columns: ``customer_id`` (int64), ``event_timestamp`` (timestamp[us]) and the group's features
    with their declared dtypes (int64 in [0, 1000), float64 in [0, 100), strings from ``WORDS``);
    ``null_share`` of each feature's values are NULL.
    """
    group = feature_group(group) if isinstance(group, str) else group
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.asarray(customer_ids, dtype=np.int64), len(timestamps))
    times = np.tile(np.asarray(timestamps, dtype="datetime64[us]"), len(customer_ids))
    n = ids.size
    columns: dict[str, pa.Array] = {ENTITY: pa.array(ids), EVENT_TIMESTAMP: pa.array(times)}
    for feature in group.features:
        mask = rng.random(n) < null_share
        if feature.dtype == "int64":
            values: pa.Array = pa.array(rng.integers(0, 1000, n), mask=mask)
        elif feature.dtype == "float64":
            values = pa.array(rng.random(n) * 100, mask=mask)
        else:
            values = pa.array(np.asarray(WORDS, dtype=object)[rng.integers(0, len(WORDS), n)], mask=mask)
        columns[feature.name] = values
    return pa.table(columns)
