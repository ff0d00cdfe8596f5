"""The hidden generative model: latent satisfaction, the behaviour it drives, and the churn hazard.

Every active customer carries a latent *dissatisfaction* ``d = mean_dissat + x`` where ``x`` follows
a weekly AR(1) process with occasional positive shocks (service incidents). ``d`` drives what the
warehouse sees (usage and app engagement decline, support tickets rise, payments slip) and, with
static drivers and an unobserved frailty, the weekly churn hazard::

    logit P(churn this week) = intercept
        + w_d(t) * d                                   # latent state (seen only through behaviour)
        + contract + tenure + payment method           # static drivers
        + price_ratio * log(revenue / list price)      # paying above the catalogue price
        + discount active / recently ended             # promotions
        + unpaid balance                               # slide towards involuntary churn
        + r * (shift_intercept - contract_buyout * contract
               + [not campaign] * (price_war * price_z + data_war * data_z))   # concept shift
        + frailty                                      # unobserved, N(0, frailty_sd)

``t`` enters only through the scenario's concept-shift ramp ``r`` in [0, 1] (0 in history):
``w_d = dissat * (1 - dissat_drop * r)``; ``price_z`` / ``data_z`` are the standardised log per-line
price and log typical weekly data use. See docs/simulation.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from churn_assets.simulation import catalog
from churn_assets.simulation.population import Customers

Array = np.ndarray


@dataclass(frozen=True)
class ChurnModel:
    """Coefficients of the hidden model (logit scale unless stated)."""

    intercept: float = -4.6
    dissat: float = 3.0  # weight of the latent dissatisfaction in the weekly hazard
    contract: tuple[float, float, float] = (0.0, -1.5, -3.0)  # month_to_month, one_year, two_year
    new_customer: float = 1.5  # extra hazard at tenure 0, decaying with tenure_decay_months
    tenure_decay_months: float = 8.0
    payment: tuple[float, float, float, float] = (0.0, -0.1, 0.7, 0.2)  # PAYMENT_METHODS order
    price_ratio: float = 2.5
    discount_active: float = -0.35
    discount_ended: float = 0.6  # within discount_ended_days after a promotion expired
    discount_ended_days: int = 90
    unpaid_balance: float = 0.9
    frailty_sd: float = 0.15
    # Latent state dynamics (weekly).
    rho: float = 0.97
    dissat_sd: float = 0.6  # stationary s.d. of the AR(1) deviation
    shock_prob: float = 0.008
    shock_mean: float = 0.8
    unresolved_ticket_shock: float = 0.3
    dissat_cap: float = 4.0  # |x| is clipped here, which bounds the ticket feedback loop
    # Behaviour driven by the latent state.
    usage_response: float = 1.0  # usage ~ exp(-usage_response * d)
    engagement_response: float = 2.0  # logins / sessions ~ exp(-engagement_response * d)
    ticket_rate: float = 0.035  # tickets per week at d = 0
    ticket_response: float = 1.5
    late_intercept: float = -2.6
    late_response: float = 1.0
    late_payment: tuple[float, float, float, float] = (-0.4, -0.6, 0.3, 0.4)
    # Concept shift (price war): the latent state matters less, the per-line price a lot more.
    dissat_drop: float = 0.4  # share of the latent state's weight lost at full shift
    contract_buyout: float = 0.4  # share of the contract protection lost at full shift
    price_war: float = 1.6
    data_war: float = 0.8
    data_war_ref: float = 3.0  # GB per week at which the data term is zero
    data_war_scale: float = 0.8  # s.d. of log weekly data use
    shift_intercept: float = -1.65  # keeps the overall churn level within ~25% of history's
    price_war_ref: float = 55.0  # per-line monthly price at which the price-war term is zero
    price_war_scale: float = 0.45  # s.d. of log per-line price used to standardise it

    def dissatisfaction(self, c: Customers, idx: Array) -> Array:
        return (c.mean_dissat[idx] + c.dissat[idx]).astype(np.float64)

    def step_latent(self, rng: np.random.Generator, c: Customers, idx: Array) -> None:
        """Advance the AR(1) deviation of the customers ``idx`` by one week (in place)."""
        n = idx.shape[0]
        innovation = rng.normal(0.0, self.dissat_sd * np.sqrt(1.0 - self.rho**2), n)
        shock = np.where(rng.random(n) < self.shock_prob, rng.exponential(self.shock_mean, n), 0.0)
        x = self.rho * c.dissat[idx] + innovation + shock
        c.dissat[idx] = np.clip(x, -self.dissat_cap, self.dissat_cap).astype(np.float32)

    def static_logit(self, c: Customers, idx: Array, day: int) -> Array:
        """Hazard terms that do not depend on the latent state or the scenario."""
        tenure_months = (day - c.signup_day[idx]) / 30.44
        z = (
            self.intercept
            + np.asarray(self.contract)[c.contract[idx]]
            + self.new_customer * np.exp(-tenure_months / self.tenure_decay_months)
            + np.asarray(self.payment)[c.payment[idx]]
            + self.price_ratio * np.log(c.revenue[idx] / c.list_price[idx])
            + c.frailty[idx]
        )
        disc = c.discount_rate[idx] > 0
        end = c.discount_end_day[idx]
        z += np.where(disc & (day < end), self.discount_active, 0.0)
        z += np.where(disc & (day >= end) & (day < end + self.discount_ended_days), self.discount_ended, 0.0)
        return z

    def price_z(self, c: Customers, idx: Array) -> Array:
        per_line = c.revenue[idx] / c.lines[idx]
        return np.log(per_line / self.price_war_ref) / self.price_war_scale

    def data_z(self, c: Customers, idx: Array) -> Array:
        """Standardised log of a customer's typical weekly data use."""
        return np.log(c.base_data[idx] / self.data_war_ref) / self.data_war_scale

    def weekly_logit(self, c: Customers, idx: Array, day: int, shift: float) -> Array:
        """Logit of the probability that each customer in ``idx`` cancels in the week starting ``day``."""
        w_d = self.dissat * (1.0 - self.dissat_drop * shift)
        z = self.static_logit(c, idx, day) + w_d * self.dissatisfaction(c, idx)
        z += np.where(c.balance[idx] > 0, self.unpaid_balance, 0.0)
        if shift > 0:
            # Competitor buys out contracts and targets expensive lines and heavy data users.
            z -= self.contract_buyout * shift * np.asarray(self.contract)[c.contract[idx]]
            # Campaign customers signed on tariffs that already match the competitor's.
            exposed = c.channel[idx] != catalog.CAMPAIGN_CHANNEL
            war = self.price_war * self.price_z(c, idx) + self.data_war * self.data_z(c, idx)
            z += shift * (self.shift_intercept + np.where(exposed, war, 0.0))
        return z

    def late_probability(self, c: Customers, idx: Array) -> Array:
        z = (
            self.late_intercept
            + self.late_response * self.dissatisfaction(c, idx)
            + c.fin_stress[idx]
            + np.asarray(self.late_payment)[c.payment[idx]]
        )
        return 1.0 / (1.0 + np.exp(-z))

    def churn_reasons(self, rng: np.random.Generator, c: Customers, idx: Array, shift: float) -> Array:
        """Stated cancellation reason (index into CHURN_REASONS) of the churners ``idx``."""
        n = idx.shape[0]
        price = 0.25 + 2.0 * np.maximum(np.log(c.revenue[idx] / c.list_price[idx]), 0.0)
        service = 0.2 + np.maximum(self.dissatisfaction(c, idx), 0.0)
        competitor = 0.15 + 1.5 * shift * np.maximum(self.price_z(c, idx), 0.0)
        moved = np.full(n, 0.12)
        other = np.full(n, 0.10)
        probs = np.stack([price, service, competitor, moved, other], axis=1)
        cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
        out = (rng.random((n, 1)) > cdf).sum(axis=1)
        return np.minimum(out, len(catalog.CHURN_REASONS) - 1).astype(np.int8)

    def survival_weight(self, c: Customers, start_day: int) -> Array:
        """Approximate probability that a customer signed up before ``start_day`` is still active.

        Used once, to draw an initial base whose mix (tenure, contract, frailty...) is the steady
        state of the hazard rather than the raw acquisition mix. Uses ``sigmoid(z) ~ exp(z)`` and the
        latent state at its mean.
        """
        idx = np.arange(len(c))
        weeks = np.maximum((start_day - c.signup_day) // 7, 0)
        max_weeks = int(weeks.max()) + 1
        k = np.arange(max_weeks)
        # Sum over the weeks of tenure of exp(new-customer term); static part excluding tenure.
        g = np.concatenate(
            [[0.0], np.cumsum(np.exp(self.new_customer * np.exp(-k * 7 / 30.44 / self.tenure_decay_months)))]
        )
        base = self.static_logit(c, idx, start_day) - self.new_customer * np.exp(
            -(start_day - c.signup_day) / 30.44 / self.tenure_decay_months
        )
        base = base + 0.5 * (self.dissat * self.dissat_sd) ** 2  # E[exp(w_d * x)] for Gaussian x
        base = base + self.dissat * c.mean_dissat
        return np.exp(-np.exp(base) * g[weeks])
