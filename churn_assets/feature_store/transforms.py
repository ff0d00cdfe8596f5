"""Point-in-time feature SQL: the 45 declared features for many as-of dates in one DuckDB pass.

Inputs are the raw tables in schema ``raw`` (``raw.accounts``, ``raw.usage``, ...; contract
columns). For an as-of date ``T`` (a Monday) only rows that *landed* in weeks ending on or before
``T`` are used (``week_start + 7 days <= T``): this is what makes the snapshots free of leakage.

* Entities at ``T``: accounts landed by ``T`` without a churn event landed by ``T``.
* Weekly tables (usage, engagement): "last 7d" = the last landed week (``T - 7``), "30d" = the last
  4 landed weeks, "90d" = the last 13 landed weeks.
* Event tables (billing, support tickets, churn events): by event time (``invoice_date``,
  ``opened_at``) within ``[T - 30|90 days, T)`` and landed by ``T``.
* Sums of float columns are exact DECIMAL(18, 3) sums (values rounded to 3 decimals first), so a
  snapshot is bit-reproducible regardless of DuckDB's parallel aggregation order.
* Ratios are NaN-free: trends are ``(recent weekly mean + 1) / (longer weekly mean + 1)`` (1 when
  there is no data); rates divide by a positive denominator or default to 0.
* ``features_used_count`` is the largest weekly ``features_used`` of the last 4 weeks (the raw data
  has no feature identities to count distinct ones); ``days_since_last_active`` is ``7 * (k - 1)``
  for the most recent landed week ``k`` with ``active_days > 0``; ``unresolved_tickets_90d`` counts
  tickets not resolved by ``T`` (``resolution_hours`` null or ``opened_at + resolution_hours > T``);
  the cohort / channel churn rates are churn events landed in the last 13 weeks divided by
  (entities at ``T`` + those churners) of the same signup quarter / acquisition channel. They are the
  only cross-customer inputs: they come from additive :class:`RateCounts`, so a customer shard run on a
  Dask worker (``churn_assets.compute.features``) computes its rows with this same SQL given the counts
  merged over every shard, and gets exactly the rows of one pass over everyone.
* Defaults when a customer has no rows in a window: counts and sums 0; billing values of the
  latest invoice 0 (no statement yet); ``avg_ticket_satisfaction_90d`` 0 (no rated ticket);
  ``days_since_last_active`` 91 (no activity in 13 weeks).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from churn_assets.feature_store.definitions import ENTITY, EVENT_TIMESTAMP, FEATURE_GROUPS, DType
from data_contracts.categories import N_PRODUCT_FEATURES
from data_contracts.raw_tables import RAW_TABLES

DAYS_SINCE_ACTIVE_CAP = 91
WINDOW_WEEKS = 13  # the landed weeks before an as-of date that its features read (the range in _win)
_ARROW: dict[DType, pa.DataType] = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}

# The support-ticket features, shared by the offline snapshots and the request-time features
# (feature_store/request_time.py): ticket rows ``t`` (opened_at, resolution_hours, satisfaction) of the
# 90 days before ``w.as_of`` -> per-customer aggregates -> the features.
# (Offline every landed ticket opened before the as-of date: the upper bound matters online only.)
TICKET_WINDOW = "t.opened_at >= w.as_of - INTERVAL 90 DAY AND t.opened_at < w.as_of"
TICKET_AGGREGATES = """
    count(*) FILTER (t.opened_at >= w.as_of - INTERVAL 30 DAY) AS tickets_30,
    count(*) AS tickets_90,
    count(*) FILTER (t.resolution_hours IS NULL
        OR t.opened_at + to_microseconds((t.resolution_hours * 3600e6)::BIGINT) > w.as_of) AS unresolved_90,
    avg(t.satisfaction) FILTER (t.resolution_hours IS NOT NULL
        AND t.opened_at + to_microseconds((t.resolution_hours * 3600e6)::BIGINT) <= w.as_of) AS satisfaction_90"""
TICKET_FEATURES = {
    "support_tickets_last_30d": "coalesce(t.tickets_30, 0)::BIGINT",
    "support_tickets_last_90d": "coalesce(t.tickets_90, 0)::BIGINT",
    "unresolved_tickets_90d": "coalesce(t.unresolved_90, 0)::BIGINT",
    "avg_ticket_satisfaction_90d": "coalesce(t.satisfaction_90, 0)::DOUBLE",
}

_AS_OF = "CREATE OR REPLACE TEMP TABLE _asof AS SELECT DISTINCT unnest($dates::DATE[]) AS as_of"
# The entities at each as-of date and the churners of the last 13 landed weeks (the inputs of the rates).
_PREPARE_ENTITIES = f"""
-- The 13 landed weeks before each as-of date; k = 1 is the last landed week.
CREATE OR REPLACE TEMP TABLE _win AS
SELECT as_of, (as_of - (7 * k)::INTEGER) AS wk, k::INTEGER AS k FROM _asof, range(1, {WINDOW_WEEKS + 1}) AS r(k);

