"""WARN asset checks on the weekly monitoring reports: a drifted or under-performing week is visibly not
green in the Dagster UI, and nothing is blocked (the run stays green, the sensors still act).

* ``monitoring/drift_report:no_material_drift`` — fewer than ``automation.retrain_min_drifted_features``
  features drifted.
* ``monitoring/performance_report:auc_at_or_above_0_78`` — the realised AUC of the newest labelled
  prediction week is at least ``monitoring.auc_threshold``.
* ``monitoring/performance_report:estimated_auc_at_or_above_0_78`` — the week's CBPE estimate is too.

Each reads the metadata its report stored for the run's week and hands it to the domain
(``churn_assets.monitoring.checks``); the thresholds are the settings of the run. The checks belong to the
``weekly_production`` job (its selection holds the monitoring group and so their checks); a check can be
re-run on its own from the UI after a threshold changed.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg

from churn_assets.defs.keys import (
    AUC_AT_OR_ABOVE_THRESHOLD,
    ESTIMATED_AUC_AT_OR_ABOVE_THRESHOLD,
    NO_MATERIAL_DRIFT,
)
from churn_assets.defs.partitions import weekly_partitions
from churn_assets.defs.sensors import metadata_of
from churn_assets.monitoring.checks import (
    CheckOutcome,
    auc_outcome,
    drift_outcome,
    estimated_auc_outcome,
)
from churn_assets.settings import Settings

Verdict = Callable[[dict[str, Any] | None, Settings], CheckOutcome]


def _build(key: dg.AssetCheckKey, verdict: Verdict, description: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key.asset_key,
        name=key.name,
        blocking=False,
        partitions_def=weekly_partitions,
        description=description,
    )
    def _check(
        context: dg.AssetCheckExecutionContext, settings: dg.ResourceParam[Settings]
    ) -> dg.AssetCheckResult:
        week = context.partition_keys[-1]  # weekly_production runs one week; a range: its newest week
        found = metadata_of(context.instance, key.asset_key, week)
        outcome = verdict(found[0] if found else None, settings)
        return dg.AssetCheckResult(
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.WARN,
            description=outcome.description,
            metadata={
                "week": week,
                **{
                    k: dg.MetadataValue.json(v) if isinstance(v, list | dict) else v
                    for k, v in outcome.metadata.items()
                },
            },
        )

    return _check


monitoring_checks = [
    _build(
        NO_MATERIAL_DRIFT,
        lambda meta, s: drift_outcome(meta, s.automation.retrain_min_drifted_features),
        "WARN when at least `automation.retrain_min_drifted_features` (3) features drifted this week "
        "(the drift report's `n_drifted_features`).",
    ),
    _build(
        AUC_AT_OR_ABOVE_THRESHOLD,
        lambda meta, s: auc_outcome(meta, s.monitoring.auc_threshold),
        "WARN when the realised AUC of the newest prediction week with complete labels is below "
        "`monitoring.auc_threshold` (0.78); passes, not evaluated, before any week is labelled.",
    ),
    _build(
        ESTIMATED_AUC_AT_OR_ABOVE_THRESHOLD,
        lambda meta, s: estimated_auc_outcome(meta, s.monitoring.auc_threshold),
        "WARN when the label-free CBPE estimate of this week's AUC is below `monitoring.auc_threshold` (0.78).",
    ),
]
