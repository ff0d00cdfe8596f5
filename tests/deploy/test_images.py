"""``make container`` (``churnops deploy images``): the builder it picks, its errors, its build commands.

The builders are real executables on a PATH the test controls: an empty folder (no builder at all), and
a folder whose ``docker`` answers like a CLI without a daemon (``docker info`` exits 1).
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from churn_assets.deployment.images import (
    DOCKERFILE,
    ContainerBuildError,
    find_builder,
    plan,
    platform_command,
)
from churn_assets.settings import DeploymentSettings, Settings

ROOT = Path(__file__).resolve().parents[2]


def executable(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def on_path(folder: Path):  # type: ignore[no-untyped-def]
    return lambda name: shutil.which(name, path=str(folder))


def test_no_builder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        ContainerBuildError, match=r"docker: not on PATH; podman: not on PATH; buildah: not on PATH"
    ):
        find_builder(which=on_path(tmp_path))


def test_docker_without_a_daemon_is_skipped(tmp_path: Path) -> None:
    executable(tmp_path, "docker", 'echo "Cannot connect to the Docker daemon" >&2; exit 1')
    with pytest.raises(ContainerBuildError, match="no daemon answers"):
        find_builder(which=on_path(tmp_path))
    executable(tmp_path, "buildah", "exit 0")
    assert find_builder(which=on_path(tmp_path)) == "buildah"
    executable(tmp_path, "docker", "exit 0")  # a daemon answers
    assert find_builder(which=on_path(tmp_path)) == "docker"
    assert find_builder("buildah", which=on_path(tmp_path)) == "buildah"
    with pytest.raises(ContainerBuildError, match="'kaniko' is not one of docker, podman, buildah"):
        find_builder("kaniko", which=on_path(tmp_path))


def test_plan_builds_the_dockerfile_and_needs_a_bento_for_serving(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, deployment=DeploymentSettings(image="reg.example/churnops:7"))  # type: ignore[call-arg]
    assert (ROOT / DOCKERFILE).is_file()
    (build,) = plan(settings, "podman", ["platform"])
    assert build.command == platform_command("podman", "reg.example/churnops:7")
    assert build.command == [
        "podman",
        "build",
        "-f",
        "deploy/Dockerfile",
        "-t",
        "reg.example/churnops:7",
        ".",
    ]
    (based,) = plan(settings, "buildah", ["platform"], base_image="localhost/base:1")
    assert based.command[:6] == [
        "buildah",
        "build",
        "-f",
        "deploy/Dockerfile",
        "--build-arg",
        "BASE_IMAGE=localhost/base:1",
    ]
    with pytest.raises(ContainerBuildError, match=r"no bento under .*churnops bento-build"):
        plan(settings, "podman")
    with pytest.raises(ContainerBuildError, match="'gpu' is not one of platform, serving"):
        plan(settings, "podman", ["gpu"])


def test_cli_names_the_missing_builder(tmp_path: Path) -> None:
    churnops = str(Path(sys.executable).with_name("churnops"))
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "CHURNOPS_HOME": str(tmp_path / "home")}
    proc = subprocess.run([churnops, "deploy", "images"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert "needs a container builder: docker (with a running daemon), podman or buildah" in proc.stderr


def test_dockerfile_installs_the_kubernetes_extra_of_the_pinned_dagster_release() -> None:
    """The platform image runs the chart's K8sRunLauncher and the Dask workers: the `kubernetes` extra it
    installs must exist and pin dagster-k8s to the same library release as dagster-postgres; the Dask
    scheduler and workers (`dask`, `distributed`) are main dependencies, so every install has them."""
    import tomllib

    from packaging.requirements import Requirement

    dockerfile = (ROOT / DOCKERFILE).read_text()
    assert 'pip install -e ".[kubernetes]"' in dockerfile
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = {Requirement(r).name: Requirement(r) for r in project["optional-dependencies"]["kubernetes"]}
    runtime = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    assert str(extra["dagster-k8s"].specifier) == str(runtime["dagster-postgres"].specifier)
    assert {"distributed", "dask"} <= set(runtime)
    # the image's user is the serving image's `bentoml` user (UID 1034): both write the shared volume
    assert "useradd -m -u 1034 -g 1034 churnops" in dockerfile and "USER 1034" in dockerfile
