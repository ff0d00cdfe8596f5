"""The simulated telecom world: its state, the weekly step, persistence and the public entry points.

A :class:`World` owns the customer arrays, the random generator and the counters. Each simulated
week it (1) signs up new customers, (2) advances every active customer's latent state, (3) draws
cancellations from the hidden hazard, (4) generates that week's usage, engagement, support tickets
and monthly statements, (5) reports the cancellations of ``label_delay_weeks`` ago, and writes the
six raw tables of the landing week. Everything is vectorised over the active customers; the only
Python loop is over weeks. Pickling the world (including the generator state) lets a later process
continue exactly where this one stopped.
"""

from __future__ import annotations

import datetime as dt
import pickle
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from churn_assets.settings import Settings, SimulationSettings
from churn_assets.simulation import catalog
from churn_assets.simulation.churn_model import ChurnModel
from churn_assets.simulation.landing import categorical, empty_table, to_table, write_table
from churn_assets.simulation.population import Customers, day_of_month, draw_customers
from churn_assets.simulation.scenario import Scenario
from churn_assets.timeline import Timeline
from data_contracts.raw_tables import RAW_TABLES

Progress = Callable[[int, int], None]
EPOCH = dt.date(1970, 1, 1)
US_PER_DAY = 86_400_000_000
STATE_VERSION = 2  # 2: retention offers (``offers``)


def to_day(day: dt.date) -> int:
    return (day - EPOCH).days


