"""Automation: retraining triggers, rollout checks, the rollout start after a promotion and the weekly
production flow.

Plain Python (no Dagster imports); the sensors, schedule and jobs that call it live in
``churn_assets/defs/``, the daemon-driven demo in ``churn_assets/orchestration/demo.py`` (see
docs/automation.md).
"""
