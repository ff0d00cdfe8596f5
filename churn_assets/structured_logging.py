"""Log output of churnops (structlog over the standard library's ``logging``; docs/operations.md).

The domain logs with ``logging.getLogger(__name__)`` as before; :func:`configure_logging` gives the
churnops loggers (``churn_assets.*``, ``churnops.*``) one handler whose structlog formatter renders every
record as a human-readable line (``console``) or as one JSON object per line (``json``), with:

- ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``event`` (the message);
- the context bound with :func:`bound_context` (``structlog.contextvars``): e.g. a request's id;
- the fields a caller passes as ``extra={"fields": {...}}`` (the service's request lines);
- whatever the ``context`` processors add (the code location adds a Dagster run's id, partition and
  step: ``churn_assets.defs.logs``).
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import orjson
import structlog

from churn_assets.settings import LoggingSettings

LOGGERS = ("churn_assets", "churnops")
EventDict = MutableMapping[str, Any]
Processor = Callable[[Any, str, EventDict], EventDict]
_HANDLER_NAME = "churnops-structured"


def _record_fields(logger: Any, method: str, event: EventDict) -> EventDict:
    """The ``extra={"fields": {...}}`` of a standard-library record, as top-level keys."""
    record = event.get("_record")
    fields = getattr(record, "fields", None)
    if isinstance(fields, Mapping):
        for key, value in fields.items():
            event.setdefault(key, value)
    return event


def _json_dumps(event: Any, **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def make_handler(
    cfg: LoggingSettings, stream: TextIO | None = None, context: Iterable[Processor] = ()
) -> logging.Handler:
    """A stream handler (stderr by default) rendering records as ``cfg.format`` lines."""
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_dumps)
        if cfg.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    pre_chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _record_fields,
        *context,
    ]
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=pre_chain,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    return handler


def configure_logging(
    cfg: LoggingSettings, stream: TextIO | None = None, context: Iterable[Processor] = ()
) -> logging.Handler:
    """Route the churnops loggers to one structured handler (replacing the one an earlier call installed):
    level ``cfg.level``, no propagation to the root logger (each record is written once)."""
    handler = make_handler(cfg, stream, context)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(cfg.level)
        logger.propagate = False
    return handler


@contextmanager
def bound_context(**values: Any) -> Iterator[None]:
    """Every churnops log line written inside the block carries ``values`` (in this thread / task)."""
    with structlog.contextvars.bound_contextvars(**values):
        yield


def customer_id_hasher(cfg: LoggingSettings) -> Callable[[int | None], str | None]:
    """The stand-in for a customer id in logs: a 16-hex keyed BLAKE2b of the id (``logging.customer_id_hash_key``)."""
    key = cfg.customer_id_hash_key.get_secret_value().encode() if cfg.customer_id_hash_key else b""

    def digest(customer_id: int | None) -> str | None:
        if customer_id is None:
            return None
        return hashlib.blake2b(str(customer_id).encode(), key=key, digest_size=8).hexdigest()

    return digest