@dataclass
class World:
    """The whole simulation state; ``week`` is the index of the next week to simulate."""

    settings: SimulationSettings
    model: ChurnModel
    scenario: Scenario
    timeline: Timeline
    customers: Customers
    rng: np.random.Generator
    week: int = 0
    next_invoice_id: int = 1
    next_ticket_id: int = 1
    expected_churn: float = 0.0  # churn-replacement signups for the next week
    baseline_signups: float = 0.0  # weekly signups at the end of history (campaign reference)
    # Retention offers: customer_id -> index of the last week the offer lowers the churn hazard.
    offers: dict[int, int] = field(default_factory=dict)
    version: int = STATE_VERSION

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, sim: SimulationSettings, model: ChurnModel | None = None) -> World:
        """A world at ``sim.start_date`` with an initial base of ``sim.n_customers`` customers.

        Signup dates of the base spread over ``initial_tenure_years``; candidates are kept with
        their survival probability under the hazard, so the base has a steady-state mix.
        """
        model = model or ChurnModel()
        rng = np.random.default_rng(sim.seed)
        timeline = Timeline.from_settings(sim)
        start = to_day(sim.start_date)
        span = int(sim.initial_tenure_years * 365.25)
        kept: list[Customers] = []
        n_kept = 0
        while n_kept < sim.n_customers:
            n_pool = max(3 * (sim.n_customers - n_kept), 1_000)
            signup = start - rng.integers(1, span + 1, n_pool)
            pool = _draw(rng, model, signup, np.zeros(n_pool, bool))
            keep = np.flatnonzero(rng.random(n_pool) < model.survival_weight(pool, start))
            kept.append(pool.take(keep))
            n_kept += keep.shape[0]
        base = kept[0]
        for extra in kept[1:]:
            base.extend(extra)
        base = base.take(np.arange(sim.n_customers))
        base = base.take(np.argsort(base.signup_day, kind="stable"))  # older customers, smaller ids
        # The base has been billed before: give it a previous statement to report on.
        base.last_invoice = np.round(base.revenue * (1.0 - base.discount_rate), 2)
        return cls(sim, model, Scenario.from_settings(sim), timeline, base, rng)

    @property
    def current_date(self) -> dt.date:
        """Exclusive end of simulated time (the Monday of the next week to simulate)."""
        return self.timeline.week_start(self.week)

    @property
    def history_done(self) -> bool:
        return self.week >= self.timeline.history_weeks

    # ------------------------------------------------------------------ running
    def simulate_history(self, landing_dir: Path | str, progress: Progress | None = None) -> list[str]:
        """Simulate and land every history week; returns the week keys written."""
        if self.week != 0:
            raise RuntimeError(f"history already simulated (world is at {self.current_date})")
        return self._run(self.timeline.history_weeks, Path(landing_dir), progress)

    def advance(self, weeks: int, landing_dir: Path | str, progress: Progress | None = None) -> list[str]:
        """Simulate and land ``weeks`` more production weeks; returns the week keys written."""
        if not self.history_done:
            raise RuntimeError("simulate the history before advancing into production")
        if weeks < 0:
            raise ValueError("weeks must be >= 0")
        return self._run(weeks, Path(landing_dir), progress)

    def _run(self, weeks: int, landing_dir: Path, progress: Progress | None) -> list[str]:
        """Simulate ``weeks`` weeks; each week's files are written by a background thread while the
        next week is simulated (Arrow/Parquet release the GIL), at most one week behind."""
        keys: list[str] = []
        with ThreadPoolExecutor(max_workers=1) as writer:
            pending: Future[None] | None = None
            for i in range(weeks):
                key, tables = self.step()
                if pending is not None:
                    pending.result()
                    if progress is not None:
                        progress(i, weeks)
                pending = writer.submit(_write_week, landing_dir, key, tables)
                keys.append(key)
            if pending is not None:
                pending.result()
                if progress is not None:
                    progress(weeks, weeks)
        return keys

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(self, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | str) -> World:
        with Path(path).open("rb") as fh:
            world = pickle.load(fh)
        if not isinstance(world, cls) or world.version != STATE_VERSION:
            raise TypeError(f"{path} does not hold a churnops world (state version {STATE_VERSION})")
        return world

    def send_offers(self, customer_ids: Iterable[int]) -> int:
        """A retention offer to each customer (the business acting on a model's churn flags): for the next
        ``settings.retention_offer_weeks`` simulated weeks their weekly churn probability is multiplied by
        ``1 - settings.retention_offer_uplift``. Returns how many customers got one."""
        last = self.week + self.settings.retention_offer_weeks - 1
        n = 0
        for cid in customer_ids:
            self.offers[int(cid)] = last
            n += 1
        return n

    # ------------------------------------------------------------------ one week
    def step(self) -> tuple[str, dict[str, pa.Table]]:
        """Simulate the next week; returns its key and the six raw tables that land in it."""
        rng, c, m = self.rng, self.customers, self.model
        w = self.week
        monday = self.timeline.week_start(w)
        day0 = to_day(monday)
        pweek = self.timeline.production_week(monday)
        shift = self.scenario.shift(pweek)

        # 1. Signups (the initial base lands in week 0).
        if w == 0:
            new = np.arange(len(c))
        else:
            multiplier, share = self.scenario.signups(pweek)
            # Regular acquisition replaces churn; a campaign multiplies the history's volume.
            lam = self.baseline_signups * multiplier if share > 0 else self.expected_churn
            n_new = int(rng.poisson(lam))
            campaign = np.zeros(n_new, bool)
            campaign[: int(rng.binomial(n_new, share))] = True
            signup = day0 + rng.integers(0, 7, n_new)
            first = len(c)
            c.extend(_draw(rng, m, signup, campaign))
            new = np.arange(first, len(c))

        # 2. Latent state, 3. churn.
        act = np.flatnonzero(c.active)
        m.step_latent(rng, c, act)
        p = 1.0 / (1.0 + np.exp(-m.weekly_logit(c, act, day0, shift)))
        self.offers = {cid: last for cid, last in self.offers.items() if last >= w}
        if self.offers and self.settings.retention_offer_uplift > 0:
            offered = np.isin(act + 1, np.fromiter(self.offers, dtype=np.int64))
            p = np.where(offered, p * (1.0 - self.settings.retention_offer_uplift), p)
        self.expected_churn = float(p.sum())
        if pweek is None:  # running mean of weekly churn over the last ~13 history weeks
            self.baseline_signups += (self.expected_churn - self.baseline_signups) / min(w + 1, 13)
        churn = rng.random(act.shape[0]) < p
        start = np.maximum(c.signup_day[act], day0)
        cancel = start + np.floor(rng.random(act.shape[0]) * (day0 + 7 - start)).astype(np.int32)
        end = np.where(churn, cancel + 1, day0 + 7)
        frac = (end - start) / 7.0
        churners = act[churn]
        c.active[churners] = False
        c.cancel_day[churners] = cancel[churn]
        c.report_week[churners] = w + self.settings.label_delay_weeks
        c.reason[churners] = m.churn_reasons(rng, c, churners, shift)
        c.voluntary[churners] = ~((c.balance[churners] > 0) & (rng.random(churners.shape[0]) < 0.6))

        d = m.dissatisfaction(c, act)
        tables: dict[str, pa.Table] = {}
        tables["usage"], data_gb = self._usage(act, d, frac, day0)
        tables["engagement"] = self._engagement(act, d, frac, day0)
        tables["support_tickets"] = self._tickets(act, d, frac, start, end, day0)
        c.data_since_invoice[act] += data_gb.astype(np.float32)
        tables["billing"] = self._billing(act, churn, cancel, day0)
        tables["churn_events"] = self._churn_events(w, day0)
        tables["accounts"] = self._accounts(new, day0)
        self.week += 1
        return monday.isoformat(), {t: tables[t] for t in RAW_TABLES}

    def _usage(
        self, act: np.ndarray, d: np.ndarray, frac: np.ndarray, day0: int
    ) -> tuple[pa.Table, np.ndarray]:
        rng, c, n = self.rng, self.customers, act.shape[0]
        level = np.exp(-self.model.usage_response * d) * frac
        calls = np.minimum(rng.poisson(c.base_calls[act] * level * rng.lognormal(0, 0.25, n)), 5_000)
        minutes = np.where(calls > 0, calls * c.minutes_per_call[act] * rng.lognormal(0, 0.2, n), 0.0)
        data_gb = np.round(c.base_data[act] * level * rng.lognormal(0, 0.3, n), 3)
        sms = np.minimum(rng.poisson(c.base_sms[act] * level * rng.lognormal(0, 0.3, n)), 10_000)
        cols = {
            "week_start": np.full(n, day0),
            "customer_id": act + 1,
            "calls": calls.astype(np.int64),
            "call_minutes": np.minimum(np.round(minutes, 2), 10_080.0),
            "data_gb": np.minimum(data_gb, 5_000.0),
            "sms": sms.astype(np.int64),
        }
        return to_table("usage", cols, n), data_gb

    def _engagement(self, act: np.ndarray, d: np.ndarray, frac: np.ndarray, day0: int) -> pa.Table:
        rng, c, n = self.rng, self.customers, act.shape[0]
        rate = c.base_logins[act] * np.exp(-self.model.engagement_response * d) * rng.lognormal(0, 0.3, n)
        days = np.maximum(np.round(frac * 7).astype(np.int64), 1)
        active_days = rng.binomial(days, 1.0 - np.exp(-rate / 7.0 * 1.3))
        sessions = np.minimum(active_days + rng.poisson(rate * 0.6 * frac), 2_000)
        logins = np.minimum(rng.poisson(rate * frac), 1_000)
        app_minutes = np.minimum(np.round(sessions * rng.gamma(2.0, 3.5, n), 1), 10_080.0)
        p_feat = np.clip(c.adoption[act] * np.exp(-0.3 * d), 0.0, 1.0)
        features = np.where(sessions > 0, np.maximum(rng.binomial(20, p_feat), 1), 0)
        cols = {
            "week_start": np.full(n, day0),
            "customer_id": act + 1,
            "logins": logins.astype(np.int64),
            "sessions": sessions.astype(np.int64),
            "app_minutes": app_minutes,
            "active_days": active_days.astype(np.int64),
            "features_used": np.minimum(features, 20).astype(np.int64),
        }
        return to_table("engagement", cols, n)

    def _tickets(
        self, act: np.ndarray, d: np.ndarray, frac: np.ndarray, start: np.ndarray, end: np.ndarray, day0: int
    ) -> pa.Table:
        rng, c, m = self.rng, self.customers, self.model
        lines = c.lines[act].astype(np.float64)
        lam = m.ticket_rate * np.exp(m.ticket_response * d) * (1.0 + 0.1 * (lines - 1.0)) * frac
        counts = rng.poisson(lam)
        rows = np.repeat(np.arange(act.shape[0]), counts)
        n = rows.shape[0]
        who = act[rows]
        opened_day = start[rows] + np.floor(rng.random(n) * (end[rows] - start[rows])).astype(np.int64)
        opened_at = (
            opened_day.astype(np.int64) * US_PER_DAY + rng.integers(8 * 3600, 22 * 3600, n) * 1_000_000
        )
        dr = d[rows]
        unresolved = rng.random(n) < 1.0 / (1.0 + np.exp(-(-3.2 + 0.8 * dr)))
        hours = np.minimum(np.round(rng.lognormal(np.log(18.0) + 0.3 * dr, 0.9, n), 1), 24 * 90.0)
        rated = ~unresolved & (rng.random(n) < 0.55)
        score = np.clip(np.round(4.1 - 0.9 * dr - 0.004 * hours + rng.normal(0, 0.8, n)), 1, 5)
        c.dissat[who[unresolved]] += np.float32(m.unresolved_ticket_shock)  # once per customer-week
        ids = np.arange(self.next_ticket_id, self.next_ticket_id + n, dtype=np.int64)
        self.next_ticket_id += n
        if n == 0:
            return empty_table("support_tickets")
        cols = {
            "week_start": np.full(n, day0),
            "ticket_id": ids,
            "customer_id": who + 1,
            "opened_at": opened_at,
            "category": categorical(_pick(rng, catalog.TICKET_CATEGORY_MIX, n), catalog.TICKET_CATEGORIES),
            "priority": categorical(_pick(rng, catalog.TICKET_PRIORITY_MIX, n), catalog.TICKET_PRIORITIES),
            "resolution_hours": pa.array(hours, pa.float64(), mask=unresolved),
            "satisfaction": pa.array(score.astype(np.int64), pa.int64(), mask=~rated),
        }
        return to_table("support_tickets", cols, n)

    def _billing(self, act: np.ndarray, churn: np.ndarray, cancel: np.ndarray, day0: int) -> pa.Table:
        """Monthly statements on each customer's billing day falling in this week."""
        rng, c = self.rng, self.customers
        offset_of_dom = np.full(32, -1, np.int64)
        offset_of_dom[day_of_month(np.arange(day0, day0 + 7))] = np.arange(7)
        off = offset_of_dom[c.anchor_dom[act]]
        bill_day = day0 + off
        due = (off >= 0) & (bill_day >= c.signup_day[act]) & (~churn | (bill_day < cancel))
        billed, bill_day = act[due], bill_day[due]
        n = billed.shape[0]
        revenue = c.revenue[billed]
        discount = np.where(
            bill_day < c.discount_end_day[billed], np.round(revenue * c.discount_rate[billed], 2), 0.0
        )
        allowance = catalog.PLAN_ALLOWANCE_GB[c.plan[billed]] * c.lines[billed]
        excess = np.maximum(c.data_since_invoice[billed] - allowance, 0.0)
        overage = np.minimum(
            np.round(np.where(np.isfinite(excess), excess, 0.0) * catalog.OVERAGE_PRICE_PER_GB, 2), 5_000.0
        )
        amount = np.minimum(np.round(revenue - discount + overage + c.instalment[billed], 2), 5_000.0)
        has_prev = c.last_invoice[billed] > 0
        late = has_prev & (rng.random(n) < self.model.late_probability(c, billed))
        days_late = np.where(late, np.minimum(1 + rng.geometric(0.12, n), 120), 0)
        carried = late & (days_late > 20)
        balance = np.where(carried, np.round(c.last_invoice[billed] * rng.uniform(0.5, 1.0, n), 2), 0.0)
        c.balance[billed] = balance
        c.last_invoice[billed] = amount
        c.data_since_invoice[billed] = 0.0
        ids = np.arange(self.next_invoice_id, self.next_invoice_id + n, dtype=np.int64)
        self.next_invoice_id += n
        cols = {
            "week_start": np.full(n, day0),
            "invoice_id": ids,
            "customer_id": billed + 1,
            "invoice_date": bill_day,
            "due_date": bill_day + catalog.PAYMENT_TERMS_DAYS,
            "invoice_amount": amount,
            "discount_amount": discount,
            "overage_amount": overage,
            "balance_forward": np.minimum(balance, 20_000.0),
            "previous_paid_late": late,
            "previous_days_late": days_late.astype(np.int64),
        }
        return to_table("billing", cols, n)

    def _churn_events(self, w: int, day0: int) -> pa.Table:
        c = self.customers
        rep = np.flatnonzero(c.report_week == w)
        n = rep.shape[0]
        cols = {
            "week_start": np.full(n, day0),
            "customer_id": rep + 1,
            "signup_date": c.signup_day[rep],
            "cancellation_date": c.cancel_day[rep],
            "reason": categorical(c.reason[rep], catalog.CHURN_REASONS),
            "voluntary": c.voluntary[rep],
        }
        return to_table("churn_events", cols, n)

    def _accounts(self, new: np.ndarray, day0: int) -> pa.Table:
        c, n = self.customers, new.shape[0]
        cols = {
            "week_start": np.full(n, day0),
            "customer_id": new + 1,
            "signup_date": c.signup_day[new],
            "plan_type": categorical(c.plan[new], catalog.PLAN_TYPES),
            "contract_type": categorical(c.contract[new], catalog.CONTRACT_TYPES),
            "payment_method": categorical(c.payment[new], catalog.PAYMENT_METHODS),
            "acquisition_channel": categorical(c.channel[new], catalog.ACQUISITION_CHANNELS),
            "region": categorical(c.region[new], catalog.REGIONS),
            "segment": categorical(c.segment[new], catalog.SEGMENTS),
            "age_band": categorical(c.age_band[new], catalog.AGE_BANDS),
            "num_lines": c.lines[new].astype(np.int64),
            "monthly_revenue": c.revenue[new],
            "paperless_billing": c.paperless[new],
        }
        return to_table("accounts", cols, n)


