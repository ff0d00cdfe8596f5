"""The JSON form of the training steps' results (``candidates.json``, ``challenger.json``): one writer,
one reader.

Writing turns numpy scalars into Python numbers and NaN / infinity into ``null``; reading validates the
file against the dataclass's field types (nested dataclasses included) with pydantic, so a bad or
truncated file fails naming the field instead of surfacing later as a ``KeyError``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np
from pydantic import TypeAdapter


def clean_json(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, Mapping):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonStage:
    """Mixin of a step-result dataclass: :meth:`to_json` / :meth:`from_json`."""

    def to_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(clean_json(dataclasses.asdict(self)), indent=1))  # type: ignore[call-overload]
        return path

    @classmethod
    def from_json(cls, path: Path) -> Self:
        return TypeAdapter(cls).validate_python(json.loads(path.read_text()))
