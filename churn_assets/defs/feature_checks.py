"""WARN asset check on the online store: ``features/online_store:features_not_deprecated``.

After every online-store materialization (the main pipeline and each weekly production run) it observes
which features the aliased versions (champion, challenger, previous) of every model built from the feature
store depend on, at the simulated clock, and stores every feature's verdict (``modeling.feature_usage``,
``feature_store.lifecycle``). It warns when a feature is deprecated: unused for
``feature_store.deprecate_after_days`` (90). With ``feature_store.retire_deprecated`` the next online
materialization writes those features as null.
"""

import dagster as dg

from churn_assets.defs.keys import FEATURES_NOT_DEPRECATED
from churn_assets.feature_store.lifecycle import DEPRECATED, IN_USE
from churn_assets.settings import Settings


@dg.asset_check(
    asset=FEATURES_NOT_DEPRECATED.asset_key,
    name=FEATURES_NOT_DEPRECATED.name,
    blocking=False,
    description=(
        "WARN when a feature has not been used by any champion, challenger or previous model version for "
        "`feature_store.deprecate_after_days` (90) simulated days; stores every feature's verdict."
    ),
)
def features_not_deprecated(settings: dg.ResourceParam[Settings]) -> dg.AssetCheckResult:
    from churn_assets.modeling.feature_usage import refresh

    now, verdicts = refresh(settings)
    deprecated = [v.feature for v in verdicts if v.status == DEPRECATED]
    in_use = sum(v.status == IN_USE for v in verdicts)
    days = settings.feature_store.deprecate_after_days
    return dg.AssetCheckResult(
        passed=not deprecated,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(deprecated)} feature(s) unused by every aliased model version for {days} days: "
            + ", ".join(deprecated)
            if deprecated
            else f"no feature unused for {days} days ({in_use} in use)"
        ),
        metadata={
            "now": now,
            "deprecated": dg.MetadataValue.json(deprecated),
            "in_use": in_use,
            "retire_deprecated": settings.feature_store.retire_deprecated,
            "statuses": dg.MetadataValue.json({v.feature: v.status for v in verdicts}),
        },
    )
