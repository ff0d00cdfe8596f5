"""Serving commands of ``churnops``: ``serve``, ``bento-build`` and
``rollout status|advance|approve|rollback``.

With ``--json`` stdout is one JSON document (:mod:`churn_assets.cli.output`); BentoML and the
registry are imported inside the commands.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import SecretStr
from rich.table import Table

from churn_assets.cli.output import JsonOpt, emit_json, err, fail, human, json_output

if TYPE_CHECKING:
    from churn_assets.settings import Settings

rollout_app = typer.Typer(help="Gradual rollout: shadow -> canary 5/25/50 % -> full.", no_args_is_help=True)
ByOpt = Annotated[str, typer.Option("--by", help="Who makes the change (recorded in the history).")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded in the history).")]


def with_api_key(settings: Settings) -> Settings:
    """``settings`` with a generated ``serving.api_key`` (printed on stderr) when predictions need a key
    and none is configured; unchanged otherwise. The key reaches the service through its environment."""
    if settings.serving.api_key is not None or not settings.serving.require_api_key:
        return settings
    key = secrets.token_urlsafe(32)
    err.print(
        f"serving.api_key is not set: generated one for this service (send header x-api-key: {key}); "
        "set CHURNOPS_SERVING__API_KEY to choose it"
    )
    return settings.model_copy(
        update={"serving": settings.serving.model_copy(update={"api_key": SecretStr(key)})}
    )


def serve_cmd(
    port: Annotated[int | None, typer.Option("--port", help="Port (default: serving.port).")] = None,
    from_source: Annotated[
        bool, typer.Option("--from-source", help="Serve bento/service.py instead of the newest built bento.")
    ] = False,
) -> None:
    """Serve the newest built bento (from `churnops bento-build` or the champion_bento asset) with BentoML."""
    from churn_assets.serving.bento_build import (
        BENTO_DIR,
        bentoml_env,
        latest_bento,
        sync_rollout,
        write_manifest,
    )
    from churn_assets.settings import get_settings

    settings = with_api_key(get_settings())
    port = port or settings.serving.port
    bento = None if from_source else latest_bento(settings)
    if bento is None:
        write_manifest(settings, sync_rollout(settings, by="churnops serve"))
        target, cwd = "bento.service:ChurnService", BENTO_DIR.parent
        err.print(f"serving from source ({target}) on port {port}")
    else:
        target, cwd = bento, Path.cwd()
        err.print(f"serving bento {bento} on port {port}")
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    args = [bentoml, "serve", target, "--port", str(port), "--host", settings.serving.host]
    os.chdir(cwd)
    os.execve(bentoml, args, bentoml_env(settings))


def bento_build_cmd(as_json: JsonOpt = False) -> None:
    """Export the champion (+ rollout candidate) to BentoML and build the bento offline."""
    with json_output(as_json):
        from churn_assets.serving.bento_build import BentoBuildError, build_bento
        from churn_assets.settings import get_settings

        try:
            built = build_bento(get_settings())
        except BentoBuildError as exc:  # e.g. no champion yet: says which command to run
            fail(str(exc), 1)
        human(as_json).print(
            f"bento {built.bento_tag}: stable {built.stable}, candidate {built.candidate or '-'}, "
            f"phase {built.phase}"
        )
    if as_json:
        emit_json(dataclasses.asdict(built))


def export_onnx_cmd(
    version: Annotated[
        str | None, typer.Option("--version", help="Registry version to export (default: the champion).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Convert the champion (or --version N) to ONNX for edge deployment, check it against the native
    scores, and log it as an artifact of the model version (docs/serving.md, "Edge deployment (ONNX)")."""
    with json_output(as_json):
        from churn_assets.modeling.onnx_export import OnnxExportError, export_version
        from churn_assets.modeling.registry import RegistryError
        from churn_assets.settings import get_settings

        try:
            done = export_version(get_settings(), version)
        except RegistryError as exc:
            fail(str(exc))
        except FileNotFoundError as exc:  # no training set to check the scores on
            fail(f"{exc}: run `churnops train` first")
        except OnnxExportError as exc:
            fail(f"cannot export to ONNX: {exc}", 1)
        human(as_json).print(
            f"{done['model_name']} v{done['version']} ({done['family']}, calibration {done['calibration']}) -> "
            f"{done['artifact_uri']}: {done['onnx_bytes']:,} bytes; max |onnx - native| "
            f"{done['max_abs_diff_vs_native']:.2e} on {done['checked_rows']:,} test rows",
            highlight=False,
        )
    if as_json:
        emit_json(done)


