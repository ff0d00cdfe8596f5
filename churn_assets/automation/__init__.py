"""Automation: retraining triggers, rollout checks, the weekly production flow and the daemon-driven demo.

Plain Python (no Dagster imports except in ``demo.py``, which drives a Dagster daemon); the sensors,
schedule and jobs that call it live in ``churn_assets/defs/`` (see docs/automation.md).
"""
