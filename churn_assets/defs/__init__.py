"""Dagster definitions of churnops (loaded by churn_assets/definitions.py)."""

import warnings

import dagster as dg

# Single-run backfills and partitioned asset checks are marked beta/preview in Dagster 1.13; we
# rely on them knowingly (see docs/architecture.md), so their warnings are noise in every run log.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
