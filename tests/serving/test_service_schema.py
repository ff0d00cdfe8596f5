"""Property-based bad (and good) payloads from the OpenAPI spec: never a 5xx (schemathesis, bounded)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from churn_assets.serving.openapi import openapi_spec
from tests.serving.conftest import Service

pytestmark = [pytest.mark.service, pytest.mark.timeout(300)]

schema = schemathesis.openapi.from_dict(openapi_spec())


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_generated_payloads_never_get_a_server_error(case, service: Service) -> None:  # type: ignore[no-untyped-def]
    response = case.call(base_url=service.url, headers={"x-api-key": service.api_key})
    assert response.status_code < 500, (case.body, response.text)
    if response.status_code >= 400:
        assert response.json()["error"]  # a clear message, not a bare status
