"""The product catalogue and customer mix of the simulated telecom: prices, allowances, category mixes.

Categorical attributes are stored as small integer codes indexing the tuples of
:mod:`data_contracts.categories`, so the contract stays the single source of allowed values.
"""

from __future__ import annotations

import numpy as np

from data_contracts.categories import (
    ACQUISITION_CHANNELS,
    AGE_BANDS,
    CHURN_REASONS,
    CONTRACT_TYPES,
    PAYMENT_METHODS,
    PLAN_TYPES,
    REGIONS,
    SEGMENTS,
    TICKET_CATEGORIES,
    TICKET_PRIORITIES,
)

# Monthly list price of one line, per plan (PLAN_TYPES order: basic, standard, premium, unlimited).
PLAN_PRICE = np.array([25.0, 45.0, 70.0, 95.0])
# Monthly data allowance of one line in GB (unlimited: no overage).
PLAN_ALLOWANCE_GB = np.array([10.0, 25.0, 60.0, np.inf])
# Typical weekly data use of one line in GB, per plan.
PLAN_DATA_GB_WEEK = np.array([1.2, 2.8, 6.0, 10.0])
OVERAGE_PRICE_PER_GB = 5.0
PAYMENT_TERMS_DAYS = 21
MAX_LINES = 20
MAX_MONTHLY_REVENUE = 1_999.0

# Population mixes of the regular acquisition channels (probabilities in category order).
PLAN_MIX = np.array([0.30, 0.38, 0.22, 0.10])
CONTRACT_MIX_CONSUMER = np.array([0.52, 0.26, 0.22])
CONTRACT_MIX_BUSINESS = np.array([0.25, 0.35, 0.40])
PAYMENT_MIX = np.array([0.36, 0.30, 0.24, 0.10])
CHANNEL_MIX = np.array([0.36, 0.30, 0.14, 0.20, 0.0])  # "campaign" only in the production scenario
REGION_MIX = np.array([0.22, 0.20, 0.18, 0.22, 0.18])
AGE_MIX = np.array([0.10, 0.22, 0.22, 0.19, 0.15, 0.12])
BUSINESS_SHARE = 0.15

# The acquisition campaign's profile: premium / unlimited family bundles, mostly on one-year deals.
CAMPAIGN_PLAN_MIX = np.array([0.0, 0.0, 0.25, 0.75])
CAMPAIGN_CONTRACT_MIX = np.array([0.35, 0.55, 0.10])
CAMPAIGN_DEVICE_INSTALMENT = 20.0  # per line and month: handsets financed with the bundle
CAMPAIGN_AGE_MIX = np.array([0.25, 0.35, 0.20, 0.12, 0.06, 0.02])

CAMPAIGN_CHANNEL = ACQUISITION_CHANNELS.index("campaign")
ELECTRONIC_CHECK = PAYMENT_METHODS.index("electronic_check")
MAILED_CHECK = PAYMENT_METHODS.index("mailed_check")
CREDIT_CARD = PAYMENT_METHODS.index("credit_card")
BANK_TRANSFER = PAYMENT_METHODS.index("bank_transfer")
BUSINESS = SEGMENTS.index("business")

TICKET_CATEGORY_MIX = np.array([0.30, 0.30, 0.15, 0.12, 0.13])
TICKET_PRIORITY_MIX = np.array([0.50, 0.35, 0.15])

__all__ = [
    "ACQUISITION_CHANNELS",
    "AGE_BANDS",
    "CHURN_REASONS",
    "CONTRACT_TYPES",
    "PAYMENT_METHODS",
    "PLAN_TYPES",
    "REGIONS",
    "SEGMENTS",
    "TICKET_CATEGORIES",
    "TICKET_PRIORITIES",
]
