"""Run `dagster-webserver` as a subprocess and drive its UI in headless Chromium (tests/ui)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKSPACE_YAML = ROOT / "workspace.yaml"
REPO_DAGSTER_YAML = ROOT / "dagster.yaml"

# The Debian package `chromium` (`make services` installs it); Playwright's own browser download is not used.
CHROMIUM = Path("/usr/bin/chromium")
# Running as root in a container: no sandbox, no GPU; without the background-networking flags
# Chromium's own update and sync connections are refused here and slow the start down.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> Path:
    """The Chromium binary; a missing one fails the test (it never skips)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is required at {CHROMIUM} for the UI test and is missing: "
            "`make services` (or `apt-get install -y chromium`) installs it"
        )
    return CHROMIUM


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_instance_yaml(dagster_home: Path) -> Path:
    """DAGSTER_HOME/dagster.yaml: the project's file, with runs launched straight from the webserver.

    The project's instance queues runs (``run_queue``), which the Dagster daemon dequeues; `make ui`
    (`dagster dev`) starts that daemon. The UI test starts only the webserver, so it swaps the queue
    for the ``DefaultRunCoordinator``: a run launched in the UI starts at once, in a subprocess of
    the code server (``DefaultRunLauncher``). Storage and telemetry stay as in the project's file.
    """
    config = yaml.safe_load(REPO_DAGSTER_YAML.read_text())
    config.pop("run_queue", None)
    config["run_coordinator"] = {
        "module": "dagster._core.run_coordinator",
        "class": "DefaultRunCoordinator",
    }
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def subprocess_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any CHURNOPS_* / DAGSTER_HOME, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHURNOPS_") and k != "DAGSTER_HOME"}
    env.update(extra)
    return env


class Webserver:
    """A running `dagster-webserver`: its URL, its log, and a GraphQL client."""

    def __init__(self, url: str, log_path: Path, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.log_path = log_path
        self.process = process

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=15) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]  # type: ignore[no-any-return]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no webserver log)"


WORKSPACE_STATUS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


@contextmanager
def dagster_webserver(
    env: Mapping[str, str], log_path: Path, *, timeout: float = 90.0
) -> Iterator[Webserver]:
    """Start `dagster-webserver -w workspace.yaml` on a free port; yield once the code location loaded.

    The server runs in its own session (process group). Teardown sends SIGTERM to the group, then
    SIGKILL by PID to every process of its tree still alive after a grace period (the code server
    and run workers are its children; Dagster processes do not always stop on SIGTERM).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "dagster_webserver",
        "-w",
        str(WORKSPACE_YAML),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Webserver(url, log_path, process)
    try:
        _wait_until_loaded(server, timeout)
        yield server
    finally:
        stop_process_tree(process)


def _wait_until_loaded(server: Webserver, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"dagster-webserver exited with {server.process.returncode} before it was ready:\n"
                f"{server.log_tail()}"
            )
        try:
            data = server.graphql(WORKSPACE_STATUS)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = repr(exc)
        else:
            entries = data["workspaceOrError"].get("locationEntries", [])
            for entry in entries:
                error = entry["locationOrLoadError"]
                if error and error["__typename"] == "PythonError":
                    pytest.fail(f"code location {entry['name']} failed to load: {error['message']}")
            if entries and all(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries):
                return
            last = f"locations: {entries}"
        time.sleep(0.5)
    pytest.fail(f"dagster-webserver not ready after {timeout:.0f} s ({last}):\n{server.log_tail()}")


def stop_process_tree(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    try:
        root = psutil.Process(process.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)  # start_new_session: the group id is the pid
    _, alive = psutil.wait_procs(tree, timeout=grace)
    for proc in alive:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=grace)
