"""The status report's latency figures stay readable at batch (sub-millisecond) and HTTP scales."""

from __future__ import annotations

import pytest

from churn_assets.monitoring.status import format_ms


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (0.0123, "0.012"),
        (0.5, "0.5"),
        (0.0, "0"),
        (1.0, "1.0"),
        (4.56, "4.6"),
        (123.44, "123.4"),
    ],
)
def test_latencies_keep_two_significant_digits_below_one_ms(value, text) -> None:
    assert format_ms(value) == text
