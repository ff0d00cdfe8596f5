"""The drift report's per-feature statistics on the Dask engine: computed per customer shard, then merged.

Each shard task computes, for its customers of the current window (:class:`ShardDriftStats`):

* **exactly mergeable** statistics — rows; per numeric feature the null (null or NaN) count, the sum of
  the non-null values (the mean) and the counts on the reference's FIXED decile bins (the PSI); per
  categorical feature the category counts (chi-square and PSI). Merging is a sum, so the merged values
  are those of the whole window: the PSI, chi-square statistic and p-value, null shares and means equal
  the local engine's (up to floating-point summation order for the means).
* **a documented sample** for the Kolmogorov-Smirnov test, whose statistic needs every current value:
  a row is kept when a hash of its ``customer_id`` (:func:`sample_key`, splitmix64, uniform in [0, 1)) is
  below ``fraction = min(1, compute.drift_ks_sample_rows / window rows)``. The rule depends on the
  customer only, so the sample is the same whatever the shard count or engine; a window of at most
  ``drift_ks_sample_rows`` rows is kept whole and the KS statistic and p-value equal the local engine's.
  Above that, the KS statistic is that of a uniform sample of ``m`` rows: by the DKW inequality it is
  within ``sqrt(ln(2 / delta) / (2 m))`` of the whole window's statistic with probability ``1 - delta``
  (0.0061 for m = 1,000,000 and delta = 1e-6), and the p-value is the test's on the ``m`` rows. The
  root-cause search runs on the same sample.

The workers receive only the bin edges (:class:`BinSpec`), never the reference sample itself.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from churn_assets.compute.cluster import engine_label, worker_count
from churn_assets.compute.scoring import cluster_client, stage_shards, staging_folder
from churn_assets.feature_store.definitions import ENTITY
from churn_assets.monitoring.drift import (
    NULL,
    DriftInputError,
    DriftReport,
    FeatureDrift,
    ReferenceProfile,
    alert_report,
    category_counts,
    chi2_test,
    ks_2samp_fast,
    psi,
)
from churn_assets.settings import MonitoringSettings, Settings

if TYPE_CHECKING:
    from distributed import Client

    from churn_assets.monitoring.weekly import DriftDetector

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def sample_key(customer_id: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per customer id: the splitmix64 finalizer of the id, top 53 bits."""
    z = np.asarray(customer_id).astype(np.uint64, copy=False)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = (z ^ (z >> np.uint64(31))) & _MASK
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True)
class BinSpec:
    """What a shard task needs from the reference: the numeric features' decile edges, the categorical
    feature names, the extra columns the sample keeps (segments) and the sample fraction."""

    edges: dict[str, np.ndarray]
    categorical: list[str]
    keep: list[str]
    fraction: float


@dataclass
class NumericStats:
    nulls: int
    total: float  # sum of the non-null values
    bins: np.ndarray  # counts on the reference's decile bins

    def merged(self, other: NumericStats) -> NumericStats:
        return NumericStats(self.nulls + other.nulls, self.total + other.total, self.bins + other.bins)


@dataclass
class ShardDriftStats:
    """One shard's statistics (or several shards' merged, :meth:`merged`)."""

    rows: int
    numeric: dict[str, NumericStats]
    categorical: dict[str, dict[str, int]]
    sample: pl.DataFrame
    shards: int = 1

    def merged(self, other: ShardDriftStats) -> ShardDriftStats:
        categorical = {}
        for name, counts in self.categorical.items():
            both = dict(counts)
            for value, n in other.categorical[name].items():
                both[value] = both.get(value, 0) + n
            categorical[name] = both
        return ShardDriftStats(
            self.rows + other.rows,
            {name: s.merged(other.numeric[name]) for name, s in self.numeric.items()},
            categorical,
            pl.concat([self.sample, other.sample], how="vertical"),
            self.shards + other.shards,
        )

    def non_null(self, name: str) -> int:
        return self.rows - self.numeric[name].nulls

    def means(self) -> dict[str, float]:
        """The mean of every numeric feature over its non-null current values (NaN when none)."""
        return {
            name: s.total / self.non_null(name) if self.non_null(name) else float("nan")
            for name, s in self.numeric.items()
        }