CREATE OR REPLACE TEMP TABLE _ent AS
WITH acc AS (
    SELECT a.customer_id, a.week_start, a.signup_date, a.acquisition_channel, c.week_start AS churn_landed
    FROM raw.accounts a LEFT JOIN raw.churn_events c ON c.customer_id = a.customer_id
)
SELECT s.as_of, acc.customer_id, acc.signup_date, acc.acquisition_channel,
    strftime(acc.signup_date, '%Y') || 'Q' || quarter(acc.signup_date) AS cohort
FROM _asof s JOIN acc ON acc.week_start <= s.as_of - 7
WHERE acc.churn_landed IS NULL OR acc.churn_landed > s.as_of - 7;

-- Churn reported (landed) in the last 13 weeks, by signup cohort and by acquisition channel.
CREATE OR REPLACE TEMP TABLE _churned AS
SELECT w.as_of, strftime(c.signup_date, '%Y') || 'Q' || quarter(c.signup_date) AS cohort,
    a.acquisition_channel AS channel
FROM raw.churn_events c JOIN _win w ON c.week_start = w.wk
JOIN raw.accounts a ON a.customer_id = c.customer_id;
"""

# Active and churned customers per as-of date and cohort / channel: additive, so the counts of customer
# shards sum to the counts of the whole population (the only cross-customer inputs of the features).
_COUNTS = """
CREATE OR REPLACE TEMP TABLE _cohort_counts AS
WITH act AS (SELECT as_of, cohort, count(*) AS active FROM _ent GROUP BY ALL),
ch AS (SELECT as_of, cohort, count(*) AS churned FROM _churned GROUP BY ALL)
SELECT coalesce(act.as_of, ch.as_of) AS as_of, coalesce(act.cohort, ch.cohort) AS cohort,
    coalesce(act.active, 0)::BIGINT AS active, coalesce(ch.churned, 0)::BIGINT AS churned
FROM act FULL JOIN ch ON ch.as_of = act.as_of AND ch.cohort = act.cohort;

CREATE OR REPLACE TEMP TABLE _channel_counts AS
WITH act AS (SELECT as_of, acquisition_channel AS channel, count(*) AS active FROM _ent GROUP BY ALL),
ch AS (SELECT as_of, channel, count(*) AS churned FROM _churned GROUP BY ALL)
SELECT coalesce(act.as_of, ch.as_of) AS as_of, coalesce(act.channel, ch.channel) AS channel,
    coalesce(act.active, 0)::BIGINT AS active, coalesce(ch.churned, 0)::BIGINT AS churned
