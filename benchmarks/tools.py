"""Start-up checks of what a benchmark needs outside Python: each missing piece ends the run at once
with one line saying how to get it (instead of a traceback minutes into the run)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# Console scripts of the running interpreter: its venv may live anywhere, not only in REPO/.venv.
BIN = Path(sys.executable).parent


def require_tool(name: str, how: str) -> str:
    """The absolute path of executable ``name`` on PATH; exits naming ``how`` to install it when missing."""
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} is not installed (not on PATH): {how}")
    return path


def venv_tool(name: str) -> Path:
    """An executable of the running interpreter's venv (``bentoml``, ``churnops``); exits when missing."""
    path = BIN / name
    if not path.exists():
        raise SystemExit(f"{path} is missing: install the project into this interpreter (`make install`)")
    return path


def require_redis(url: str) -> None:
    """Exits with a one-line message when no Redis answers at ``url``."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        raise SystemExit(f"Redis at {url} does not answer ({exc}): start it with `make services`") from None


def require_bench_venv_python(venv: Path, skip_flag: str) -> None:
    """A bench-only venv (``setup_feast.sh``, ``setup_evidently.sh``) exists, or can be built: those
    scripts create it with ``$PYTHON`` (default ``python3.11``)."""
    if (venv / "bin" / "python").exists():
        return
    require_tool(
        os.environ.get("PYTHON", "python3.11"),
        f"{venv} is built with it (Debian: `apt-get install python3.11`, or set PYTHON to another "
        f"Python 3.11+), or pass {skip_flag}",
    )


WRK_HOW = "run `make bench-tools` (Debian: `apt-get install wrk`)"
