"""Fixtures shared by the Dask-engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster_helpers import raw_warehouse


@pytest.fixture(scope="session")
def raw_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse with the raw tables of a tiny simulated world (no features yet), built once: its users
    work on copies (``copy_world``) and read its landing files only."""
    return raw_warehouse(tmp_path_factory.mktemp("world"))
