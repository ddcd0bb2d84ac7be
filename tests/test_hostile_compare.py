"""bench/hostile_compare.py on a few cases: smtpbee holds, and the table shows where peers do not.

What the peers do here is what smtplib (this Python's) and aiosmtplib (5.x) were
seen to do; a newer release that fixes one of them fails its test, which is the
point: the table's claims must stay true.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hostile.cases import CASES, NO_MAIL, NOTHING_AFTER_EHLO, SECOND_AUTH
from hostile.model import Case, Expect, Send, Server
from hostile.verify import ALWAYS_FORBIDDEN
from smtpbee import SMTPTimeoutError
from smtpbee.testing import drip

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import hostile_compare
from hostile_compare import Result

BY_ID = {case.id: case for case in CASES}
CHOSEN = (
    "smuggling-lf-dot-lf",
    "code-fullwidth-digits",
    "auth-no-downgrade-after-535",
    "starttls-injection-same-segment",
    "greeting-multiline-220",
)
BARE_LF = ALWAYS_FORBIDDEN[1]

Rows = dict[str, dict[str, Result]]


@pytest.fixture(scope="module")
def rows() -> Rows:
    compared = hostile_compare.compare([BY_ID[name] for name in CHOSEN])
    return {case.id: results for case, results in compared}


def test_the_chosen_cases_are_run_by_peers() -> None:
    assert all(BY_ID[name].peers for name in CHOSEN)


def test_smtpbee_holds_every_case(rows: Rows) -> None:
    for name, results in rows.items():
        result = results["smtpbee"]
        assert result.holds is True, (name, result)
        assert result.forbidden == [] and result.problems == [], (name, result)


def test_smtplib_writes_a_bare_lf_that_aiosmtplib_normalises(rows: Rows) -> None:
    smtplib = rows["smuggling-lf-dot-lf"]["smtplib"]
    assert smtplib.outcome == "ok"
    assert smtplib.holds is False
    assert BARE_LF in smtplib.forbidden
    assert "the server stored other content" in smtplib.problems
    assert f"wrote: {BARE_LF.why}" in smtplib.problems
    assert rows["smuggling-lf-dot-lf"]["aiosmtplib"].holds is True


def test_fullwidth_digits_are_taken_as_a_reply_by_both_peers(rows: Rows) -> None:
    smtplib = rows["code-fullwidth-digits"]["smtplib"]
    # smtplib reads the code as -1, falls back to HELO and sends the message;
    # it writes "mail FROM:", which NO_MAIL finds only because case is ignored.
    assert smtplib.outcome == "ok"
    assert "expected an error" in smtplib.problems
    assert NOTHING_AFTER_EHLO in smtplib.forbidden
    assert NO_MAIL in smtplib.forbidden
    aiosmtplib = rows["code-fullwidth-digits"]["aiosmtplib"]
    assert aiosmtplib.outcome == "SMTPResponseException"
    assert aiosmtplib.holds is False
    assert aiosmtplib.forbidden == [NOTHING_AFTER_EHLO]


def test_both_peers_downgrade_the_mechanism_after_535(rows: Rows) -> None:
    for client in hostile_compare.PEERS:
        result = rows["auth-no-downgrade-after-535"][client]
        assert result.outcome == "SMTPAuthenticationError", client
        assert result.holds is False, client
        assert result.forbidden == [SECOND_AUTH], client
        assert f"wrote: {SECOND_AUTH.why}" in result.problems, client


def test_peers_are_credited_where_they_hold(rows: Rows) -> None:
    # Both drop what came in plaintext before the handshake, as smtpbee refuses it.
    for name in ("starttls-injection-same-segment", "greeting-multiline-220"):
        for client in hostile_compare.PEERS:
            assert rows[name][client].holds is True, (name, client, rows[name][client])


def test_summary_and_table(rows: Rows) -> None:
    pairs = [(BY_ID[name], rows[name]) for name in CHOSEN]
    figures = hostile_compare.summary(pairs, hostile_compare.CLIENTS)
    assert figures["smtpbee"]["held"] == figures["smtpbee"]["total"] == len(CHOSEN)
    assert (figures["smtplib"]["held"], figures["aiosmtplib"]["held"]) == (2, 3)
    assert figures["smtplib"]["by_category"]["AUTH"] == [0, 1]
    table = hostile_compare.render(pairs, hostile_compare.CLIENTS)
    assert "| smuggling-lf-dot-lf | DATA and SMTP smuggling | success | ✓ ok |" in table
    assert f"✗ ok, the server stored other content; wrote: {BARE_LF.why}" in table
    assert "| all | **5/5** | **2/5** | **3/5** |" in table


def test_a_peer_that_does_not_finish_is_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = Case(
        "slow-greeting",
        "oversized and slow input",
        "a greeting dripped for 15 s",
        "test",
        Server({"GREETING": drip(b"220 " + b"s" * 300 + b"\r\n", 0.05)}),
        Expect(SMTPTimeoutError),
    )
    monkeypatch.setattr(hostile_compare, "WATCHDOG", 1.0)
    result = hostile_compare.run_peer(slow, "smtplib")
    assert result.outcome == "hang"
    assert result.holds is False
    assert result.problems == ["still running after 1 s"]
    assert result.elapsed < 5


def test_a_chunking_case_without_bdat_does_not_apply() -> None:
    chunking = Case(
        "chunking",
        "DATA and SMTP smuggling",
        "CHUNKING offered",
        "test",
        Server(extensions=("PIPELINING", "CHUNKING")),
        Expect(delivered=1),
        steps=(Send(),),
    )
    result = hostile_compare.run_peer(chunking, "smtplib")
    assert (result.outcome, result.holds) == ("ok", None)
    figures = hostile_compare.summary([(chunking, {"smtplib": result})], ["smtplib"])
    assert (figures["smtplib"]["total"], figures["smtplib"]["not_applicable"]) == (0, 1)


def test_main_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "compare.json"
    assert hostile_compare.main(["--only", "greeting-multiline-220", "--json", str(path)]) == 0
    assert "| greeting-multiline-220 |" in capsys.readouterr().out
    data = json.loads(path.read_text())
    assert data["versions"]["smtplib"] == "stdlib"
    assert set(data["versions"]) == set(hostile_compare.CLIENTS)
    (case,) = data["cases"]
    assert case["id"] == "greeting-multiline-220" and case["expected"] == "success"
    for client in hostile_compare.CLIENTS:
        assert case[client]["holds"] is True
        assert case[client]["forbidden"] == []
        assert data["summary"][client]["held"] == data["summary"][client]["total"] == 1


def test_main_refuses_an_unknown_client() -> None:
    with pytest.raises(SystemExit):
        hostile_compare.main(["--clients", "smtplib,sendmail"])
