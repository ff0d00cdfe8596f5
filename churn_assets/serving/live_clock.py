"""The simulated clock of a long-running service: which feature snapshot it serves.

A service that stays up across simulated production weeks (``make demo``) must read each week's online
features "as of" that week: the online store returns no value newer than the read's clock. The weekly
production run moves the clock with :func:`set_live_clock` (JSON ``{"as_of": "YYYY-MM-DD"}`` at
``home/serving/live_clock.json``, replaced atomically) before it replays the week's traffic; the service's
:class:`LiveClock` re-reads the file when its modification time changes (checked at most every
``serving.live_clock_refresh_seconds``).

Order of precedence of the serving clock (``churn_assets.serving.runtime.serving_clock``): the setting
``serving.as_of``, then this file, then the newest offline snapshot, then wall-clock UTC.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import orjson

from churn_assets.settings import Settings


def live_clock_path(settings: Settings) -> Path:
    return settings.serving_dir / "live_clock.json"


def set_live_clock(settings: Settings, as_of: dt.date) -> None:
    """Point the running service's feature reads and prediction-log ``as_of`` at snapshot ``as_of``."""
    path = live_clock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".live-clock-", suffix=".json")
    with os.fdopen(fd, "wb") as fh:
        fh.write(orjson.dumps({"as_of": as_of.isoformat()}))
    os.replace(tmp, path)


def read_live_clock(settings: Settings) -> dt.date | None:
    """The clock file's date (None when there is none; a malformed file is an error naming it)."""
    path = live_clock_path(settings)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return dt.date.fromisoformat(str(orjson.loads(raw)["as_of"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a live clock ({{'as_of': 'YYYY-MM-DD'}}): {exc}") from exc


class LiveClock:
    """The service side: :meth:`changed` returns the new date when the file changed since the last call."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = live_clock_path(settings)
        self._marker: int | None = self._stat()
        self._checked = time.monotonic()

    def _stat(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def changed(self) -> dt.date | None:
        now = time.monotonic()
        if now - self._checked < self.settings.serving.live_clock_refresh_seconds:
            return None
        self._checked = now
        marker = self._stat()
        if marker == self._marker or marker is None:
            return None
        self._marker = marker
        return read_live_clock(self.settings)
