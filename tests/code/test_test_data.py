"""The tests' own data files are the byte-exact copies their READMEs describe."""

from __future__ import annotations

import hashlib
import re

from tests.modeling_helpers import TELCO_CSV


def test_telco_copy_matches_the_sha256_in_its_readme() -> None:
    readme = (TELCO_CSV.parent / "README.md").read_text()
    documented = re.search(r"sha256 `([0-9a-f]{64})`", readme)
    assert documented is not None, f"{TELCO_CSV.parent / 'README.md'} names no sha256"
    assert hashlib.sha256(TELCO_CSV.read_bytes()).hexdigest() == documented.group(1)