def _show(state: object, as_json: bool) -> None:
    data = dataclasses.asdict(state)  # type: ignore[call-overload]
    if as_json:
        emit_json(data)
        return
    out = human(as_json)
    out.print(
        f"phase [bold]{data['phase']}[/bold]  stable v{data['stable_version']}  "
        f"candidate {('v' + data['candidate_version']) if data['candidate_version'] else '-'}"
        + (f"  approved by {data['approved_by']}" if data.get("approved_by") else "")
        + (
            f"  retained v{data['retained_version']} until {data['retained_until']}"
            if data.get("retained_version")
            else ""
        )
    )
    table = Table("at", "action", "phase", "stable", "candidate", "by", "reason")
    for h in data["history"][-10:]:
        table.add_row(
            *(
                str(h.get(k) or "-")
                for k in ("at", "action", "phase", "stable_version", "candidate_version", "by", "reason")
            )
        )
    out.print(table)


@rollout_app.command("status")
def rollout_status(as_json: JsonOpt = False) -> None:
    """The rollout phase, versions and recent history."""
    with json_output(as_json):
        from churn_assets.serving.rollout import RolloutStore
        from churn_assets.settings import get_settings

        state = RolloutStore(get_settings()).load()
    _show(state, as_json)


@rollout_app.command("advance")
def rollout_advance(by: ByOpt = "cli", reason: ReasonOpt = "", as_json: JsonOpt = False) -> None:
    """Move to the next phase (canary_50 -> full makes the candidate stable)."""
    with json_output(as_json):
        from churn_assets.serving.rollout import RolloutError, RolloutStore
        from churn_assets.settings import get_settings

        try:
            state = RolloutStore(get_settings()).advance(by=by, reason=reason)
        except RolloutError as exc:
            fail(str(exc), 1)
    _show(state, as_json)


@rollout_app.command("approve")
def rollout_approve(
    by: Annotated[str, typer.Option("--by", help="The approver (recorded in the audit log).")],
    reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """The business review at 50 %: approve the rollout at canary_50 and complete it (candidate -> stable)."""
    with json_output(as_json):
        from churn_assets.serving.rollout import RolloutError, RolloutStore
        from churn_assets.settings import get_settings

        try:
            state = RolloutStore(get_settings()).approve(by=by, reason=reason)
        except RolloutError as exc:
            fail(str(exc), 1)
    _show(state, as_json)


@rollout_app.command("rollback")
def rollout_rollback(by: ByOpt = "cli", reason: ReasonOpt = "", as_json: JsonOpt = False) -> None:
    """Send all traffic back to the stable version and roll the registry back (champion <- previous)."""
    with json_output(as_json):
        from churn_assets.serving.rollout import RolloutError, RolloutStore
        from churn_assets.settings import get_settings

        try:
            state = RolloutStore(get_settings()).rollback(by=by, reason=reason or "rollout rollback")
        except RolloutError as exc:
            fail(str(exc), 1)
    _show(state, as_json)


PANEL = "Serving"


def register(app: typer.Typer) -> None:
    """Add the serving commands to the ``churnops`` app."""
    app.command("serve", rich_help_panel=PANEL)(serve_cmd)
    app.command("bento-build", rich_help_panel=PANEL)(bento_build_cmd)
    app.command("export-onnx", rich_help_panel=PANEL)(export_onnx_cmd)
    app.add_typer(rollout_app, name="rollout", rich_help_panel=PANEL)
