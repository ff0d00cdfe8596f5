"""Schemathesis over the real service's OpenAPI document: every operation gets at least 300 generated cases
(schemathesis' examples, coverage and fuzzing phases: valid and invalid bodies, wrong and missing keys,
unsupported methods) and every built-in check, so the document and the service cannot drift apart — a
client generated from the document is never surprised.

The document is built here from the same settings the service runs with (the lazy loader from a fixture,
``schemathesis.pytest.from_fixture``, fails under pytest 9), and the first test proves it is the document
the service serves at ``/openapi.json``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from churn_assets.serving.openapi import openapi_spec
from churn_assets.settings import ServingSettings
from tests.serving.conftest import MAX_BATCH_SIZE, Service
from tests.serving.conftest import service as service  # the real service: tests/serving's session fixture

pytestmark = [pytest.mark.service, pytest.mark.timeout(600)]

EXAMPLES = 300
SERVING = ServingSettings(max_batch_size=MAX_BATCH_SIZE)  # as in the fixture (its key is sent per call)
DOCUMENT = openapi_spec(SERVING)
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20_251_129,  # reproducible runs
        "generation": {"max-examples": EXAMPLES, "mode": "all"},
        "checks": {
            # Every built-in check is on by default; the response-time check needs its bound: the service
            # answers 504 itself at request_timeout_seconds.
            "max_response_time": SERVING.request_timeout_seconds + 1,
            # A body over serving.max_body_bytes (413) cannot be ruled out by a JSON schema (a valid document
            # can hold arbitrarily long strings); the batch limit is in the schema (maxItems).
            "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "413", "429"]},
            # More ids / rows than maxItems get 413 (documented; "too large to process") — a rejection too.
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "403", "404", "405", "406", "413", "415", "422", "429"]
            },
        },
    }
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


def test_the_tested_document_is_the_one_the_service_serves(service: Service) -> None:
    served = httpx.get(f"{service.url}/openapi.json", timeout=10).json()
    assert served == json.loads(json.dumps(DOCUMENT))
    assert set(served["paths"]) == {"/predict", "/predict_features", "/rollout"}


@schema.parametrize()
# No example database: every run is the seeded one, whatever earlier runs found.
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_the_service_conforms_to_its_openapi_document(case: Any, service: Service) -> None:
    case.call_and_validate(base_url=service.url, headers={"x-api-key": service.api_key})
