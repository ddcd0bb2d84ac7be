"""Every hostile-server case, on the core alone (three feeds) and on each transport.

One test per (case, runner): ``test_case[<case id>/<runner>]``. Each asserts the
case's outcome (the exact smtpbee error class, or success, with its checks) and
that no forbidden byte pattern appears in what the client wrote, as the
server recorded it (plain and TLS). The driver's byte-wise and random feeds
also give the same outcome and the same client bytes as the whole feed.
"""

from __future__ import annotations

import pytest

from .cases import CASES, by_category
from .model import CATEGORIES, Case
from .runners import DRIVER_FEEDS, RUNNERS, run
from .verify import same_across_feeds, verify

PARAMS = [
    pytest.param(case, runner, id=f"{case.id}/{runner}") for case in CASES for runner in RUNNERS
]


@pytest.mark.parametrize(("case", "runner"), PARAMS)
def test_case(case: Case, runner: str) -> None:
    record = run(case, runner)
    verify(case, record)
    if runner in DRIVER_FEEDS[1:]:
        same_across_feeds(case, {"driver-whole": run(case, "driver-whole"), runner: record})


def test_the_table_covers_every_category() -> None:
    grouped = by_category()
    assert len(CASES) >= 80
    assert set(grouped) == set(CATEGORIES)
    for category, cases in grouped.items():
        assert cases, f"no case for {category}"
    for case in CASES:
        assert case.description and case.source, case.id
        assert case.forbidden or case.expect.check or case.expect.error is None, (
            f"{case.id}: an error case should say what must never be written"
        )