FROM act FULL JOIN ch ON ch.as_of = act.as_of AND ch.channel = act.channel;
"""

# Churned / (active + churned) per as-of date and cohort, and per as-of date and channel.
_RATES = """
CREATE OR REPLACE TEMP TABLE _cohort_rate AS
SELECT as_of, cohort, churned::DOUBLE / (active + churned)::DOUBLE AS rate FROM _cohort_counts WHERE active > 0;

CREATE OR REPLACE TEMP TABLE _channel_rate AS
SELECT as_of, channel, churned::DOUBLE / (active + churned)::DOUBLE AS rate FROM _channel_counts WHERE active > 0;
"""

# Per-(as_of, customer) aggregates of each source; joined onto the entity set below.
_PREPARE_SOURCES = """
-- Float sums go through DECIMAL(18,3) ("DEC"): exact, so snapshots are bit-identical whatever the
-- order in which parallel aggregation visits the rows.
CREATE OR REPLACE TEMP TABLE _usage AS
SELECT w.as_of, u.customer_id,
    sum(u.calls) FILTER (w.k <= 4) AS calls_30, (sum(u.call_minutes::DEC) FILTER (w.k <= 4))::DOUBLE AS minutes_30,
    (sum(u.data_gb::DEC) FILTER (w.k <= 4))::DOUBLE AS data_30, sum(u.sms) FILTER (w.k <= 4) AS sms_30,
    count(*) FILTER (w.k <= 4) AS n_30,
    sum(u.calls) AS calls_90, (sum(u.data_gb::DEC))::DOUBLE AS data_90, count(*) AS n_90
FROM raw.usage u JOIN _win w ON u.week_start = w.wk
GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE _eng AS
SELECT w.as_of, e.customer_id,
    sum(e.logins) FILTER (w.k = 1) AS logins_7, sum(e.logins) FILTER (w.k <= 4) AS logins_30,
    count(*) FILTER (w.k <= 4) AS n_30,
    sum(e.sessions) FILTER (w.k <= 4) AS sessions_30, (sum(e.app_minutes::DEC) FILTER (w.k <= 4))::DOUBLE AS minutes_30,
    sum(e.active_days) FILTER (w.k <= 4) AS active_days_30, max(e.features_used) FILTER (w.k <= 4) AS features_30,
    min(w.k) FILTER (e.active_days > 0) AS last_active_k
FROM raw.engagement e JOIN _win w ON e.week_start = w.wk
GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE _tickets AS
SELECT w.as_of, t.customer_id, {ticket_aggregates}
FROM raw.support_tickets t JOIN _win w ON t.week_start = w.wk
WHERE {ticket_window}
GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE _billing AS
SELECT w.as_of, b.customer_id,
    arg_max(b.invoice_amount, b.invoice_date) AS invoice_amount,
    avg(b.invoice_amount::DEC)::DOUBLE AS avg_invoice_90,
    count(*) FILTER (b.previous_paid_late AND b.invoice_date >= w.as_of - 30) AS late_30,
    count(*) FILTER (b.previous_paid_late) AS late_90,
    max(b.previous_days_late) AS max_days_late_90,
    arg_max(b.discount_amount, b.invoice_date) AS discount_amount,
    (sum(b.overage_amount::DEC))::DOUBLE AS overage_90,
    arg_max(b.balance_forward, b.invoice_date) AS balance_forward
