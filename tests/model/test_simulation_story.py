"""The production story of the default scenario, at small scale with the reference LightGBM.

History: a model trained on monthly snapshots 1-12 scores AUC 0.80-0.88 on snapshots 16-18.
Production: the model frozen at production start holds at week 0 (>= 0.80) and decays below 0.78
by week 16 (concept shift); a model retrained on production snapshots (weeks 4-12) recovers
(>= 0.80 at week 16). The acquisition campaign (from week 4) makes invoice_amount drift
obviously by week 12 (KS p < 0.01, statistic >= 0.1) while weeks 1-3 show no material drift.
"""

from __future__ import annotations

import pytest

from churn_assets.simulation.calibration import StoryReport, run_story
from tests.simulation_helpers import small_settings

pytestmark = pytest.mark.e2e

N_CUSTOMERS = 10_000


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> StoryReport:
    story = run_story(small_settings(N_CUSTOMERS), tmp_path_factory.mktemp("story"))
    print("\n".join(story.lines()))  # shown with -s / on failure
    return story


def test_history_is_calibrated(report: StoryReport) -> None:
    rates = list(report.churn_rate.values())
    assert 0.07 <= sum(rates) / len(rates) <= 0.09
    assert 0.80 <= report.history_test_auc <= 0.88


def test_frozen_model_decays_and_retraining_recovers(report: StoryReport) -> None:
    assert report.frozen_auc[0] >= 0.80
    assert report.frozen_auc[16] < 0.78
    assert report.retrained_auc[16] >= 0.80
    assert report.retrained_auc[16] > report.frozen_auc[16] + 0.03


def test_campaign_makes_invoice_amount_drift(report: StoryReport) -> None:
    for week in (1, 2, 3):
        statistic, _ = report.invoice_ks[week]
        assert statistic < 0.05, (week, report.invoice_ks[week])
    statistic, p_value = report.invoice_ks[12]
    assert p_value < 0.01 and statistic >= 0.1, report.invoice_ks[12]
    # tenure shifts too: the campaign brings new customers
    assert report.tenure_ks[12][0] > report.tenure_ks[1][0] + 0.05
