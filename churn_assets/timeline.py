"""The simulated calendar: weeks, partitions and feature-snapshot (as-of) dates.

One scheme serves history and production alike (see docs/architecture.md, "Partitions"):

* Every raw table is partitioned by **landing week**: the Monday (ISO date string, e.g.
  ``"2024-01-01"``) of the week in which rows reached the warehouse. History is a run of such
  weeks, and each simulated production week appends one more.
* Feature snapshots are taken **as of a Monday** ``T`` and use only rows that landed in weeks
  ending on or before ``T``. During history a snapshot is taken on the first Monday of each month
  (``history_months`` of them, each with a complete 90-day label window inside history); in
  production on every Monday, because monitoring and scoring are weekly.
* The feature partition for week ``W`` holds the snapshot as of ``W + 7 days`` when that date is
  a snapshot date, and is empty otherwise.

Raw history = ``lookback_weeks`` (so the first snapshot has a full 90-day lookback) + the snapshot
months + the label horizon after the last monthly snapshot + the churn-report delay (101 weeks by
default, 2023-10-02 .. 2025-09-08 exclusive).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property

WEEK = dt.timedelta(days=7)


def first_monday_of_month(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(7 - first.weekday()) % 7)


def week_key(day: dt.date) -> str:
    """Partition key of the week (Monday) containing ``day``."""
    return (day - dt.timedelta(days=day.weekday())).isoformat()


@dataclass(frozen=True)
class Timeline:
    start_date: dt.date
    lookback_weeks: int = 13
    history_months: int = 18
    label_horizon_days: int = 90
    label_delay_weeks: int = 1

    @classmethod
    def from_settings(cls, sim: object) -> Timeline:
        return cls(
            start_date=sim.start_date,  # type: ignore[attr-defined]
            lookback_weeks=sim.lookback_weeks,  # type: ignore[attr-defined]
            history_months=sim.history_months,  # type: ignore[attr-defined]
            label_horizon_days=sim.label_horizon_days,  # type: ignore[attr-defined]
            label_delay_weeks=sim.label_delay_weeks,  # type: ignore[attr-defined]
        )

    @cached_property
    def monthly_snapshots(self) -> tuple[dt.date, ...]:
        """First Monday of each snapshot month, starting after the lookback weeks."""
        earliest = self.start_date + self.lookback_weeks * WEEK
        year, month = earliest.year, earliest.month
        if first_monday_of_month(year, month) < earliest:
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        out = []
        for _ in range(self.history_months):
            out.append(first_monday_of_month(year, month))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return tuple(out)

    @cached_property
    def history_end(self) -> dt.date:
        """Exclusive end of history = start of production week 1 (a Monday).

        The last monthly snapshot's label window must be complete inside history: every
        cancellation in it has to be *reported*, ``label_delay_weeks`` after its week.
        """
        horizon_end = self.monthly_snapshots[-1] + dt.timedelta(days=self.label_horizon_days)
        week_after = horizon_end + dt.timedelta(days=(7 - horizon_end.weekday()) % 7)
        return week_after + self.label_delay_weeks * WEEK

    @property
    def history_weeks(self) -> int:
        return (self.history_end - self.start_date).days // 7

    def week_start(self, index: int) -> dt.date:
        """Monday of the 0-based simulation week ``index`` (history and production together)."""
        return self.start_date + index * WEEK

    def week_index(self, day: dt.date) -> int:
        return (day - self.start_date).days // 7

    def production_week(self, day: dt.date) -> int | None:
        """1-based production week number of the week containing ``day``; None in history."""
        if day < self.history_end:
            return None
        return (day - self.history_end).days // 7 + 1

    def is_snapshot_date(self, as_of: dt.date) -> bool:
        return as_of in self.monthly_snapshots or (as_of >= self.history_end and as_of.weekday() == 0)

    def snapshot_for_week(self, week: dt.date) -> dt.date | None:
        """As-of date whose snapshot the feature partition of ``week`` holds, if any."""
        as_of = week + WEEK
        return as_of if self.is_snapshot_date(as_of) else None

    def snapshot_dates(self, until: dt.date) -> list[dt.date]:
        """All snapshot dates ``<= until``."""
        dates = [d for d in self.monthly_snapshots if d <= until]
        day = self.history_end
        while day <= until:
            dates.append(day)
            day += WEEK
        return sorted(set(dates))

    def history_week_keys(self) -> list[str]:
        return [self.week_start(i).isoformat() for i in range(self.history_weeks)]