def bin_spec(
    reference: ReferenceProfile, features: Sequence[str], keep: Sequence[str], fraction: float
) -> BinSpec:
    return BinSpec(
        {f: reference.numeric[f].edges for f in features if f in reference.numeric},
        [f for f in features if f in reference.categorical],
        list(dict.fromkeys([ENTITY, *features, *keep])),
        fraction,
    )


def shard_stats(frame: pl.DataFrame, spec: BinSpec) -> ShardDriftStats:
    """The statistics of one shard's current rows (see the module doc); runs on a worker."""
    numeric = {}
    for name, edges in spec.edges.items():
        values = frame.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy()
        present = values[~np.isnan(values)]
        bins = np.bincount(np.searchsorted(edges, present, "right"), minlength=len(edges) + 1)
        numeric[name] = NumericStats(int(values.size - present.size), float(present.sum()), bins)
    categorical = {name: category_counts(frame.get_column(name)) for name in spec.categorical}
    kept = frame.select([c for c in spec.keep if c in frame.columns])
    if spec.fraction < 1.0:
        kept = kept.filter(pl.Series(sample_key(frame.get_column(ENTITY).to_numpy()) < spec.fraction))
    return ShardDriftStats(frame.height, numeric, categorical, kept)


def _shard_stats_file(path: str, spec: BinSpec) -> ShardDriftStats:
    return shard_stats(pl.read_parquet(path), spec)


def merge(parts: Sequence[ShardDriftStats]) -> ShardDriftStats:
    """Every shard's statistics merged; the KS sample in customer order (the local window's order)."""
    if not parts:
        raise DriftInputError("current window is empty: no shard has rows to compare with the reference")
    total = parts[0]
    for part in parts[1:]:
        total = total.merged(part)
    total.sample = total.sample.sort(ENTITY)
    return total


def report_from_stats(
    reference: ReferenceProfile,
    stats: ShardDriftStats,
    cfg: MonitoringSettings,
    features: Sequence[str],
    importance: Mapping[str, float] | None = None,
) -> DriftReport:
    """The drift report of merged shard statistics: the local engine's tests and alert rule (KS on the
    sample, everything else exact)."""
    names = [f for f in features if f not in cfg.exclude_features]
    excluded = [f for f in features if f in cfg.exclude_features]
    unknown = [f for f in names if f not in reference.numeric and f not in reference.categorical]
    if unknown:
        raise DriftInputError(f"feature(s) {unknown} are not in the reference profile")
    if stats.rows == 0:
        raise DriftInputError("current window is empty: no rows to compare with the reference")
    results: list[FeatureDrift] = []
    for name in names:
        if name in reference.numeric:
            ref, num = reference.numeric[name], stats.numeric[name]
            sample = stats.sample.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy()
            stat, p = ks_2samp_fast(ref, sample)
            non_null = stats.non_null(name)
            value = psi(ref.bins, num.bins) if ref.n and non_null else float("nan")
            results.append(
                FeatureDrift(
                    name,
                    "numeric",
                    "KS",
                    stat,
                    p,
                    stat,
                    value,
                    ref.n,
                    non_null,
                    ref.null_share,
                    num.nulls / stats.rows,
                )
            )
        else:
            cref, counts = reference.categorical[name], stats.categorical[name]
            chi2, p, value = chi2_test(cref.counts, counts)
            n = sum(counts.values())
            results.append(
                FeatureDrift(
                    name,
                    "categorical",
                    "chi-square",
                    chi2,
                    p,
                    value,
                    value,
                    cref.n,
                    n,
                    cref.counts.get(NULL, 0) / max(cref.n, 1),
                    counts.get(NULL, 0) / max(n, 1),
                )
            )
    return alert_report(results, cfg, importance, reference.n_rows, stats.rows, excluded)