FROM raw.billing b JOIN _win w ON b.week_start = w.wk
WHERE b.invoice_date >= w.as_of - 90
GROUP BY ALL;
"""

_SELECT = """
CREATE OR REPLACE TEMP TABLE _snap AS
SELECT
    e.customer_id::BIGINT AS customer_id,
    e.as_of::TIMESTAMP AS event_timestamp,
    -- customer_account
    (e.as_of - e.signup_date)::BIGINT AS tenure_days,
    a.plan_type, a.contract_type, a.payment_method,
    a.monthly_revenue::DOUBLE AS monthly_revenue,
    coalesce(b.late_30, 0)::BIGINT AS late_payment_count_30d,
    a.num_lines::BIGINT AS num_lines,
    a.segment, a.region,
    a.paperless_billing::BIGINT AS paperless_billing,
    -- customer_usage
    coalesce(u.calls_30, 0)::DOUBLE AS calls_last_30d,
    coalesce(u.data_30, 0)::DOUBLE AS data_usage_gb_last_30d,
    {support_tickets_last_30d} AS support_tickets_last_30d,
    coalesce(g.logins_7, 0)::BIGINT AS login_count_last_7d,
    coalesce(g.features_30, 0)::BIGINT AS features_used_count,
    coalesce(u.minutes_30, 0)::DOUBLE AS call_minutes_last_30d,
    coalesce(u.sms_30, 0)::DOUBLE AS sms_last_30d,
    CASE WHEN coalesce(u.n_30, 0) > 0
        THEN (u.calls_30 / u.n_30 + 1.0) / (u.calls_90 / u.n_90 + 1.0) ELSE 1.0 END AS calls_trend_30d_vs_90d,
    CASE WHEN coalesce(u.n_30, 0) > 0
        THEN (u.data_30 / u.n_30 + 1.0) / (u.data_90 / u.n_90 + 1.0) ELSE 1.0 END AS data_usage_trend_30d_vs_90d,
    -- customer_billing
    coalesce(b.invoice_amount, 0)::DOUBLE AS invoice_amount,
    coalesce(b.avg_invoice_90, 0)::DOUBLE AS avg_invoice_amount_90d,
    CASE WHEN coalesce(b.avg_invoice_90, 0) > 0
        THEN 100.0 * (b.invoice_amount - b.avg_invoice_90) / b.avg_invoice_90 ELSE 0.0 END
        AS invoice_amount_change_pct,
    coalesce(b.late_90, 0)::BIGINT AS late_payment_count_90d,
    coalesce(b.max_days_late_90, 0)::BIGINT AS max_days_late_90d,
    coalesce(b.discount_amount, 0)::DOUBLE AS discount_amount,
    (coalesce(b.discount_amount, 0) > 0)::BIGINT AS has_active_discount,
    coalesce(b.overage_90, 0)::DOUBLE AS overage_amount_90d,
    coalesce(b.balance_forward, 0)::DOUBLE AS balance_forward,
    -- customer_engagement
    coalesce(g.logins_30, 0)::BIGINT AS login_count_last_30d,
    CASE WHEN coalesce(g.n_30, 0) > 0
        THEN (g.logins_7 + 1.0) / (g.logins_30 / g.n_30 + 1.0) ELSE 1.0 END AS login_trend_7d_vs_30d,
    coalesce(g.sessions_30, 0)::BIGINT AS sessions_last_30d,
    coalesce(g.minutes_30, 0)::DOUBLE AS app_minutes_last_30d,
    coalesce(g.active_days_30, 0)::BIGINT AS active_days_last_30d,
    coalesce(7 * (g.last_active_k - 1), $cap)::BIGINT AS days_since_last_active,
    coalesce(g.features_30, 0)::DOUBLE / $n_features AS feature_adoption_rate,
    {support_tickets_last_90d} AS support_tickets_last_90d,
    {unresolved_tickets_90d} AS unresolved_tickets_90d,
    {avg_ticket_satisfaction_90d} AS avg_ticket_satisfaction_90d,
    -- customer_cohort
    e.acquisition_channel,
    e.cohort AS signup_cohort,
    date_sub('month', e.signup_date, e.as_of)::BIGINT AS tenure_months,
    a.age_band,
    ((e.as_of - e.signup_date) < 90)::BIGINT AS is_new_customer,
    cr.rate::DOUBLE AS cohort_churn_rate_90d,
    hr.rate::DOUBLE AS channel_churn_rate_90d
