"""The scripted production scenario: an acquisition campaign and a concept shift (price war).

Production weeks are numbered from 1 (the first week after history). History (week number
``None``) is stationary: no campaign, no shift.
"""

from __future__ import annotations

from dataclasses import dataclass

from churn_assets.settings import SimulationSettings


@dataclass(frozen=True)
class Scenario:
    """When the campaign runs and how far the concept shift has progressed, per production week."""

    campaign_start_week: int | None
    campaign_weeks: int | None
    campaign_share: float
    campaign_signup_multiplier: float
    concept_shift_week: int | None
    concept_shift_ramp_weeks: int

    @classmethod
    def from_settings(cls, sim: SimulationSettings) -> Scenario:
        return cls(
            campaign_start_week=sim.campaign_start_week,
            campaign_weeks=sim.campaign_weeks,
            campaign_share=sim.campaign_share,
            campaign_signup_multiplier=sim.campaign_signup_multiplier,
            concept_shift_week=sim.concept_shift_week,
            concept_shift_ramp_weeks=sim.concept_shift_ramp_weeks,
        )

    def campaign_active(self, production_week: int | None) -> bool:
        if production_week is None or self.campaign_start_week is None:
            return False
        if production_week < self.campaign_start_week:
            return False
        return self.campaign_weeks is None or production_week < self.campaign_start_week + self.campaign_weeks

    def signups(self, production_week: int | None) -> tuple[float, float]:
        """(volume multiplier over churn replacement, share of signups from the campaign)."""
        if self.campaign_active(production_week):
            return self.campaign_signup_multiplier, self.campaign_share
        return 1.0, 0.0

    def shift(self, production_week: int | None) -> float:
        """Progress of the concept shift in [0, 1]: 0 before, a linear ramp, then 1."""
        if production_week is None or self.concept_shift_week is None:
            return 0.0
        done = (production_week - self.concept_shift_week + 1) / self.concept_shift_ramp_weeks
        return float(min(max(done, 0.0), 1.0))
