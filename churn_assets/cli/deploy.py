"""``churnops deploy``: render the Kubernetes manifests from the settings, check them, build the images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churn_assets.cli.output import err, fail, out

deploy_app = typer.Typer(help="Kubernetes deployment (deploy/, docs/scale_out.md).", no_args_is_help=True)

DEFAULT_DIR = Path("deploy")


@deploy_app.command("render")
def render_cmd(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to render into (the committed one is deploy/).")
    ] = DEFAULT_DIR,
) -> None:
    """Write the manifests and Helm values rendered from the settings (section `deployment`)."""
    from churn_assets.deployment.manifests import write
    from churn_assets.settings import get_settings

    for path in write(get_settings(), out_dir):
        out.print(str(path), highlight=False)


@deploy_app.command("check")
def check_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder holding rendered manifests.")] = DEFAULT_DIR,
) -> None:
    """Exit 1 when a rendered file under FOLDER is missing or differs from what the settings render."""
    from churn_assets.deployment.manifests import stale
    from churn_assets.settings import get_settings

    differing = stale(get_settings(), folder)
    if differing:
        fail(
            f"{len(differing)} file(s) under {folder} differ from the settings' render: "
            + ", ".join(differing)
            + f" (re-render with `churnops deploy render --out {folder}`)",
            code=1,
        )
    out.print(f"{folder}: every rendered file equals the settings' render")


@deploy_app.command("images")
def images_cmd(
    builder: Annotated[
        str | None, typer.Option("--builder", help="docker, podman or buildah (default: the first usable).")
    ] = None,
    image: Annotated[
        list[str] | None,
        typer.Option("--image", help="platform and/or serving (default: both)."),
    ] = None,
    base_image: Annotated[
        str | None,
        typer.Option("--base-image", help="Base of the platform image (BASE_IMAGE of deploy/Dockerfile)."),
    ] = None,
) -> None:
    """Build the platform image (deploy/Dockerfile) and the serving image (the newest bento, containerized)."""
    from churn_assets.deployment.images import IMAGES, ContainerBuildError, find_builder, plan, run_builds
    from churn_assets.settings import get_settings

    settings = get_settings()
    try:
        chosen = find_builder(builder)
        builds = plan(settings, chosen, image or IMAGES, base_image)
        for build in builds:
            err.print(f"building the {build.name} image {build.image} with {chosen}", highlight=False)
        run_builds(settings, builds)
    except ContainerBuildError as exc:
        fail(str(exc))
    for build in builds:
        out.print(f"{build.name}: {build.image}", highlight=False)
