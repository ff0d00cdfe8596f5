"""Small synthetic churn data and isolated settings for the modeling tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from churn_assets.settings import ModelingSettings, Settings

# The IBM Telco sample, kept inside the repository with its provenance (tests/resources/telco/README.md).
TELCO_CSV = Path(__file__).resolve().parent / "resources" / "telco" / "telco_customer_churn.csv"


def synthetic_churn(
    n: int = 1200, seed: int = 0, periods: int = 18
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """``(X, y, period)``: numeric + categorical features with a known logistic signal, ~25 % churn.

    Columns: tenure (months), monthly_charges, support_tickets, contract (category), segment
    (category), period (1..``periods``, NOT in X).
    """
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, n)
    charges = rng.normal(70, 25, n).clip(10, 150)
    tickets = rng.poisson(1.0, n)
    contract = rng.choice(["monthly", "one_year", "two_year"], n, p=[0.5, 0.3, 0.2])
    segment = rng.choice(["consumer", "business"], n, p=[0.7, 0.3])
    logit = (
        -1.2 - 0.04 * tenure + 0.015 * charges + 0.5 * tickets + np.where(contract == "monthly", 1.2, -0.5)
    )
    y = pd.Series((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int), name="churned")
    X = pd.DataFrame(
        {
            "tenure": tenure,
            "monthly_charges": charges,
            "support_tickets": tickets,
            "contract": pd.Categorical(contract),
            "segment": pd.Categorical(segment),
        }
    )
    period = pd.Series(rng.integers(1, periods + 1, n), name="period")
    return X, y, period


def modeling_settings(home: Path, **modeling: object) -> Settings:
    """Settings with all state under ``home`` and the given ``modeling`` overrides."""
    return Settings(home=home, modeling=ModelingSettings(**modeling))  # type: ignore[arg-type]
