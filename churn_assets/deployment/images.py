"""The two container images of a Kubernetes deployment, built by ``make container`` (docs/scale_out.md).

* **platform** (``deployment.image``): ``deploy/Dockerfile`` — the Dagster code location, daemon, webserver
  and run pods, the MLflow server, and the Dask scheduler and workers.
* **serving** (``deployment.serving_image``): the newest built bento, containerized by ``bentoml
  containerize`` from the Dockerfile that ``bentoml build`` generated (``env/docker/Dockerfile`` inside the
  bento).

Both use whichever OCI builder the machine has: docker (when its daemon answers), podman or buildah.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from churn_assets.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = Path("deploy") / "Dockerfile"
BUILDERS = ("docker", "podman", "buildah")
IMAGES = ("platform", "serving")

Which = Callable[[str], str | None]
Runner = Callable[[Sequence[str]], int]


class ContainerBuildError(RuntimeError):
    """No usable builder, no bento to containerize, or a failed build."""


def _docker_daemon_answers(docker: str) -> bool:
    try:
        proc = subprocess.run([docker, "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def find_builder(
    preferred: str | None = None,
    which: Which = shutil.which,
    docker_ok: Callable[[str], bool] = _docker_daemon_answers,
) -> str:
    """The first usable builder of ``BUILDERS`` (or ``preferred``); a clear error naming what is missing."""
    if preferred is not None and preferred not in BUILDERS:
        raise ContainerBuildError(f"builder {preferred!r} is not one of {', '.join(BUILDERS)}")
    reasons = []
    for name in (preferred,) if preferred else BUILDERS:
        path = which(name)
        if path is None:
            reasons.append(f"{name}: not on PATH")
        elif name == "docker" and not docker_ok(path):
            reasons.append("docker: the CLI is there but no daemon answers (`docker info` failed)")
        else:
            return name
    raise ContainerBuildError(
        "building the images needs a container builder: docker (with a running daemon), podman or buildah "
        "(Debian: `apt-get install podman` or `buildah`); found none usable: " + "; ".join(reasons)
    )


def platform_command(builder: str, image: str, base_image: str | None = None) -> list[str]:
    """Build ``deploy/Dockerfile`` from the repository root as ``image`` (on ``base_image`` if given)."""
    base = ["--build-arg", f"BASE_IMAGE={base_image}"] if base_image else []
    return [builder, "build", "-f", str(DOCKERFILE), *base, "-t", image, "."]


def serving_command(builder: str, bento_tag: str, image: str) -> list[str]:
    """Containerize the bento ``bento_tag`` (its generated Dockerfile) as ``image``."""
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    return [bentoml, "containerize", bento_tag, "--backend", builder, "--image-tag", image]


@dataclass(frozen=True)
class ImageBuild:
    name: str
    image: str
    command: list[str]


def plan(
    settings: Settings, builder: str, images: Sequence[str] = IMAGES, base_image: str | None = None
) -> list[ImageBuild]:
    """The builds ``make container`` runs, in order; the serving image needs a built bento.
    ``base_image`` replaces the platform image's base (``BASE_IMAGE`` of deploy/Dockerfile)."""
    from churn_assets.serving.bento_build import latest_bento

    builds = []
    for name in images:
        if name == "platform":
            image = settings.deployment.image
            builds.append(ImageBuild(name, image, platform_command(builder, image, base_image)))
        elif name == "serving":
            tag = latest_bento(settings)
            if tag is None:
                raise ContainerBuildError(
                    f"no bento under {settings.bentoml_home}/bentos: build one first with `churnops "
                    "bento-build` (it needs a champion: `churnops train`), or pass --image platform"
                )
            image = settings.deployment.serving_image
            builds.append(ImageBuild(name, image, serving_command(builder, tag, image)))
        else:
            raise ContainerBuildError(f"image {name!r} is not one of {', '.join(IMAGES)}")
    return builds


def run_builds(settings: Settings, builds: Sequence[ImageBuild]) -> None:
    """Run each build from the repository root (bentoml with the settings' BentoML home)."""
    from churn_assets.serving.bento_build import bentoml_env

    env = bentoml_env(settings)
    for build in builds:
        proc = subprocess.run(build.command, cwd=REPO_ROOT, env=env, check=False)
        if proc.returncode != 0:
            raise ContainerBuildError(
                f"the {build.name} image {build.image} failed to build (exit {proc.returncode}): "
                + " ".join(build.command)
            )
