"""Customers of the simulated world as a struct of numpy arrays, and how new ones are drawn.

Row ``i`` of every array is the customer with ``customer_id = i + 1``. Static attributes are drawn
once at signup; the dynamic state (latent dissatisfaction, billing accumulators, churn status) is
updated by :mod:`churn_assets.simulation.world` each simulated week. Dates are integer days since
1970-01-01 (the Arrow ``date32`` encoding).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from churn_assets.simulation import catalog

Array = np.ndarray


@dataclass
class Customers:
    """Every customer ever created (active or churned), one entry per array position."""

    # Static attributes (the accounts contract plus hidden traits).
    signup_day: Array  # int32, days since epoch
    plan: Array  # int8 index into PLAN_TYPES
    contract: Array  # int8 index into CONTRACT_TYPES
    payment: Array  # int8 index into PAYMENT_METHODS
    channel: Array  # int8 index into ACQUISITION_CHANNELS
    region: Array  # int8 index into REGIONS
    segment: Array  # int8 index into SEGMENTS
    age_band: Array  # int8 index into AGE_BANDS
    lines: Array  # int16, lines on the account
    revenue: Array  # float64, monthly revenue (list price x lines with individual noise)
    list_price: Array  # float64, catalogue price x lines
    paperless: Array  # bool
    discount_rate: Array  # float32, promotional discount share of the bill
    discount_end_day: Array  # int32, day the promotion ends
    instalment: Array  # float64, monthly device-financing charge on the invoice (campaign bundles)
    anchor_dom: Array  # int8, billing day of month (1..28)
    base_calls: Array  # float32, typical calls per week
    minutes_per_call: Array  # float32
    base_data: Array  # float32, typical GB per week
    base_sms: Array  # float32, typical SMS per week
    base_logins: Array  # float32, typical logins per week
    adoption: Array  # float32, share of product features a customer tends to use
    frailty: Array  # float32, unobserved churn propensity (logit scale)
    fin_stress: Array  # float32, unobserved propensity to pay late (logit scale)
    mean_dissat: Array  # float32, long-run mean of the latent dissatisfaction
    # Dynamic state.
    dissat: Array  # float32, AR(1) deviation of the latent dissatisfaction
    active: Array  # bool, has not cancelled
    cancel_day: Array  # int32, -1 while active
    report_week: Array  # int32, simulation week whose landing carries the churn event, -1 = none
    reason: Array  # int8 index into CHURN_REASONS
    voluntary: Array  # bool
    data_since_invoice: Array  # float32, GB used since the last statement
    last_invoice: Array  # float64, amount of the last statement, 0 = none yet
    balance: Array  # float64, unpaid amount carried to the next statement
    late_flag: Array  # bool, the last statement was paid late (seen on the next one)
    days_late: Array  # int16, delay of that payment

    def __len__(self) -> int:
        return int(self.signup_day.shape[0])

    def take(self, idx: Array) -> Customers:
        """A new table holding the customers at positions ``idx``, in that order."""
        return Customers(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def extend(self, other: Customers) -> None:
        """Append ``other`` (newly drawn customers) to every array."""
        for f in fields(self):
            setattr(self, f.name, np.concatenate([getattr(self, f.name), getattr(other, f.name)]))


def day_of_month(days: Array) -> Array:
    """Day of month (1..31) of integer days since epoch."""
    d = days.astype("datetime64[D]")
    return (d - d.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1


def _choice(rng: np.random.Generator, probs: Array, n: int) -> Array:
    """``n`` draws of category codes with probabilities ``probs`` (vectorised inverse CDF)."""
    cdf = np.cumsum(probs / probs.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(probs) - 1).astype(np.int8)


def _rows_choice(rng: np.random.Generator, probs: Array) -> Array:
    """One category code per row of the probability matrix ``probs`` (n x k)."""
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    u = rng.random((probs.shape[0], 1))
    return np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1).astype(np.int8)


def draw_customers(
    rng: np.random.Generator, signup_day: Array, campaign: Array, dissat_sd: float
) -> Customers:
    """Draw new customers signed up on ``signup_day``; ``campaign`` marks the campaign profile.

    Correlations: business accounts have more lines and longer contracts; young customers use the
    app more, pay by card and go paperless; older ones pay by mailed check; electronic-check payers
    are more often financially stressed; campaign customers take premium/unlimited family bundles
    month-to-month with heavy data use.
    """
    n = int(signup_day.shape[0])
    camp = campaign.astype(bool)
    segment = (rng.random(n) < catalog.BUSINESS_SHARE).astype(np.int8)
    segment[camp] = 0
    business = segment == catalog.BUSINESS

    age = _choice(rng, catalog.AGE_MIX, n)
    age[camp] = _choice(rng, catalog.CAMPAIGN_AGE_MIX, int(camp.sum()))

    plan = _choice(rng, catalog.PLAN_MIX, n)
    plan[camp] = _choice(rng, catalog.CAMPAIGN_PLAN_MIX, int(camp.sum()))

    contract_probs = np.where(business[:, None], catalog.CONTRACT_MIX_BUSINESS, catalog.CONTRACT_MIX_CONSUMER)
    contract_probs[camp] = catalog.CAMPAIGN_CONTRACT_MIX
    contract = _rows_choice(rng, contract_probs)

    # Payment method depends on age: young -> cards, old -> mailed checks.
    age_f = age.astype(np.float64) / (len(catalog.AGE_BANDS) - 1)
    pay_probs = np.tile(catalog.PAYMENT_MIX, (n, 1))
    pay_probs[:, catalog.CREDIT_CARD] *= 1.4 - 0.6 * age_f
    pay_probs[:, catalog.MAILED_CHECK] *= 0.3 + 2.5 * age_f
    pay_probs[business, catalog.BANK_TRANSFER] *= 2.5
    payment = _rows_choice(rng, pay_probs)

    channel = _choice(rng, catalog.CHANNEL_MIX, n)
    channel[camp] = catalog.CAMPAIGN_CHANNEL
    region = _choice(rng, catalog.REGION_MIX, n)

    lines = np.where(business, 1 + rng.poisson(3.5, n), 1 + rng.poisson(0.6, n))
    lines[camp] = 3 + rng.poisson(1.5, int(camp.sum()))  # family bundles
    lines = np.minimum(lines, catalog.MAX_LINES).astype(np.int16)

    list_price = catalog.PLAN_PRICE[plan] * lines
    revenue = np.minimum(
        np.round(list_price * np.exp(rng.normal(0.0, 0.10, n)), 2), catalog.MAX_MONTHLY_REVENUE
    )
    paperless = rng.random(n) < np.clip(0.85 - 0.12 * age + 0.1 * (channel == 0), 0.05, 0.95)

    # Introductory discounts for a share of customers, lasting 6-24 months.
    has_disc = rng.random(n) < np.where(camp, 0.0, 0.25)
    discount_rate = np.where(has_disc, rng.choice(np.array([0.10, 0.15, 0.20, 0.25]), n), 0.0)
    discount_end = signup_day + rng.integers(6, 25, n) * 30

    anchor = np.minimum(day_of_month(signup_day), 28)  # statements on the signup day of month

    lines_f = lines.astype(np.float64)
    young = 1.3 - 0.12 * age
    base_calls = 14.0 * np.sqrt(lines_f) * np.exp(rng.normal(0, 0.45, n)) * (0.8 + 0.08 * age)
    minutes_per_call = 3.2 * np.exp(rng.normal(0, 0.3, n))
    base_data = catalog.PLAN_DATA_GB_WEEK[plan] * lines_f**0.7 * young * np.exp(rng.normal(0, 0.5, n))
    base_data[camp] *= 2.5  # heavy streamers: premium overage
    base_sms = 12.0 * young * np.exp(rng.normal(0, 0.7, n))
    base_logins = 2.2 * young * np.exp(rng.normal(0, 0.6, n)) * (1.0 + 0.4 * paperless)
    adoption = np.clip(rng.beta(2.0, 5.0, n) * (0.8 + 0.3 * young), 0.02, 0.95)

    fin_stress = rng.normal(0.0, 0.8, n) + 0.6 * (payment == catalog.ELECTRONIC_CHECK) - 0.3 * business
    mean_dissat = rng.normal(0.0, 0.35, n) + 0.15 * (region == 1)
    return Customers(
        signup_day=signup_day.astype(np.int32),
        plan=plan,
        contract=contract,
        payment=payment,
        channel=channel,
        region=region,
        segment=segment,
        age_band=age,
        lines=lines,
        revenue=revenue.astype(np.float64),
        list_price=list_price.astype(np.float64),
        paperless=paperless,
        discount_rate=discount_rate.astype(np.float32),
        discount_end_day=discount_end.astype(np.int32),
        instalment=np.where(camp, catalog.CAMPAIGN_DEVICE_INSTALMENT * lines, 0.0),
        anchor_dom=anchor.astype(np.int8),
        base_calls=base_calls.astype(np.float32),
        minutes_per_call=minutes_per_call.astype(np.float32),
        base_data=base_data.astype(np.float32),
        base_sms=base_sms.astype(np.float32),
        base_logins=base_logins.astype(np.float32),
        adoption=adoption.astype(np.float32),
        frailty=np.zeros(n, np.float32),  # set by the churn model
        fin_stress=fin_stress.astype(np.float32),
        mean_dissat=mean_dissat.astype(np.float32),
        dissat=rng.normal(0.0, dissat_sd, n).astype(np.float32),
        active=np.ones(n, bool),
        cancel_day=np.full(n, -1, np.int32),
        report_week=np.full(n, -1, np.int32),
        reason=np.zeros(n, np.int8),
        voluntary=np.ones(n, bool),
        data_since_invoice=np.zeros(n, np.float32),
        last_invoice=np.zeros(n, np.float64),
        balance=np.zeros(n, np.float64),
        late_flag=np.zeros(n, bool),
        days_late=np.zeros(n, np.int16),
    )
