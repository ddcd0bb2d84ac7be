"""How many examples each property test draws: few locally, many in CI.

The hypothesis profiles in conftest.py set the default; tests that choose their own
count (a costly property draws fewer than a cheap one) scale it through
``examples()``, so ``HYPOTHESIS_PROFILE=ci`` (what .ci/run sets) is the thorough run
and a local run stays quick.
"""

from __future__ import annotations

import os

__all__ = ["examples"]

_SCALE = {"ci": 4.0}.get(os.environ.get("HYPOTHESIS_PROFILE", "default"), 0.25)


def examples(count: int) -> int:
    """count scaled for the profile in use (at least 10)."""
    return max(10, int(count * _SCALE))