FROM _ent e
JOIN raw.accounts a ON a.customer_id = e.customer_id
LEFT JOIN _usage u ON u.as_of = e.as_of AND u.customer_id = e.customer_id
LEFT JOIN _eng g ON g.as_of = e.as_of AND g.customer_id = e.customer_id
LEFT JOIN _tickets t ON t.as_of = e.as_of AND t.customer_id = e.customer_id
LEFT JOIN _billing b ON b.as_of = e.as_of AND b.customer_id = e.customer_id
JOIN _cohort_rate cr ON cr.as_of = e.as_of AND cr.cohort = e.cohort
JOIN _channel_rate hr ON hr.as_of = e.as_of AND hr.channel = e.acquisition_channel
"""

_PREPARE_SOURCES = _PREPARE_SOURCES.replace("{ticket_aggregates}", TICKET_AGGREGATES).replace(
    "{ticket_window}", TICKET_WINDOW
)
for _name, _expression in TICKET_FEATURES.items():
    _SELECT = _SELECT.replace("{" + _name + "}", _expression)

_INTERMEDIATE = (
    "_win",
    "_ent",
    "_usage",
    "_eng",
    "_tickets",
    "_billing",
    "_churned",
    "_cohort_counts",
    "_channel_counts",
    "_cohort_rate",
    "_channel_rate",
)
_DROP_INTERMEDIATE = " ".join(f"DROP TABLE IF EXISTS {t};" for t in _INTERMEDIATE)
_CLEANUP = _DROP_INTERMEDIATE + " DROP TABLE IF EXISTS _asof; DROP TABLE IF EXISTS _snap;"


def group_schema(group_name: str) -> pa.Schema:
    """Arrow schema of one feature group's snapshot table."""
    group = next(g for g in FEATURE_GROUPS if g.name == group_name)
    return pa.schema(
        [(ENTITY, pa.int64()), (EVENT_TIMESTAMP, pa.timestamp("us"))]
        + [(f.name, _ARROW[f.dtype]) for f in group.features]
    )


@dataclass(frozen=True)
class RateCounts:
    """Active and churned customers per as-of date and signup cohort / acquisition channel: the only
    inputs of a customer's features that depend on other customers (``cohort_churn_rate_90d``,
    ``channel_churn_rate_90d``). Counts are additive, so the counts of disjoint customer shards sum
    (:meth:`merge`) to the counts of the whole population, and the rates computed from the merged
    counts equal the rates of one pass over everyone."""

    cohort: pa.Table  # as_of DATE, cohort VARCHAR, active BIGINT, churned BIGINT
    channel: pa.Table  # as_of DATE, channel VARCHAR, active BIGINT, churned BIGINT

    @staticmethod
    def merge(parts: Sequence[RateCounts]) -> RateCounts:
        """The counts of the union of disjoint customer sets."""
        con = duckdb.connect()
        try:
            merged = {}
            for kind in ("cohort", "channel"):
                tables = [getattr(p, kind) for p in parts]
                con.register("_parts", pa.concat_tables(tables))
                merged[kind] = con.sql(
                    f"SELECT as_of, {kind}, sum(active)::BIGINT AS active, sum(churned)::BIGINT AS churned "
                    f"FROM _parts GROUP BY ALL ORDER BY ALL"
                ).to_arrow_table()
                con.unregister("_parts")
        finally:
            con.close()
        return RateCounts(cohort=merged["cohort"], channel=merged["channel"])


def rate_counts(con: duckdb.DuckDBPyConnection, as_of_dates: Sequence[dt.date]) -> RateCounts:
    """The :class:`RateCounts` of the customers in ``raw.*`` at ``as_of_dates`` (one shard's, or everyone's)."""
    try:
        con.execute(_AS_OF, {"dates": sorted(set(as_of_dates))})
        con.execute(_PREPARE_ENTITIES)
        con.execute(_COUNTS)
        return RateCounts(
            cohort=con.sql("SELECT * FROM _cohort_counts ORDER BY ALL").to_arrow_table(),
            channel=con.sql("SELECT * FROM _channel_counts ORDER BY ALL").to_arrow_table(),
        )
    finally:
        con.execute(_CLEANUP)


