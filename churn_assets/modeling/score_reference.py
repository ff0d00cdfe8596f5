"""A model version's own score distribution at validation time, stored with it at registration.

The rollout review (``churn_assets.automation.rollout_checks``) compares a candidate's live scores with
this reference rather than with the stable model's scores: after a concept shift an honest retrain
*should* score customers differently from the old model, while a broken model or feature pipeline (a
unit change in one column, a missing feature) moves the candidate's scores away from what the same
model produced on its own held-out rows.

The reference is the calibrated scores of the validation and test rows the challenger was evaluated on
(the final model's probabilities, the same numbers the service returns), kept as ``QUANTILES``
evenly spaced quantiles (``DECIMALS`` decimals; :meth:`ScoreReference.ks` rounds the compared scores
alike), plus the share of those rows at or above the decision threshold. It is the
registry tag ``score_reference`` (JSON) of the version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import ks_2samp

REFERENCE_TAG = "score_reference"
QUANTILES = 501  # 0.2 % steps: the KS statistic against the sketch is within ~0.002 of the exact one
# Quantiles are stored with this many decimals (501 of them fit the registry's tag length) and the scores
# compared with them are rounded the same way: an ``isotonic_ranked`` calibration's plateaus differ from
# the 7th decimal on, so exact scores against rounded quantiles would land wholly on one side of a plateau.
DECIMALS = 6


class ScoreReferenceError(ValueError):
    """A stored score reference is malformed (the message names what is wrong)."""


@dataclass(frozen=True)
class ScoreReference:
    """Quantiles of a version's held-out scores, the number of rows and the positive-decision rate."""

    quantiles: list[float]
    rows: int
    positive_rate: float
    threshold: float

    @classmethod
    def from_scores(cls, scores: np.ndarray, threshold: float) -> ScoreReference:
        values = np.asarray(scores, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ScoreReferenceError("score reference: no finite scores to summarise")
        qs = np.quantile(values, np.linspace(0.0, 1.0, QUANTILES))
        return cls(
            quantiles=[round(float(q), DECIMALS) for q in qs],
            rows=int(values.size),
            positive_rate=float(np.mean(values >= threshold)),
            threshold=float(threshold),
        )

    def to_tag(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_tag(cls, raw: str) -> ScoreReference:
        try:
            data = json.loads(raw)
            ref = cls(
                quantiles=[float(q) for q in data["quantiles"]],
                rows=int(data["rows"]),
                positive_rate=float(data["positive_rate"]),
                threshold=float(data["threshold"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ScoreReferenceError(
                f"registry tag {REFERENCE_TAG!r} is not a score reference: {exc}"
            ) from exc
        if len(ref.quantiles) < 2 or any(
            b < a for a, b in zip(ref.quantiles, ref.quantiles[1:], strict=False)
        ):
            raise ScoreReferenceError(f"registry tag {REFERENCE_TAG!r}: quantiles must be >= 2 and sorted")
        return ref

    @classmethod
    def of_version(cls, tags: Mapping[str, str]) -> ScoreReference | None:
        """The reference in a version's registry tags (None for a version registered without one)."""
        raw = tags.get(REFERENCE_TAG)
        return None if raw is None else cls.from_tag(raw)

    def ks(self, scores: np.ndarray) -> float:
        """Two-sample KS statistic between ``scores`` and the reference (its quantiles stand for it), both
        at the stored precision (``DECIMALS``)."""
        values = np.asarray(scores, dtype=np.float64)
        if values.size == 0:
            raise ScoreReferenceError("score reference: no scores to compare")
        return float(ks_2samp(np.round(values, DECIMALS), np.asarray(self.quantiles)).statistic)
