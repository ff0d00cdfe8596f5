"""Weekly production assets (live traffic, batch scoring, label status, rollout review) and the rollout
state assets.

Thin wrappers over ``churn_assets.automation`` (``production``, ``rollout_checks``) and
``churn_assets.serving`` (``traffic``, ``scoring``, ``rollout``, ``prediction_log``). See docs/automation.md.
"""

import datetime as dt
from typing import Any

import dagster as dg
import polars as pl

from churn_assets.automation.production import (
    label_status,
    realised_outcomes,
    snapshot_features,
)
from churn_assets.defs.keys import (
    BATCH_SCORES,
    CHAMPION,
    CHAMPION_BENTO,
    FEATURE_KEYS,
    LABEL_STATUS,
    LIVE_TRAFFIC,
    ONLINE_STORE,
    PRODUCTION_GROUP,
    ROLLOUT_GROUP,
    ROLLOUT_REVIEW,
    ROLLOUT_START,
    ROLLOUT_STEP,
)
from churn_assets.defs.metadata import markdown_table
from churn_assets.defs.partitions import weekly_partitions
from churn_assets.defs.resources import WarehouseResource
from churn_assets.modeling.workdir import TrainingWorkdir
from churn_assets.settings import Settings
from churn_assets.timeline import Timeline


def _week_as_of(settings: Settings, week: str) -> dt.date | None:
    return Timeline.from_settings(settings.simulation).snapshot_for_week(dt.date.fromisoformat(week))