def _write_week(landing_dir: Path, key: str, tables: dict[str, pa.Table]) -> None:
    for table, data in tables.items():
        write_table(landing_dir, table, key, data)


def _draw(rng: np.random.Generator, model: ChurnModel, signup: np.ndarray, campaign: np.ndarray) -> Customers:
    batch = draw_customers(rng, signup, campaign, model.dissat_sd)
    batch.frailty = rng.normal(0.0, model.frailty_sd, len(batch)).astype(np.float32)
    return batch


def _pick(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    cdf = np.cumsum(probs / probs.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(probs) - 1)


# ---------------------------------------------------------------------- settings-level entry points
def simulate_history(
    settings: Settings, overwrite: bool = False, progress: Progress | None = None
) -> list[str]:
    """Create the world of ``settings``, land its history in ``settings.landing_dir`` and save it.

    Refuses to replace an existing world unless ``overwrite``; then the old landing files go too.
    """
    state = settings.world_state_path
    if state.exists():
        if not overwrite:
            raise FileExistsError(f"a simulated world already exists at {state}; pass overwrite=True")
        state.unlink()
        for table in RAW_TABLES:
            shutil.rmtree(settings.landing_dir / table, ignore_errors=True)
    world = World.create(settings.simulation)
    keys = world.simulate_history(settings.landing_dir, progress)
    world.save(state)
    return keys


def advance(settings: Settings, weeks: int, progress: Progress | None = None) -> list[str]:
    """Load the saved world, land ``weeks`` more production weeks, save it again."""
    world = World.load(settings.world_state_path)
    keys = world.advance(weeks, settings.landing_dir, progress)
    world.save(settings.world_state_path)
    return keys
