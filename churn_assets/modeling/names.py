"""Names the modeling library shares with the Dagster layer, in a module that imports nothing heavy.

The Dagster code location imports these at load time (one gate check per gate, the split names); the
library modules re-export them (``splits.SPLITS``, ``gates.GATES``). Keeping them here lets every run
subprocess load the code location without importing scikit-learn, LightGBM or MLflow.
"""

from typing import Literal

SplitName = Literal["train", "val", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "val", "test")

GATES: tuple[str, ...] = (
    "auc_floor",
    "train_test_gap",
    "calibration",
    "threshold",
    "shap",
    "fairness",
    "stress_slices",
)