@dataclass
class ShardedDrift:
    """A drift report computed per shard: the report, the merged statistics (whose ``sample`` is the KS /
    root-cause sample) and what ran it."""

    report: DriftReport
    stats: ShardDriftStats
    fraction: float
    rows_by_shard: dict[int, int] = field(default_factory=dict)
    workers: int = 0

    def metadata(self) -> dict[str, Any]:
        return {
            "ks_sample_rows": self.stats.sample.height,
            "ks_sample_fraction": self.fraction,
            "rows_by_shard": self.rows_by_shard,
            "workers": self.workers,
        }


def sample_fraction(rows: int, sample_rows: int) -> float:
    return 1.0 if rows <= sample_rows else sample_rows / rows


def detect_drift_sharded(
    client: Client,
    reference: ReferenceProfile,
    current: pl.DataFrame,
    cfg: MonitoringSettings,
    features: Sequence[str],
    *,
    shards: int,
    staging: Path,
    sample_rows: int,
    importance: Mapping[str, float] | None = None,
    keep: Sequence[str] = (),
) -> ShardedDrift:
    """The drift report of ``current`` with one statistics task per customer shard (module doc); ``keep``:
    extra columns the sample carries (the root-cause segments). ``staging`` is removed afterwards."""
    missing = [f for f in features if f not in current.columns]
    if missing:
        raise DriftInputError(f"current window lacks feature column(s) {missing}")
    if current.height == 0:
        raise DriftInputError("current window is empty: no rows to compare with the reference")
    tested = [f for f in features if f not in cfg.exclude_features]
    fraction = sample_fraction(current.height, sample_rows)
    spec = bin_spec(reference, tested, [c for c in keep if c in current.columns], fraction)
    try:
        files = stage_shards(current, staging, shards)
        [remote_spec] = client.scatter([spec], broadcast=True)
        futures = [
            client.submit(
                _shard_stats_file, str(path), remote_spec, key=f"drift-stats-{shard}-{uuid.uuid4().hex[:8]}"
            )
            for shard, (path, _rows) in files.items()
        ]
        parts: list[ShardDriftStats] = client.gather(futures)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    stats = merge(parts)
    report = report_from_stats(reference, stats, cfg, features, importance)
    return ShardedDrift(
        report, stats, fraction, {k: rows for k, (_p, rows) in files.items()}, worker_count(client)
    )


def drift_on_cluster(
    settings: Settings,
    reference: ReferenceProfile,
    current: pl.DataFrame,
    features: Sequence[str],
    importance: Mapping[str, float] | None = None,
    keep: Sequence[str] = (),
    client: Client | None = None,
) -> ShardedDrift:
    """:func:`detect_drift_sharded` on the configured cluster (``compute`` settings: shards,
    ``drift_ks_sample_rows``); ``client``: see :func:`~churn_assets.compute.scoring.cluster_client`."""
    compute = settings.compute
    with cluster_client(settings, client) as connected:
        return detect_drift_sharded(
            connected,
            reference,
            current,
            settings.monitoring,
            features,
            shards=compute.shards,
            staging=staging_folder(settings, "drift"),
            sample_rows=compute.drift_ks_sample_rows,
            importance=importance,
            keep=keep,
        )


def drift_detector(settings: Settings) -> DriftDetector | None:
    """The weekly drift step's engine (:func:`churn_assets.monitoring.weekly.drift_week`'s ``detect``):
    None for ``compute.engine = local``; for ``dask``, per-shard statistics on the cluster, the root cause
    found on the KS sample, and the engine's metadata."""
    if settings.compute.engine != "dask":
        return None

    def detect(
        profile: ReferenceProfile,
        current: pl.DataFrame,
        features: list[str],
        importance: dict[str, float] | None,
        keep: list[str],
    ) -> tuple[DriftReport, pl.DataFrame, dict[str, Any]]:
        sharded = drift_on_cluster(settings, profile, current, features, importance, keep)
        return (
            sharded.report,
            sharded.stats.sample,
            {"engine": engine_label(settings.compute), **sharded.metadata()},
        )

    return detect


__all__ = [
    "BinSpec",
    "ShardDriftStats",
    "ShardedDrift",
    "detect_drift_sharded",
    "drift_detector",
    "drift_on_cluster",
    "merge",
    "report_from_stats",
    "sample_key",
    "shard_stats",
]
