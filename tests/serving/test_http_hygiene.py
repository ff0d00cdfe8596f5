"""HTTP hygiene of the real service (bentoml serve on a free port): content types, non-finite numbers, 405
``Allow``, the schema of ``/predict_features`` against what the service accepts, and slow clients."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from churn_assets.feature_store.definitions import all_features
from tests.serving.conftest import HEADER_TIMEOUT, KEEP_ALIVE_TIMEOUT, Service

pytestmark = [pytest.mark.service, pytest.mark.timeout(120)]

FEATURES = [f.name for f in all_features()]
FLOAT_FEATURE = next(f.name for f in all_features() if f.dtype == "float64")


def _row(service: Service, cid: int) -> dict[str, object]:
    from tests.serving.test_service_http import _features_of

    return {"customer_id": cid, **_features_of(service, cid)}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
@pytest.mark.parametrize("path", ["/predict", "/predict_features"])
def test_a_body_that_is_not_json_gets_415(service: Service, path: str, content_type: str | None) -> None:
    body = json.dumps({"customer_ids": [3]} if path == "/predict" else {"rows": [_row(service, 3)]})
    headers = {"x-api-key": service.api_key}
    if content_type is not None:
        headers["content-type"] = content_type
    r = httpx.post(service.url + path, content=body.encode(), headers=headers, timeout=10)
    assert r.status_code == 415, r.text
    assert r.headers["accept-post"] == "application/json"
    assert "application/json" in r.json()["error"] and (content_type or "(none)") in r.json()["error"]
    with service.client() as client:  # the same body as JSON is scored
        charset = client.post(
            path, content=body.encode(), headers={"content-type": "application/json; charset=utf-8"}
        )
    assert charset.status_code == 200, charset.text


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_get_422_naming_the_field(service: Service, literal: str) -> None:
    row = _row(service, 4)
    row[FLOAT_FEATURE] = "__X__"
    body = json.dumps({"rows": [row]}).replace('"__X__"', literal)
    with service.client() as client:
        r = client.post("/predict_features", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [
        {
            "field": f"rows.0.{FLOAT_FEATURE}",
            "rule": "finite_number",
            "message": "Input should be a finite number",
        }
    ]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/predict", "POST"),
        ("PUT", "/predict_features", "POST"),
        ("DELETE", "/rollout", "GET, HEAD"),
        ("POST", "/openapi.json", "GET, HEAD"),
        ("POST", "/livez", "GET, HEAD"),  # BentoML's own route
        ("PUT", "/metrics", "GET, HEAD"),
    ],
)
def test_405_names_the_allowed_methods(service: Service, method: str, path: str, allow: str) -> None:
    with service.client() as client:
        r = client.request(method, path)
    assert r.status_code == 405, r.text
    assert sorted(m.strip() for m in r.headers["allow"].split(",")) == sorted(allow.split(", "))
    if path not in ("/livez", "/metrics"):  # BentoML's own routes answer in plain text
        assert r.json() == {"error": "Method Not Allowed", "path": path}


def test_predict_features_requires_exactly_what_the_schema_declares(service: Service) -> None:
    with service.client() as client:
        spec = client.get("/openapi.json").json()
        feature_row = spec["components"]["schemas"]["FeatureRow"]
        assert sorted(feature_row["required"]) == sorted(FEATURES)  # every feature: its value or null
        assert feature_row["additionalProperties"] is False
        full = _row(service, 5)
        short = {k: v for k, v in full.items() if k != FEATURES[-1]}
        # A row leaving a feature out is refused wherever it is in the batch (it was scored with the
        # feature missing when it was not the first row).
        second = client.post("/predict_features", json={"rows": [full, short]})
        assert second.status_code == 422, second.text
        assert {
            "field": f"rows.1.{FEATURES[-1]}",
            "rule": "missing",
            "message": "Field required",
        } in second.json()["detail"]
        # The smallest row the schema allows (every required feature null, no customer id) is scored.
        nulls = client.post("/predict_features", json={"rows": [dict.fromkeys(feature_row["required"])]})
        assert nulls.status_code == 200, nulls.text
        assert 0 <= nulls.json()["predictions"][0]["probability"] <= 1
        # Integers are valid JSON numbers for float features.
        as_int = client.post("/predict_features", json={"rows": [{**full, FLOAT_FEATURE: 3}]})
        assert as_int.status_code == 200, as_int.text


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection (or ``limit`` seconds pass)."""
    start = time.monotonic()
    data = b""
    sock.settimeout(0.2)
    while time.monotonic() - start < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return data, time.monotonic() - start
        data += chunk
    raise AssertionError(f"connection still open after {limit} s (received {data[:200]!r})")


def _port(service: Service) -> int:
    return int(service.url.rsplit(":", 1)[1])


def test_a_client_sending_headers_slowly_is_cut_off_with_408(service: Service) -> None:
    with socket.create_connection(("127.0.0.1", _port(service)), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\n")
        closed = False
        received = b""
        # One header byte every 0.25 s: the headers never complete.
        while time.monotonic() - start < HEADER_TIMEOUT + 5:
            try:
                sock.sendall(b"x")
            except OSError:  # reset / broken pipe: the server closed the connection
                closed = True
                break
            sock.settimeout(0.25)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            received += chunk
            if not chunk:
                closed = True
                break
        held = time.monotonic() - start
    assert closed, f"a client dripping header bytes held its connection {held:.1f} s"
    assert HEADER_TIMEOUT - 0.5 <= held <= HEADER_TIMEOUT + 2, held
    assert received.startswith(b"HTTP/1.1 408 Request Timeout"), received
    assert b"connection: close" in received


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(service: Service) -> None:
    with socket.create_connection(("127.0.0.1", _port(service)), timeout=5) as sock:
        data, held = _read_until_closed(sock, HEADER_TIMEOUT + 5)
    assert data == b""  # nothing of a request arrived: closed without an answer
    assert HEADER_TIMEOUT - 0.5 <= held <= HEADER_TIMEOUT + 2, held


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(service: Service) -> None:
    with socket.create_connection(("127.0.0.1", _port(service)), timeout=5) as sock:
        sock.sendall(b"GET /ready HTTP/1.1\r\nhost: x\r\n\r\n")
        data, held = _read_until_closed(sock, KEEP_ALIVE_TIMEOUT + 5)
    assert data.startswith(b"HTTP/1.1 200 OK"), data[:200]
    assert KEEP_ALIVE_TIMEOUT - 0.5 <= held <= KEEP_ALIVE_TIMEOUT + 2, held


def test_a_slow_client_on_one_connection_does_not_delay_the_next_request(service: Service) -> None:
    with socket.create_connection(("127.0.0.1", _port(service)), timeout=5) as slow:
        slow.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\n")
        with service.client() as client:
            start = time.monotonic()
            r = client.post("/predict", json={"customer_ids": [6]})
        assert r.status_code == 200 and time.monotonic() - start < 2


def test_integral_floats_are_integers_as_json_schema_says(service: Service) -> None:
    """``7.0`` is a JSON Schema ``integer`` (what clients whose numbers are doubles send); ``7.5`` is not."""
    with service.client() as client:
        whole = client.post("/predict", json={"customer_ids": [7.0]})
        fraction = client.post("/predict", json={"customer_ids": [7.5]})
        as_string = client.post("/predict", json={"customer_ids": ["7"]})
    assert whole.status_code == 200 and whole.json()["predictions"][0]["customer_id"] == 7, whole.text
    assert [d["field"] for d in fraction.json()["detail"]] == ["customer_ids.0"]
    assert (fraction.status_code, as_string.status_code) == (422, 422)