def compute_snapshots(
    con: duckdb.DuckDBPyConnection,
    as_of_dates: list[dt.date],
    dates_per_pass: int = 3,
    counts: RateCounts | None = None,
) -> dict[str, pa.Table]:
    """Feature snapshots of every entity at every as-of date: one Arrow table per feature group.

    Rows are ordered by (event_timestamp, customer_id); an as-of date with no entities yields no rows.
    The dates are processed ``dates_per_pass`` at a time (set-based within a pass), which bounds
    DuckDB's hash tables at full scale without changing the result. ``counts``: see :func:`iter_snapshots`.
    """
    parts: dict[str, list[pa.Table]] = {g.name: [] for g in FEATURE_GROUPS}
    for batch in iter_snapshots(con, as_of_dates, dates_per_pass, counts):
        for name, table in batch.items():
            parts[name].append(table)
    return {name: pa.concat_tables(tables) for name, tables in parts.items()}


def iter_snapshots(
    con: duckdb.DuckDBPyConnection,
    as_of_dates: list[dt.date],
    dates_per_pass: int = 3,
    counts: RateCounts | None = None,
) -> Iterator[dict[str, pa.Table]]:
    """The snapshots of :func:`compute_snapshots`, one pass (``dates_per_pass`` dates) at a time.

    Consumers that store each pass before asking for the next keep only one pass in memory. Without
    ``counts`` the cohort and channel churn rates come from the customers in ``raw.*``; a customer
    shard passes the :class:`RateCounts` of the whole population instead (merged from every shard's
    :func:`rate_counts`), so its rows equal the same customers' rows of one pass over everyone.
    """
    dates = sorted(set(as_of_dates))
    for start in range(0, max(len(dates), 1), dates_per_pass):
        yield _compute_pass(con, dates[start : start + dates_per_pass], counts)


def _compute_pass(
    con: duckdb.DuckDBPyConnection, dates: list[dt.date], counts: RateCounts | None
) -> dict[str, pa.Table]:
    out: dict[str, pa.Table] = {}
    try:
        con.execute(_AS_OF, {"dates": dates})
        con.execute(_PREPARE_ENTITIES)
        if counts is None:
            con.execute(_COUNTS)
        else:
            for kind, table in (("cohort", counts.cohort), ("channel", counts.channel)):
                con.register("_given_counts", table)
                con.execute(f"CREATE OR REPLACE TEMP TABLE _{kind}_counts AS SELECT * FROM _given_counts")
                con.unregister("_given_counts")
        con.execute(_RATES)
        con.execute(_PREPARE_SOURCES)
        con.execute(_SELECT, {"cap": DAYS_SINCE_ACTIVE_CAP, "n_features": N_PRODUCT_FEATURES})
        con.execute(_DROP_INTERMEDIATE)  # free the per-source aggregates before exporting
        for group in FEATURE_GROUPS:
            schema = group_schema(group.name)
            columns = ", ".join(schema.names)
            query = f"SELECT {columns} FROM _snap ORDER BY {EVENT_TIMESTAMP}, {ENTITY}"
            out[group.name] = con.sql(query).to_arrow_table().cast(schema)
    finally:
        con.execute(_CLEANUP)
    return out


def load_landing_into_duckdb(con: duckdb.DuckDBPyConnection, landing_dir: Path | str) -> None:
    """(Re)create ``raw.<table>`` from every landing Parquet file, without validation."""
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    for table in RAW_TABLES:
        pattern = str(Path(landing_dir) / table / "*.parquet").replace("'", "''")
        con.execute(f"CREATE OR REPLACE TABLE raw.{table} AS SELECT * FROM read_parquet('{pattern}')")