@dg.asset(
    key=LIVE_TRAFFIC,
    group_name=PRODUCTION_GROUP,
    partitions_def=weekly_partitions,
    deps=[*FEATURE_KEYS, ONLINE_STORE],
    kinds={"bentoml"},
    description=(
        "The week's scoring requests sent over HTTP to the live service (serving/traffic.py): the customers "
        "who logged in or contacted support, bounded by traffic.max_requests / max_seconds at "
        "traffic.requests_per_second, loopback only. The service's live clock moves to the week first. "
        "Without a service answering /ready the week is batch scored only."
    ),
)
def live_traffic(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    from churn_assets.serving.traffic import live_week

    week = context.partition_key
    as_of = _week_as_of(settings, week)
    if as_of is None:
        return dg.MaterializeResult(metadata={"requests": 0, "note": "no feature snapshot in this week"})
    with warehouse.warehouse().connect() as con:
        features = snapshot_features(con, as_of)
    result = live_week(settings, features, as_of, seed=settings.simulation.seed + as_of.toordinal())
    context.log.info(f"live traffic {week}: {result.note}")
    summary = result.summary
    metadata: dict[str, Any] = {"as_of": as_of.isoformat(), "note": result.note, "callers": result.callers}
    if summary is not None:
        metadata |= {
            "url": summary.url,
            "requests": summary.requests,
            "ok": summary.ok,
            "errors": summary.errors,
            "errors_by_status": dg.MetadataValue.json(summary.errors_by_status),
            "requests_per_second": round(summary.requests_per_second, 1),
            "latency_p50_ms": summary.latency_p50_ms,
            "latency_p95_ms": summary.latency_p95_ms,
            "latency_p99_ms": summary.latency_p99_ms,
            "scored_customers": summary.customers,
            "logged_rows": result.logged_rows,
            "by_variant": dg.MetadataValue.json(summary.by_variant),
            "stopped_by": summary.stopped_by,
            "not_sent": summary.not_sent,
            "seconds": round(summary.seconds, 1),
            "model_load_wait_seconds": result.model_load_wait_seconds,
        }
        service = summary.service  # the service's own /metrics over the week's window
        if service is not None:
            metadata |= {
                "service_requests": service["requests"],
                "service_error_rate": service["error_rate"],
                "service_latency_p95_ms": service["latency_p95_ms"],
                "service_latency_p99_ms": service["latency_p99_ms"],
                "service_uptime_hours": None
                if service["uptime_seconds"] is None
                else round(service["uptime_seconds"] / 3600, 3),
                "service_by_variant": dg.MetadataValue.json(service["by_variant"]),
            }
    else:
        metadata["requests"] = 0
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    key=BATCH_SCORES,
    group_name=PRODUCTION_GROUP,
    partitions_def=weekly_partitions,
    deps=[*FEATURE_KEYS, ONLINE_STORE, LIVE_TRAFFIC],
    kinds={"lightgbm", "parquet"},
    description=(
        "Batch scoring, with the serving code (serving/scoring.py), of the customers of the week's feature "
        "snapshot the live service did not score (production/live_traffic): the stable champion scores "
        "them; the rollout candidate scores them too in shadow, or its canary share of them (the service's "
        "routing hash). Rows go to the prediction log labelled source=batch."
    ),
)
def batch_scores(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    from churn_assets.compute.scoring import score_week
    from churn_assets.modeling.registry import ModelRegistry
    from churn_assets.serving.prediction_log import write_predictions
    from churn_assets.serving.rollout import RolloutStore, route
    from churn_assets.serving.scoring import load_version

    week = context.partition_key
    as_of = _week_as_of(settings, week)
    state = RolloutStore(settings).load()
    stable = state.stable_version or ModelRegistry(settings).aliases().get("champion")
    if as_of is None or stable is None:
        why = "no feature snapshot in this week" if as_of is None else "no champion registered yet"
        context.log.info(f"week {week}: nothing scored ({why})")
        return dg.MaterializeResult(metadata={"scored_rows": 0, "note": why, "dagster/row_count": 0})
    from churn_assets.serving.prediction_log import read_snapshots

    with warehouse.warehouse().connect() as con:
        snapshot = snapshot_features(con, as_of)
    live = read_snapshots(settings, [as_of]).filter(pl.col("source") == "http").select("customer_id").unique()
    features = snapshot.join(live, on="customer_id", how="anti") if live.height else snapshot
    cache: dict[str, Any] = {}

    def load(version: str) -> Any:
        if version not in cache:
            cache[version] = load_version(settings, version)
        return cache[version]

    result, engine = score_week(
        settings,
        features,
        as_of,
        phase=state.phase,
        stable_version=str(stable),
        candidate_version=state.candidate_version,
        load=load,
        route=lambda cid: route(cid, state),
    )
    written = write_predictions(settings, result.frame) if result.frame.height else 0
    counts = result.counts()
    return dg.MaterializeResult(
        metadata={
            "as_of": as_of.isoformat(),
            "scored_rows": written,
            "dagster/row_count": written,
            "customers": snapshot.height,
            "batch_customers": features.height,
            "live_customers": snapshot.height - features.height,
            "rows_by_variant": dg.MetadataValue.json(counts),
            "stable_version": str(stable),
            "candidate_version": state.candidate_version or "none",
            "rollout_phase": state.phase,
            "mean_score_stable": float(
                result.frame.filter(result.frame["variant"] == "champion")["score"].to_numpy().mean()
            )
            if written
            else 0.0,
            "seconds": round(result.seconds, 2),
            "engine": engine["engine"],
            **(
                {
                    "workers": engine["workers"],
                    "customers_by_shard": dg.MetadataValue.json(engine["customers_by_shard"]),
                }
                if "workers" in engine
                else {}
            ),
        }
    )


@dg.asset(
    key=LABEL_STATUS,
    group_name=PRODUCTION_GROUP,
    partitions_def=weekly_partitions,
    deps=FEATURE_KEYS,
    kinds={"duckdb"},
    description=(
        "Labelled rows available for training that arrived after the newest labelled snapshot of the "
        "champion's training set (a retraining that kept the champion does not reset it; a snapshot is "
        "labelled once its label window + report delay has landed)."
    ),
)
def production_label_status(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    from churn_assets.modeling.registry import CHAMPION as CHAMPION_ALIAS
    from churn_assets.modeling.registry import ModelRegistry

    workdir = TrainingWorkdir.of(settings)
    since, source = None, "none"
    # Since the CHAMPION's training set: a retraining that kept the champion does not reset the count.
    champion = ModelRegistry(settings).aliases().get(CHAMPION_ALIAS)
    trained_on = workdir.load_trained_on()
    if champion is not None and trained_on.get(champion):
        since = dt.date.fromisoformat(str(trained_on[champion])[:10])
        source = f"champion v{champion}'s training set"
    elif workdir.training_set_meta.exists():  # no promotion step recorded the champion: last training set
        source = "the last training set"
        newest = workdir.load_meta().get("newest_labelled_as_of")
        since = dt.date.fromisoformat(str(newest)[:10]) if newest else None
    with warehouse.warehouse().connect() as con:
        status = label_status(
            con, Timeline.from_settings(settings.simulation), 7 * settings.simulation.label_delay_weeks, since
        )
    context.log.info(f"week {context.partition_key}: {status['new_labelled_rows']} new labelled rows")
    return dg.MaterializeResult(
        metadata={
            "new_labelled_rows": status["new_labelled_rows"],
            "newest_labelled_as_of": status["newest_labelled_as_of"],
            "since": status["since"],
            "since_source": source,
            "new_labelled_snapshots": dg.MetadataValue.json(status["new_labelled_snapshots"]),
        }
    )


@dg.asset(
    key=ROLLOUT_REVIEW,
    group_name=PRODUCTION_GROUP,
    partitions_def=weekly_partitions,
    deps=[BATCH_SCORES],
    kinds={"polars"},
    description=(
        "The rollout phase's checks on this week's predictions (latency, error rate, the candidate's score "
        "distribution vs its own validation-time scores, outcomes once labelled: >= 2 % AUC gain): verdict "
        "advance / hold / rollback; a manual business review holds at canary_50. The rollout sensor acts on "
        "it (one step per production week). Also retires the previous model once its retention ended."
    ),
)
def rollout_review(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    from churn_assets.automation.rollout_checks import (  # SciPy / scikit-learn: run time only
        business_impact,
        review_phase,
    )
    from churn_assets.modeling.registry import ModelRegistry
    from churn_assets.modeling.score_reference import ScoreReference
    from churn_assets.serving.prediction_log import read_predictions, read_snapshots
    from churn_assets.serving.rollout import RolloutStore

    store = RolloutStore(settings)
    as_of = _week_as_of(settings, context.partition_key)
    retired = store.retire_expired(as_of, by="rollout-review") if as_of is not None else None
    state = store.load()
    cfg = settings.automation.rollout
    reference: ScoreReference | None = None
    impact = None
    if as_of is None or not state.active:
        verdict = review_phase(
            read_predictions(settings, dt.datetime(1970, 1, 1), dt.datetime(1970, 1, 2)),
            "none",
            state.stable_version,
            None,
            cfg,
        )
    else:
        weeks = [as_of - dt.timedelta(weeks=k) for k in range(cfg.outcome_weeks + 1)]
        earlier = read_snapshots(settings, weeks)
        predictions = earlier.filter(earlier["as_of"] == as_of)
        with warehouse.warehouse().connect() as con:
            outcomes = realised_outcomes(
                con,
                Timeline.from_settings(settings.simulation),
                7 * settings.simulation.label_delay_weeks,
                earlier.get_column("as_of").drop_nulls().unique().to_list(),
            )
        reference = ScoreReference.of_version(ModelRegistry(settings).tags(str(state.candidate_version)))
        verdict = review_phase(
            predictions,
            state.phase,
            state.stable_version,
            state.candidate_version,
            cfg,
            outcomes,
            reference=reference,
            outcome_predictions=earlier,
            manual_review=settings.serving.rollout_review == "manual" and state.approved_by is None,
        )
        impact = business_impact(earlier, state.stable_version, state.candidate_version, outcomes)
    context.log.info(f"rollout review {context.partition_key}: {verdict.action} ({verdict.reason})")
    return dg.MaterializeResult(
        metadata={
            "action": verdict.action,
            "phase": verdict.phase,
            "stable_version": verdict.stable_version or "none",
            "candidate_version": verdict.candidate_version or "none",
            "reason": verdict.reason,
            "candidate_rows": verdict.candidate_rows,
            "score_reference": (
                f"{reference.rows:,} validation-time scores of v{state.candidate_version}"
                if reference is not None
                else "none registered"
            ),
            "review_mode": settings.serving.rollout_review,
            "ab_test": impact.note if impact is not None else "no rollout in progress",
            "ab_test_detail": dg.MetadataValue.json(impact.as_dict() if impact is not None else {}),
            "retired_version": retired or "none",
            "checks": dg.MetadataValue.md(
                markdown_table(
                    [
                        {
                            "check": c.name,
                            "passed": c.passed,
                            "value": c.value,
                            "limit": c.limit,
                            "detail": c.detail,
                        }
                        for c in verdict.checks
                    ]
                )
                if verdict.checks
                else "no checks (no rollout in progress)"
            ),
        }
    )


@dg.asset(
    key=ROLLOUT_START,
    group_name=ROLLOUT_GROUP,
    deps=[CHAMPION, CHAMPION_BENTO],
    kinds={"bentoml"},
    description=(
        "After the promotion decision and the bento rebuild: a promoted challenger starts its rollout in "
        "shadow (stable = the previous champion); the first champion is deployed directly; a kept champion "
        "leaves the rollout unchanged (the decision is in the audit log for review)."
    ),
)
def rollout_start(
    context: dg.AssetExecutionContext, settings: dg.ResourceParam[Settings]
) -> dg.MaterializeResult:
    from churn_assets.automation.rollout_start import start_rollout
    from churn_assets.serving.rollout import RolloutStore

    decision = TrainingWorkdir.of(settings).load_decision()
    trigger = context.run.tags.get("churnops/trigger", "manual")
    started = start_rollout(RolloutStore(settings), decision, trigger)
    state, action = started.state, started.action
    context.log.info(action)
    return dg.MaterializeResult(
        metadata={
            "action": action,
            "decision": decision["outcome"],
            "phase": state.phase,
            "stable_version": state.stable_version or "none",
            "candidate_version": state.candidate_version or "none",
            "trigger": trigger,
        }
    )


class RolloutStepConfig(dg.Config):
    action: str = "advance"  # advance | rollback
    week: str = ""
    reason: str = ""


@dg.asset(
    key=ROLLOUT_STEP,
    group_name=ROLLOUT_GROUP,
    kinds={"bentoml"},
    description=(
        "One rollout step requested by the rollout sensor: advance to the next phase "
        "(shadow -> canary_5 -> canary_25 -> canary_50 -> full) or roll back (stable traffic + registry "
        "champion <- previous)."
    ),
)
def rollout_step(
    context: dg.AssetExecutionContext,
    config: RolloutStepConfig,
    settings: dg.ResourceParam[Settings],
) -> dg.MaterializeResult:
    from churn_assets.serving.rollout import RolloutStore

    store = RolloutStore(settings)
    before = store.load()
    reason = f"week {config.week}: {config.reason}"
    if config.action == "advance":
        on = _week_as_of(settings, config.week) if config.week else None
        after = store.advance(by="rollout-sensor", reason=reason, on=on)
    elif config.action == "rollback":
        after = store.rollback(by="rollout-sensor", reason=reason)
    else:
        raise ValueError(f"rollout step: action must be 'advance' or 'rollback', got {config.action!r}")
    reached = "full" if config.action == "advance" and after.phase == "none" else after.phase
    context.log.info(f"rollout {config.action}: {before.phase} -> {reached}")
    return dg.MaterializeResult(
        metadata={
            "action": config.action,
            "week": config.week,
            "phase_before": before.phase,
            "phase_after": reached,
            "stable_version": after.stable_version or "none",
            "candidate_version": after.candidate_version or "none",
            "reason": reason,
        }
    )
