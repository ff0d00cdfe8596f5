"""The training work folder (``settings.training_dir``): the files the training steps hand to each other.

:class:`TrainingWorkdir` is the only place that knows their names::

    <training_dir>/training_set.parquet        the training set (training_set.write_training_set): one
                                               file (local engine) or a directory of one file per
                                               customer shard (dask engine, churn_assets.compute.training_set)
    <training_dir>/training_set.json           its metadata (features, categories, splits, sha256, ...)
    <training_dir>/candidates/candidates.json  the candidate step's result (CandidateStage) + its files
    <training_dir>/challenger/challenger.json  the challenger step's result (ChallengerStage) + its files
    <training_dir>/champion.json               the last promotion decision
    <training_dir>/trained_on.json             registry version -> newest labelled as-of of its training set

This module stays light (no pandas / scikit-learn at import): the Dagster code location imports it.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churn_assets.modeling.names import SPLITS, SplitName

if TYPE_CHECKING:
    import polars as pl

    from churn_assets.modeling.splits import Splits
    from churn_assets.settings import Settings


@dataclass(frozen=True)
class TrainingWorkdir:
    """The training work folder ``root`` and every file in it (see the module doc)."""

    root: Path

    @classmethod
    def of(cls, settings: Settings) -> TrainingWorkdir:
        return cls(settings.training_dir)

    # -- files ------------------------------------------------------------------------------------
    @property
    def training_set(self) -> Path:
        return self.root / "training_set.parquet"

    @property
    def training_set_meta(self) -> Path:
        return self.root / "training_set.json"

    @property
    def candidates_dir(self) -> Path:
        """The candidate step's folder (best model, scores, plots per candidate)."""
        return self.root / "candidates"

    @property
    def candidates(self) -> Path:
        return self.candidates_dir / "candidates.json"

    @property
    def challenger_dir(self) -> Path:
        """The challenger step's folder (plots, fairness table)."""
        return self.root / "challenger"

    @property
    def challenger(self) -> Path:
        return self.challenger_dir / "challenger.json"

    @property
    def champion(self) -> Path:
        """The last promotion decision (outcome, reason, versions, AUCs, mode)."""
        return self.root / "champion.json"

    @property
    def trained_on(self) -> Path:
        """Registry version -> newest labelled as-of of the training set it was trained on (label status
        counts new labels since the CHAMPION's training, not since the last, possibly kept, retraining)."""
        return self.root / "trained_on.json"

    # -- training set -----------------------------------------------------------------------------
    def write_training_set(self, frame: pl.DataFrame, meta: dict[str, Any]) -> Path:
        """Write the training set (``training_set.write_training_set``: row groups in as-of order) and
        its metadata (replacing a sharded set the dask engine wrote)."""
        from churn_assets.modeling.training_set import write_training_set

        if self.training_set.is_dir():
            shutil.rmtree(self.training_set)
        write_training_set(frame, self.training_set)
        self.training_set_meta.write_text(json.dumps(meta, indent=1, default=str))
        return self.training_set

    def publish_training_set(self, shards: Path, meta: dict[str, Any]) -> Path:
        """Make the directory ``shards`` (one Parquet file per customer shard, on the same filesystem) the
        training set, replacing the previous one (file or directory), and write its metadata."""
        self.root.mkdir(parents=True, exist_ok=True)
        old = self.root / f".training_set.old-{uuid.uuid4().hex}"
        if self.training_set.exists():
            self.training_set.rename(old)
        shards.rename(self.training_set)
        self.training_set_meta.write_text(json.dumps(meta, indent=1, default=str))
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
        return self.training_set

    def has_training_set(self) -> bool:
        return self.training_set.exists() and self.training_set_meta.exists()

    def load_meta(self) -> dict[str, Any]:
        """The training set's metadata (``training_set.json``)."""
        return dict(json.loads(self.training_set_meta.read_text()))

    def load_splits(
        self, splits: Sequence[SplitName] = SPLITS, with_train_features: bool = True
    ) -> tuple[Splits, dict[str, Any]]:
        """The stored training set, read split by split as float32 / category frames (``read_split``) and
        validated (``TrainingDataError`` names bad inputs), with its metadata. Splits not in ``splits`` —
        and the train features when ``with_train_features`` is false — are read as labels only (``X``
        without columns): each step reads just what it needs."""
        from churn_assets.modeling.splits import splits_from_parts
        from churn_assets.modeling.training_set import read_split

        meta = self.load_meta()
        parts = {
            name: read_split(
                self.training_set,
                name,
                meta["features"],
                meta["categories"],
                with_features=name in splits and (name != "train" or with_train_features),
            )
            for name in SPLITS
        }
        return splits_from_parts(parts, meta["features"], kind="time"), meta

    # -- promotion --------------------------------------------------------------------------------
    def write_decision(self, record: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.champion.write_text(json.dumps(record, indent=1))

    def load_decision(self) -> dict[str, Any]:
        """The last promotion decision written by :meth:`write_decision`."""
        return dict(json.loads(self.champion.read_text()))

    def load_trained_on(self) -> dict[str, str | None]:
        """Registry version -> newest labelled as-of of its training set (empty before any promotion step)."""
        return dict(json.loads(self.trained_on.read_text())) if self.trained_on.exists() else {}

    def record_trained_on(self, version: str) -> None:
        """Note that registry ``version`` was trained on the current training set."""
        trained_on = self.load_trained_on()
        trained_on[str(version)] = self.load_meta().get("newest_labelled_as_of")
        self.trained_on.write_text(json.dumps(trained_on, indent=1))
