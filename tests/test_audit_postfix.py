"""`smtpbee audit` against the real Postfix of .ci/postfix-start.

The instance is hardened on 8025 (STARTTLS) and 8465 (implicit TLS): it relays
for no one, VRFY is disabled, AUTH is offered only under TLS. Its listener on
8031 is permissive on purpose: an open relay that answers VRFY, offers AUTH in
plaintext and no STARTTLS. The audit must tell the two apart. Skipped locally
when Postfix (or its permissive listener) is not running; in CI (CI=true) their
absence fails.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from servers import PostfixServer
from smtpbee import cli

POSTFIX_ENV = Path(os.environ.get("SMTPBEE_POSTFIX_ENV", "/tmp/smtpbee-postfix/env"))
PERMISSIVE_FINDINGS = {
    "SMTP-OPEN-RELAY",
    "SMTP-VRFY-ENABLED",
    "SMTP-AUTH-BEFORE-TLS",
    "SMTP-STARTTLS-MISSING",
}
"""What the permissive listener is there to show (and the hardened ones must not)."""


def audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = cli.main(["audit", "--json", *args])
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return code, document


def ids(document: dict[str, Any], *severities: str) -> set[str]:
    return {f["id"] for f in document["findings"] if f["severity"] in severities}


def not_run(document: dict[str, Any]) -> set[str]:
    return {item["check"] for item in document["summary"]["not_run"]}


@pytest.fixture(scope="module")
def permissive_port(postfix: PostfixServer) -> int:
    """The permissive listener's port (skips locally, fails in CI, if it does not answer)."""
    facts = dict(line.partition("=")[::2] for line in POSTFIX_ENV.read_text("utf-8").splitlines())
    port = int(facts.get("SMTPBEE_POSTFIX_PERMISSIVE_PORT", "8031"))
    try:
        with socket.create_connection((postfix.host, port), timeout=5) as probe:
            greeting = probe.recv(512)
    except OSError as error:
        greeting, why = b"", str(error)
    else:
        why = f"it greeted {greeting!r}"
    if not greeting.startswith(b"220"):
        reason = (
            f"the permissive Postfix listener {postfix.host}:{port} does not answer ({why});"
            " start it with `sudo bash .ci/postfix-start`"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return port


def test_the_hardened_postfix_with_starttls(
    capsys: pytest.CaptureFixture[str], postfix: PostfixServer
) -> None:
    server = f"{postfix.host}:{postfix.port}"
    code, document = audit(capsys, "--server", server, "--cafile", postfix.cafile)
    assert code == 0, document
    assert ids(document, "low", "medium", "high", "critical") == set()
    assert not (ids(document, "info") & PERMISSIVE_FINDINGS)
    # The checks ran: the relay check was refused, not skipped.
    assert "SMTP-OPEN-RELAY" not in not_run(document)
    assert document["summary"]["tls"]["verified"] is True
    assert "SMTP-TLS-PARAMETERS" in ids(document, "info")


def test_the_hardened_postfix_with_implicit_tls(
    capsys: pytest.CaptureFixture[str], postfix: PostfixServer
) -> None:
    server = f"{postfix.host}:{postfix.smtps_port}"
    code, document = audit(
        capsys, "--server", server, "--tls", "implicit", "--cafile", postfix.cafile
    )
    assert code == 0, document
    assert ids(document, "low", "medium", "high", "critical") == set()
    # AUTH is offered here from the start, under TLS: no finding.
    assert "SMTP-AUTH-BEFORE-TLS" not in ids(document, "info", "medium", "high")


def test_the_permissive_postfix(
    capsys: pytest.CaptureFixture[str], postfix: PostfixServer, permissive_port: int
) -> None:
    server = f"{postfix.host}:{permissive_port}"
    code, document = audit(capsys, "--server", server, "--cafile", postfix.cafile)
    assert code == 1
    assert ids(document, "low", "medium", "high", "critical") == PERMISSIVE_FINDINGS
    assert ids(document, "critical") == {"SMTP-OPEN-RELAY"}
    relay = next(f for f in document["findings"] if f["id"] == "SMTP-OPEN-RELAY")
    assert relay["transcript"][-2:] == ["C: RSET", "S: 250 2.0.0 Ok"]
    assert document["summary"]["tls"] is None


def test_an_open_relay_fails_even_the_most_lenient_threshold(
    capsys: pytest.CaptureFixture[str], postfix: PostfixServer, permissive_port: int
) -> None:
    server = f"{postfix.host}:{permissive_port}"
    code = cli.main(["audit", "--server", server, "--fail-on", "critical"])
    out = capsys.readouterr().out
    assert code == 1
    assert "SMTP-OPEN-RELAY" in out and out.splitlines()[-1].endswith("(--fail-on critical)")


def test_smtp_smuggling_at_the_hardened_postfix(
    capsys: pytest.CaptureFixture[str], postfix: PostfixServer
) -> None:
    # .ci/postfix-start sets smtpd_forbid_bare_newline=normalize for loopback clients
    # too (CVE-2023-51764): no look-alike of <CR><LF>.<CR><LF> ends the content.
    recipient = postfix.new_address("smuggling")
    server = f"{postfix.host}:{postfix.port}"
    args = ("--server", server, "--cafile", postfix.cafile, "--test-rcpt", recipient)
    code, document = audit(capsys, *args)
    assert code == 0, document
    assert "SMTP-SMUGGLING" not in ids(document, "info", "low", "medium", "high", "critical")
    assert "SMTP-SMUGGLING" not in not_run(document)
    # The probes went to the test recipient (the only RCPT the check gives), each
    # look-alike kept inside the content.
    delivered = postfix.wait_for_message(lambda data: recipient.encode() in data)
    assert b"smtpbee audit: does" in delivered


def test_smtp_smuggling_at_the_permissive_postfix(
    capsys: pytest.CaptureFixture[str], postfix: PostfixServer, permissive_port: int
) -> None:
    # The permissive listener keeps Postfix's old default (smtpd_forbid_bare_newline=no):
    # a bare <LF>.<LF> ends the content there, which the hardened one refuses.
    recipient = postfix.new_address("smuggled")
    server = f"{postfix.host}:{permissive_port}"
    code, document = audit(capsys, "--server", server, "--test-rcpt", recipient)
    assert code == 1
    assert "SMTP-SMUGGLING" in ids(document, "high")
    smuggling = next(f for f in document["findings"] if f["id"] == "SMTP-SMUGGLING")
    assert "<LF>.<LF>" in smuggling["detail"]
    assert f"C: RCPT TO:<{recipient}>" in smuggling["transcript"]
