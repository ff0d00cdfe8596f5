"""Feature declarations: the spec's five feature groups, 45 features, as plain data.

Each group names its entity, owner, update frequency, TTL (the maximum age a value may have when
it is served, offline or online) and the raw tables it is computed from. The SQL that computes
the values lives in :mod:`churn_assets.feature_store.transforms`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

DType = Literal["int64", "float64", "string"]
ENTITY = "customer_id"
EVENT_TIMESTAMP = "event_timestamp"


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: DType
    description: str


@dataclass(frozen=True)
class FeatureGroup:
    name: str
    description: str
    owner: str
    update_frequency: str
    ttl: dt.timedelta
    sources: tuple[str, ...]
    features: tuple[Feature, ...]
    entity: str = ENTITY
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


def _f(name: str, dtype: DType, description: str) -> Feature:
    return Feature(name, dtype, description)


customer_account = FeatureGroup(
    name="customer_account",
    description="Contract, plan and payment facts of the account.",
    owner="crm-data@churnops.example",
    update_frequency="daily",
    ttl=dt.timedelta(days=35),
    sources=("raw.accounts", "raw.billing"),
    features=(
        _f("tenure_days", "int64", "Days since signup, as of the snapshot."),
        _f("plan_type", "string", "Tariff plan: basic, standard, premium or unlimited."),
        _f("contract_type", "string", "month_to_month, one_year or two_year."),
        _f("payment_method", "string", "credit_card, bank_transfer, electronic_check or mailed_check."),
        _f("monthly_revenue", "float64", "List price of the plan for all lines, per month."),
        _f("late_payment_count_30d", "int64", "Statements in the last 30 days reporting a late payment."),
        _f("num_lines", "int64", "Lines on the account."),
        _f("segment", "string", "consumer or business."),
        _f("region", "string", "Sales region."),
        _f("paperless_billing", "int64", "1 when the customer receives paperless bills."),
    ),
)

customer_usage = FeatureGroup(
    name="customer_usage",
    description="Network usage and service contacts over rolling windows.",
    owner="network-analytics@churnops.example",
    update_frequency="hourly",
    ttl=dt.timedelta(days=35),
    sources=("raw.usage", "raw.engagement", "raw.support_tickets"),
    features=(
        _f("calls_last_30d", "float64", "Calls placed in the last 4 weeks."),
        _f("data_usage_gb_last_30d", "float64", "Mobile data used in the last 4 weeks, GB."),
        _f("support_tickets_last_30d", "int64", "Support tickets opened in the last 30 days."),
        _f("login_count_last_7d", "int64", "App/portal logins in the last week."),
        _f("features_used_count", "int64", "Distinct product features used in the last 4 weeks."),
        _f("call_minutes_last_30d", "float64", "Call minutes in the last 4 weeks."),
        _f("sms_last_30d", "float64", "SMS sent in the last 4 weeks."),
        _f("calls_trend_30d_vs_90d", "float64", "Weekly calls, last 4 weeks over last 13 weeks (1 = flat)."),
        _f("data_usage_trend_30d_vs_90d", "float64", "Weekly data, last 4 weeks over last 13 weeks."),
    ),
)

customer_billing = FeatureGroup(
    name="customer_billing",
    description="Invoices, discounts and payment behaviour.",
    owner="billing-data@churnops.example",
    update_frequency="daily",
    ttl=dt.timedelta(days=45),
    sources=("raw.billing",),
    features=(
        _f("invoice_amount", "float64", "Amount of the latest invoice."),
        _f("avg_invoice_amount_90d", "float64", "Mean invoice amount over the last 90 days."),
        _f("invoice_amount_change_pct", "float64", "Latest invoice vs the 90-day mean, percent."),
        _f("late_payment_count_90d", "int64", "Statements in the last 90 days reporting a late payment."),
        _f("max_days_late_90d", "int64", "Longest payment delay reported in the last 90 days, days."),
        _f("discount_amount", "float64", "Discount on the latest invoice."),
        _f("has_active_discount", "int64", "1 when the latest invoice carries a discount."),
        _f("overage_amount_90d", "float64", "Out-of-plan charges over the last 90 days."),
        _f("balance_forward", "float64", "Unpaid balance carried on the latest invoice."),
    ),
)

customer_engagement = FeatureGroup(
    name="customer_engagement",
    description="Digital engagement and support experience.",
    owner="digital-product@churnops.example",
    update_frequency="daily",
    ttl=dt.timedelta(days=35),
    sources=("raw.engagement", "raw.support_tickets"),
    features=(
        _f("login_count_last_30d", "int64", "Logins in the last 4 weeks."),
        _f("login_trend_7d_vs_30d", "float64", "Logins last week over the weekly mean of the last 4 weeks."),
        _f("sessions_last_30d", "int64", "App sessions in the last 4 weeks."),
        _f("app_minutes_last_30d", "float64", "Minutes in the app in the last 4 weeks."),
        _f("active_days_last_30d", "int64", "Days with any app activity in the last 4 weeks."),
        _f("days_since_last_active", "int64", "Days since the last week with app activity (capped)."),
        _f("feature_adoption_rate", "float64", "Share of the product's features used in 4 weeks."),
        _f("support_tickets_last_90d", "int64", "Support tickets opened in the last 90 days."),
        _f("unresolved_tickets_90d", "int64", "Tickets of the last 90 days still open at the snapshot."),
        _f("avg_ticket_satisfaction_90d", "float64", "Mean satisfaction (1-5) of rated tickets, 90 days."),
    ),
)

customer_cohort = FeatureGroup(
    name="customer_cohort",
    description="Acquisition cohort and the recent churn of comparable customers.",
    owner="growth-analytics@churnops.example",
    update_frequency="weekly",
    ttl=dt.timedelta(days=35),
    sources=("raw.accounts", "raw.churn_events"),
    features=(
        _f("acquisition_channel", "string", "online, retail, telesales, partner or campaign."),
        _f("signup_cohort", "string", "Signup quarter, e.g. 2024Q3."),
        _f("tenure_months", "int64", "Whole months since signup."),
        _f("age_band", "string", "Customer age band."),
        _f("is_new_customer", "int64", "1 when tenure is under 90 days."),
        _f("cohort_churn_rate_90d", "float64", "Churn reported in the last 90 days, signup cohort."),
        _f("channel_churn_rate_90d", "float64", "Churn reported in the last 90 days, acquisition channel."),
    ),
)

FEATURE_GROUPS: tuple[FeatureGroup, ...] = (
    customer_account,
    customer_usage,
    customer_billing,
    customer_engagement,
    customer_cohort,
)


def feature_group(name: str) -> FeatureGroup:
    for group in FEATURE_GROUPS:
        if group.name == name:
            return group
    known = ", ".join(g.name for g in FEATURE_GROUPS)
    raise KeyError(f"unknown feature group {name!r}; known groups: {known}")


def all_features() -> list[Feature]:
    return [f for g in FEATURE_GROUPS for f in g.features]


def unknown_features(names: Sequence[str]) -> list[str]:
    """The names among ``names`` that are not declared features of the store (in their order)."""
    known = {f.name for f in all_features()}
    return [n for n in names if n not in known]


def resolve(refs: list[str] | None = None) -> dict[str, list[str]]:
    """Map feature references to ``{group: [feature, ...]}``.

    A reference is ``"group:feature"``, ``"group"`` (all its features) or a bare feature name
    (names are unique across groups). ``None`` means every feature.
    """
    if refs is None:
        return {g.name: g.feature_names for g in FEATURE_GROUPS}
    owner = {f.name: g.name for g in FEATURE_GROUPS for f in g.features}
    out: dict[str, list[str]] = {}
    for ref in refs:
        if ":" in ref:
            group_name, name = ref.split(":", 1)
            if name not in feature_group(group_name).feature_names:
                raise KeyError(f"feature {name!r} is not in group {group_name!r}")
            out.setdefault(group_name, []).append(name)
        elif ref in owner:
            out.setdefault(owner[ref], []).append(ref)
        else:
            out.setdefault(ref, []).extend(feature_group(ref).feature_names)
    return out
