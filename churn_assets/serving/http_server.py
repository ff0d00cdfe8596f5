"""Connection timeouts of the service's HTTP server (uvicorn inside BentoML's workers).

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but has no time limit on reading a
request's line and headers: a client that connects and sends nothing, or sends a header byte every few
seconds, holds its connection (and a file descriptor) for as long as it likes. BentoML 1.4 builds the
``uvicorn.Config`` itself (``_bentoml_impl.worker.service``) and exposes only ``--timeout-keep-alive``
on ``bentoml serve``, no protocol option. uvicorn resolves its default HTTP protocol (``http="auto"``)
through its registry ``uvicorn.config.HTTP_PROTOCOLS`` when the server starts, after the service module
is imported: :func:`install` (called by ``bento/service.py``) points that entry at
:class:`HeaderTimeoutProtocol`, uvicorn's own protocol (httptools, else h11) plus

* a **header timeout**: a connection whose request line and headers are not complete
  ``header_timeout`` seconds after it opened, or after the first byte of a following request, is closed
  — with ``408 Request Timeout`` (``connection: close``) when part of a request had arrived, silently
  when nothing had;
* the **keep-alive timeout** from the settings (uvicorn's is an int from the command line).

A slow body is bounded by the app itself (``serving.request_timeout_seconds``: 504, stage ``read_body``).

The protocol also routes the **hot endpoints** past BentoML's ASGI stack: uvicorn hands each connection
the app BentoML built (its middlewares — OpenTelemetry, its request metrics, the traffic timeout and
concurrency limit, its context — in front of its router and the mounted fast-path app). With
``hot_routes`` (``{path: ASGI app}``, from :meth:`churn_assets.serving.routes.FastPath.hot_routes`) a
``POST`` to one of those paths goes straight to its handler (:class:`HotPathDispatch`; uvicorn's own
proxy-headers middleware is skipped too: the handlers never read the client's address); every other request
(other methods on those paths included) takes BentoML's stack unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import uvicorn.config
from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

_BODY_408 = b'{"error": "request line and headers not sent in time"}'
REQUEST_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(_BODY_408)}\r\n".encode()
    + b"connection: close\r\n\r\n"
    + _BODY_408
)


class _HeldHeaders:
    """A connection's transport during one response: the first ``write`` (uvicorn's status line and headers)
    is held and sent together with the next one (the body), so the response leaves in one ``send``
    system call and one TCP segment instead of two. Everything else goes to the transport; ``close``
    sends what is held first."""

    __slots__ = ("held", "transport")

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport, self.held = transport, b""

    def write(self, data: bytes) -> None:
        if not self.held:
            self.held = data
            return
        held, self.held = self.held, b""
        self.transport.write(held + data)

    def flush(self) -> None:
        if self.held:
            held, self.held = self.held, b""
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def _one_write(send: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """``send`` of uvicorn's request cycle (``send.__self__``) writing a response's headers and its first
    body part in one transport write (:class:`_HeldHeaders`, from ``http.response.start`` to the first
    ``http.response.body``); ``send`` itself when it is not such a cycle."""
    cycle = getattr(send, "__self__", None)
    if cycle is None or not hasattr(cycle, "transport"):
        return send

    async def coalescing(message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            transport = cycle.transport
            if not isinstance(transport, _HeldHeaders):
                cycle.transport = _HeldHeaders(transport)
            await send(message)
            return
        held = cycle.transport
        try:
            await send(message)
        finally:
            if isinstance(held, _HeldHeaders) and kind == "http.response.body":
                held.flush()
                cycle.transport = held.transport

    return coalescing


class HotPathDispatch:
    """ASGI app: an HTTP ``POST`` whose path is in ``routes`` goes to that route's app (its response
    written in one transport write: :func:`_one_write`), everything else (lifespan included) to ``app``."""

    def __init__(self, app: ASGIApp, routes: Mapping[str, ASGIApp]) -> None:
        self.app, self.routes = app, dict(routes)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            hot = self.routes.get(scope["path"])
            if hot is not None:
                await hot(scope, receive, _one_write(send))
                return
        await self.app(scope, receive, send)


class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol with a header-read timeout, a configurable keep-alive timeout and, with
    ``hot_routes``, the hot endpoints dispatched past the server app's middleware stack."""

    app: Any  # the server's ASGI app (uvicorn's protocol sets it)
    header_timeout: float = 10.0
    keep_alive_timeout: float | None = None
    hot_routes: Mapping[str, ASGIApp] | None = None
    _dispatch: tuple[Any, HotPathDispatch] | None = None  # (the server's app, its dispatch), built once

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.keep_alive_timeout is not None:
            self.timeout_keep_alive = self.keep_alive_timeout
        if self.hot_routes:
            self.app = self._dispatcher(self.app)
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial = False  # bytes of a request arrived while waiting for its headers

    @classmethod
    def _dispatcher(cls, app: ASGIApp) -> HotPathDispatch:
        if cls._dispatch is None or cls._dispatch[0] is not app:
            cls._dispatch = (app, HotPathDispatch(app, cls.hot_routes or {}))
        return cls._dispatch[1]

    def _waiting_for_headers(self) -> bool:
        """No request in progress: before the first one, or after the previous response."""
        cycle = self.cycle
        return cycle is None or bool(cycle.response_complete)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = asyncio.get_running_loop().call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._partial = False

    def _expired(self) -> None:
        self._header_timer = None
        if not self._waiting_for_headers() or self.transport.is_closing():
            return
        if self._partial:
            self.transport.write(REQUEST_TIMEOUT_408)
        log.debug("closing %s: no complete request headers within %s s", self.client, self.header_timeout)
        self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_headers():
            self._partial = self._partial or bool(data)
            self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def install(
    header_timeout: float, keep_alive_timeout: float, hot_routes: Mapping[str, ASGIApp] | None = None
) -> None:
    """Make uvicorn's default protocol (``http="auto"``, BentoML's choice) :class:`HeaderTimeoutProtocol`
    with these timeouts and ``hot_routes`` (``POST`` path -> ASGI app, dispatched past the server app's
    middlewares). Call before the server starts (importing the service module is before)."""
    HeaderTimeoutProtocol.header_timeout = header_timeout
    HeaderTimeoutProtocol.keep_alive_timeout = keep_alive_timeout
    HeaderTimeoutProtocol.hot_routes = dict(hot_routes) if hot_routes else None
    HeaderTimeoutProtocol._dispatch = None
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:{HeaderTimeoutProtocol.__name__}"
