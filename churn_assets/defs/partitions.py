"""Partitions shared by every raw and feature asset (scheme: churn_assets/timeline.py)."""

import dagster as dg

WEEKS = "weeks"

# Landing weeks, keyed by their Monday ("2024-01-01"). Dynamic: the simulator (or an upstream
# system) adds one key per landed week, so the UI shows exactly the weeks that exist.
weekly_partitions = dg.DynamicPartitionsDefinition(name=WEEKS)

# History is dozens of weeks: materialize a range of partitions in one run.
single_run = dg.BackfillPolicy.single_run()
