"""The monitoring assets are in the code location: weekly partitions, lineage, resources."""

from __future__ import annotations

import dagster as dg

from churn_assets.defs.partitions import WEEKS
from churn_assets.orchestration import load_definitions

FEATURES = {
    "features/customer_account",
    "features/customer_usage",
    "features/customer_billing",
    "features/customer_engagement",
    "features/customer_cohort",
}


def test_monitoring_assets_are_weekly_and_read_features_the_champion_and_batch_scores() -> None:
    graph = load_definitions().resolve_asset_graph()
    for key, extra in (
        ("drift_report", set()),
        ("performance_report", {"raw/churn_events", "production/batch_scores"}),  # reads the logged scores
    ):
        node = graph.get(dg.AssetKey(["monitoring", key]))
        assert {p.to_user_string() for p in node.parent_keys} == FEATURES | {"training/champion"} | extra
        partitions = node.partitions_def
        assert isinstance(partitions, dg.DynamicPartitionsDefinition) and partitions.name == WEEKS
        assert node.group_name == "monitoring"
