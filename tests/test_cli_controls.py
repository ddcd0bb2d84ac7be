"""`smtpbee send`/`probe` options for people who test servers, through the command line.

Each option runs against a smtpbee.testing scripted server (over a Unix socket
through a small bridge for --socket), and what the server recorded proves what
the client did; LMTP is also checked against the Dovecot of .ci/lmtp-start.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import POSTFIX_ENV
from mtas import require
from servers import PostfixServer
from smtpbee.testing import ThreadedServer
from test_cli import TRANSPORTS, as_json, smtpbee

ENVELOPE = ["--from", "a@example.test", "--to", "b@example.test"]


def send(server: ThreadedServer, *args: str) -> list[str]:
    """The send options for a plaintext scripted server."""
    return ["send", "--server", f"127.0.0.1:{server.port}", "--tls", "none", *args]


def verbs(server: ThreadedServer) -> list[str]:
    return [command.verb for command in server.commands]


# -- LMTP, over TCP and over a Unix socket -----------------------------------------------


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def unix_bridge(port: int) -> Iterator[str]:
    """A Unix socket whose connections are carried to 127.0.0.1:port; yields its path."""
    directory = tempfile.mkdtemp(prefix="smtpbee-")  # short: AF_UNIX paths are limited
    path = str(Path(directory) / "lmtp")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    listener.settimeout(30)
    threads: list[threading.Thread] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            client, _ = listener.accept()
            upstream = socket.create_connection(("127.0.0.1", port), timeout=30)
            for pair in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=_pump, args=pair, daemon=True)
                thread.start()
                threads.append(thread)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield path
    finally:
        listener.close()
        acceptor.join(5)
        for thread in threads:
            thread.join(5)
        shutil.rmtree(directory, ignore_errors=True)


LMTP_FINAL = b"250 2.0.0 b delivered\r\n452 4.2.2 c: mailbox full\r\n"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_lmtp_over_a_unix_socket_gives_one_result_per_recipient(
    scripted_server: Any, transport: str
) -> None:
    server = scripted_server({"MESSAGE": LMTP_FINAL}, lmtp=True)
    with unix_bridge(server.port) as path:
        run = smtpbee(
            "send", "--socket", path, "--protocol", "lmtp", "--transport", transport,
            "--from", "a@example.test", "--to", "b@example.test", "--to", "c@example.test",
            "--body", "hi", "--json",
        )  # fmt: skip
        server.wait()
    assert run.returncode == 75, run.stderr
    result = as_json(run)
    assert result["server"] == f"unix:{path}"
    assert result["protocol"] == "lmtp"
    assert result["tls_mode"] == "none"
    assert result["delivery"] == {
        "b@example.test": {"code": 250, "enhanced": "2.0.0", "text": "b delivered"},
        "c@example.test": {"code": 452, "enhanced": "4.2.2", "text": "c: mailbox full"},
    }
    assert verbs(server)[:2] == ["LHLO", "MAIL"]
    [message] = server.messages
    assert message.recipients == ("b@example.test",)
    assert "refused recipients: c@example.test" in run.stderr


def test_lmtp_over_tcp_prints_each_delivery(scripted_server: Any) -> None:
    server = scripted_server({"MESSAGE": LMTP_FINAL}, lmtp=True)
    run = smtpbee(
        *send(server, "--protocol", "lmtp", "--from", "a@example.test"),
        *("--to", "b@example.test", "--to", "c@example.test", "--subject", "s"),
    )
    server.wait()
    assert run.returncode == 75, run.stderr
    assert "delivered b@example.test: 250 2.0.0 b delivered" in run.stdout
    assert "REFUSED   c@example.test: 452 4.2.2 c: mailbox full" in run.stdout
    assert verbs(server)[0] == "LHLO"


def test_lmtp_with_every_delivery_refused_is_69(scripted_server: Any) -> None:
    server = scripted_server({"MESSAGE": b"550 5.1.1 gone\r\n"}, lmtp=True)
    run = smtpbee(*send(server, "--protocol", "lmtp", *ENVELOPE, "--subject", "s", "--json"))
    server.wait()
    assert run.returncode == 69, run.stderr
    result = as_json(run)
    assert result["delivery"]["b@example.test"]["code"] == 550
    assert result["error"]["kind"] == "permanent"


def test_probe_over_a_unix_socket(scripted_server: Any) -> None:
    server = scripted_server(lmtp=True)
    with unix_bridge(server.port) as path:
        run = smtpbee("probe", "--socket", path, "--protocol", "lmtp", "--json")
        server.wait()
    assert run.returncode == 0, run.stderr
    assert as_json(run)["server"] == f"unix:{path}"
    assert verbs(server) == ["LHLO", "QUIT"]


def test_a_socket_nobody_listens_on_is_75(tmp_path: Path) -> None:
    run = smtpbee("send", "--socket", str(tmp_path / "nothing"), *ENVELOPE, "--body", "x", "--json")
    assert run.returncode == 75, run.stderr
    assert as_json(run)["error"]["kind"] == "connection"


@pytest.mark.parametrize(
    "extra",
    [
        ["send", *ENVELOPE, "--body", "x"],
        ["send", "--socket", "/x", "--source-address", "127.0.0.1", *ENVELOPE, "--body", "x"],
        ["send", "--socket", "/x", "--proxy", "socks5://127.0.0.1:1", *ENVELOPE, "--body", "x"],
        ["probe"],
    ],
)
def test_socket_and_server_usage_errors_are_64(extra: list[str]) -> None:
    run = smtpbee(*extra)
    assert run.returncode == 64, run.stderr
    assert run.stderr.startswith("smtpbee: error: ")


def test_lmtp_against_dovecot_over_its_unix_socket() -> None:
    lmtp = require("lmtp")
    assert lmtp.socket_path is not None and lmtp.full_address is not None
    one = lmtp.new_address("cli")
    run = smtpbee(
        "send", "--socket", lmtp.socket_path, "--protocol", "lmtp",
        "--from", lmtp.new_address("sender"), "--to", one, "--to", lmtp.full_address,
        "--to", lmtp.reject_address, "--body", "x" * 3000, "--json",
    )  # fmt: skip
    assert run.returncode == 69, run.stderr
    result = as_json(run)
    assert result["recipients"][lmtp.reject_address]["code"] == 550
    assert result["delivery"][one]["code"] == 250
    assert result["delivery"][lmtp.full_address]["code"] == 552
    assert lmtp.wait_for_messages(lambda content: True, recipient=one)


# -- control points ----------------------------------------------------------------------


def test_quit_after_rcpt_sends_no_data(scripted_server: Any) -> None:
    server = scripted_server()
    run = smtpbee(
        *send(server, *ENVELOPE, "--to", "c@example.test", "--body", "x"),
        *("--quit-after", "rcpt", "--json"),
    )
    server.wait()
    assert run.returncode == 0, run.stderr
    assert verbs(server) == ["EHLO", "MAIL", "RCPT", "RCPT", "QUIT"]
    assert server.messages == []
    stopped = as_json(run)["stopped"]
    assert stopped["point"] == "RCPT" and stopped["action"] == "quit"
    assert stopped["reply"]["code"] == 250
    assert as_json(run)["ok"] is True


def test_drop_after_mail_closes_without_quit(scripted_server: Any) -> None:
    server = scripted_server()
    run = smtpbee(*send(server, *ENVELOPE, "--body", "x", "--drop-after", "MAIL"))
    server.wait()
    assert run.returncode == 0, run.stderr
    # PIPELINING is offered, yet the group is cut at the point: no RCPT behind MAIL.
    assert verbs(server) == ["EHLO", "MAIL"]
    assert "stopped   after MAIL (connection dropped), last reply 250" in run.stdout


def test_drop_after_send_data_closes_before_the_354(scripted_server: Any) -> None:
    server = scripted_server({"DATA": [None]}, extensions=["8BITMIME"])
    run = smtpbee(*send(server, *ENVELOPE, "--body", "x", "--drop-after-send", "data", "--json"))
    server.wait()
    assert run.returncode == 0, run.stderr
    assert verbs(server) == ["EHLO", "MAIL", "RCPT", "DATA"]
    assert as_json(run)["stopped"] == {"point": "DATA", "action": "drop", "reply": None}


def test_a_refusal_at_the_stop_still_sets_the_exit_code(scripted_server: Any) -> None:
    server = scripted_server({"RCPT": "550 5.1.1 no such user"})
    run = smtpbee(*send(server, *ENVELOPE, "--body", "x", "--quit-after", "RCPT", "--json"))
    server.wait()
    assert run.returncode == 69, run.stderr
    assert as_json(run)["stopped"]["reply"]["code"] == 550
    assert "DATA" not in verbs(server)


def test_probe_quit_after_greeting(scripted_server: Any) -> None:
    server = scripted_server()
    run = smtpbee(
        "probe", "--server", f"127.0.0.1:{server.port}", "--tls", "none",
        "--quit-after", "greeting", "--json",
    )  # fmt: skip
    server.wait()
    assert run.returncode == 0, run.stderr
    assert verbs(server) == ["QUIT"]
    assert as_json(run)["stopped"]["point"] == "GREETING"


@pytest.mark.parametrize(
    "extra",
    [
        ["--quit-after", "AUTH"],  # no --user: AUTH is never sent
        ["--quit-after", "TLS"],  # with --tls none
        ["--drop-after-send", "GREETING"],  # no command to drop after
        ["--quit-after", "MAIL", "--drop-after", "RCPT"],
        ["--quit-after", "LATER"],
        ["--quit-after", "DATA", "--bdat", "10"],
        ["--raw", "--raw-line", "NOOP", "--quit-after", "MAIL"],
        ["--no-data-fixup", "--quit-after", "RCPT"],
    ],
)
def test_control_usage_errors_are_64(scripted_server: Any, extra: list[str]) -> None:
    server = scripted_server()
    envelope = [] if "--raw" in extra else [*ENVELOPE, "--body", "x"]
    run = smtpbee(*send(server, *envelope, *extra))
    assert run.returncode == 64, run.stderr
    assert run.stderr.startswith("smtpbee: error: ")
    assert server.commands == []


def test_probe_offers_only_the_points_it_passes(scripted_server: Any) -> None:
    server = scripted_server()
    run = smtpbee("probe", "--server", f"127.0.0.1:{server.port}", "--quit-after", "MAIL")
    assert run.returncode == 64
    assert server.commands == []


# -- pipelining and chunking on demand ---------------------------------------------------


def test_pipeline_groups_even_when_not_offered(scripted_server: Any) -> None:
    server = scripted_server(extensions=["8BITMIME"])
    run = smtpbee(*send(server, *ENVELOPE, "--to", "c@example.test", "--body", "x", "--pipeline"))
    server.wait()
    assert run.returncode == 0, run.stderr
    rounds = server.transcript.rounds()
    assert [b"MAIL", b"RCPT", b"RCPT", b"DATA"] in [[u[:4] for u in r] for r in rounds]


def test_no_pipeline_goes_one_command_at_a_time(scripted_server: Any) -> None:
    server = scripted_server(extensions=["PIPELINING", "8BITMIME"])
    run = smtpbee(*send(server, *ENVELOPE, "--body", "x", "--no-pipeline"))
    server.wait()
    assert run.returncode == 0, run.stderr
    assert all(len(r) == 1 for r in server.transcript.rounds() if r), server.transcript.rounds()


def test_bdat_chunks_of_the_given_size(scripted_server: Any, tmp_path: Path) -> None:
    server = scripted_server(extensions=["8BITMIME"])  # no CHUNKING offered
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: chunks\r\n\r\n" + b"0123456789" * 5 + b"\r\n")
    run = smtpbee(*send(server, *ENVELOPE, "--message", str(message), "--bdat", "16"))
    server.wait()
    assert run.returncode == 0, run.stderr
    [received] = server.messages
    assert [len(c) for c in received.chunks] == [16, 16, 16, 16, 7]
    assert received.content == message.read_bytes()
    assert "DATA" not in verbs(server)


# -- the unsafe path: --no-data-fixup and --raw ------------------------------------------


RAW_BODY = b"Subject: raw\r\n\r\nbare\nlf and bare\rcr\r\n.dot\r\n"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_data_fixup_sends_the_bytes_as_given(
    scripted_server: Any, tmp_path: Path, transport: str
) -> None:
    server = scripted_server()
    message = tmp_path / "m.eml"
    message.write_bytes(RAW_BODY)
    run = smtpbee(
        *send(server, *ENVELOPE, "--message", str(message), "--no-data-fixup"),
        *("--transport", transport, "--transcript", "--json"),
    )
    server.wait()
    assert run.returncode == 0, run.stderr
    [received] = server.messages
    # No CRLF fixup, no dot-stuffing: the bare LF and the ".dot" line reached the server.
    assert received.wire == RAW_BODY + b".\r\n"
    assert "C!: DATA" in run.stderr
    assert as_json(run)["data"]["code"] == 250


def test_without_the_flag_the_body_is_fixed_up(scripted_server: Any, tmp_path: Path) -> None:
    server = scripted_server(extensions=["8BITMIME"])
    message = tmp_path / "m.eml"
    message.write_bytes(RAW_BODY)
    run = smtpbee(*send(server, *ENVELOPE, "--message", str(message)))
    server.wait()
    assert run.returncode == 0, run.stderr
    [received] = server.messages
    assert b"bare\r\nlf" in received.wire
    assert b"\r\n..dot\r\n" in received.wire


def test_no_data_fixup_with_every_recipient_refused_sends_no_data(scripted_server: Any) -> None:
    server = scripted_server({"RCPT": "550 5.1.1 no"})
    run = smtpbee(*send(server, *ENVELOPE, "--body", "x", "--no-data-fixup", "--json"))
    server.wait()
    assert run.returncode == 69, run.stderr
    assert verbs(server) == ["EHLO", "MAIL", "RCPT", "RSET", "QUIT"]


def test_no_data_fixup_refused_mail_is_69(scripted_server: Any) -> None:
    server = scripted_server({"MAIL": "553 5.1.8 bad sender"})
    run = smtpbee(*send(server, *ENVELOPE, "--body", "x", "--no-data-fixup", "--json"))
    server.wait()
    assert run.returncode == 69, run.stderr
    assert as_json(run)["error"]["code"] == 553


def test_raw_lines_go_exactly_with_their_replies(scripted_server: Any, tmp_path: Path) -> None:
    server = scripted_server()
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b"DATA\r\nSubject: raw\nbare lf inside\n.\nQUIT\n")
    run = smtpbee(
        *send(server, "--raw", "--raw-line", "RCPT TO:<early@example.test>"),
        *("--raw-line", "MAIL FROM:<a@example.test>", "--raw-line", "RCPT TO:<b@example.test>"),
        *("--raw-file", str(lines), "--transcript", "--json"),
    )
    server.wait()
    assert run.returncode == 0, run.stderr
    raw = as_json(run)["raw"]
    assert [entry["line"] for entry in raw] == [
        "RCPT TO:<early@example.test>", "MAIL FROM:<a@example.test>",
        "RCPT TO:<b@example.test>", "DATA", "Subject: raw", "bare lf inside", ".", "QUIT",
    ]  # fmt: skip
    codes = [[reply["code"] for reply in entry["replies"]] for entry in raw]
    assert codes == [[503], [250], [250], [354], [], [], [250], [221]]
    [received] = server.messages
    assert received.content == b"Subject: raw\r\nbare lf inside\r\n"
    assert "C!: RCPT TO:<early@example.test>" in run.stderr


def test_raw_line_with_a_bare_lf_reaches_the_server(scripted_server: Any) -> None:
    server = scripted_server({"NOOP": "250 fine"})
    run = smtpbee(*send(server, "--raw", "--raw-line", "NOOP\nNOOP"))
    server.wait()
    assert run.returncode == 0, run.stderr
    assert b"NOOP\nNOOP\r\n" in server.transcript.client()
    assert "raw       C: NOOP\\nNOOP" in run.stdout


@pytest.mark.parametrize(
    "extra",
    [
        ["--raw"],
        ["--raw", "--raw-line", "NOOP", *ENVELOPE],
        ["--raw", "--raw-line", "NOOP", "--body", "x"],
        ["--raw-line", "NOOP", *ENVELOPE, "--body", "x"],
        ["--no-data-fixup", "--bdat", "10", *ENVELOPE, "--body", "x"],
        ["--no-data-fixup", "--pipeline", *ENVELOPE, "--body", "x"],
        ["--no-data-fixup", "--protocol", "lmtp", *ENVELOPE, "--body", "x"],
        ["--bdat", "0", *ENVELOPE, "--body", "x"],
    ],
)
def test_unsafe_usage_errors_are_64(scripted_server: Any, extra: list[str]) -> None:
    server = scripted_server()
    run = smtpbee(*send(server, *extra))
    assert run.returncode == 64, run.stderr
    assert server.commands == []


def test_missing_from_and_to_are_still_usage_errors() -> None:
    run = smtpbee("send", "--server", "127.0.0.1:9", "--body", "x")
    assert run.returncode == 64
    assert "required: --from, --to (see smtpbee send --help)" in run.stderr


# -- XCLIENT and PROXY -------------------------------------------------------------------


XCLIENT_EXTENSIONS = ["PIPELINING", "8BITMIME", "XCLIENT NAME ADDR", "STARTTLS"]


@pytest.mark.parametrize("after_tls", [False, True])
def test_xclient_before_or_after_starttls(
    scripted_server: Any, trust_ca: Any, after_tls: bool
) -> None:
    server = scripted_server(
        {"XCLIENT": "220 scripted.test ESMTP again"},
        tls="starttls",
        tls_context=trust_ca.server_context(),
        extensions=XCLIENT_EXTENSIONS,
    )
    run = smtpbee(
        "send", "--server", f"127.0.0.1:{server.port}", "--cafile", trust_ca.cafile,
        *ENVELOPE, "--body", "x", "--xclient", "ADDR=192.0.2.1", "--xclient", "name=x.example",
        *(["--xclient-after-tls"] if after_tls else []), "--json",
    )  # fmt: skip
    server.wait()
    assert run.returncode == 0, run.stderr
    result = as_json(run)
    assert result["xclient"]["code"] == 220
    assert result["tls"] is not None
    [xclient] = [c for c in server.commands if c.verb == "XCLIENT"]
    assert xclient.argument == "ADDR=192.0.2.1 NAME=x.example"
    assert xclient.tls is after_tls
    expected = ["EHLO", "STARTTLS", "EHLO", "XCLIENT", "EHLO"]
    if not after_tls:
        expected = ["EHLO", "XCLIENT", "EHLO", "STARTTLS", "EHLO"]
    assert verbs(server)[:5] == expected
    assert server.messages[0].tls


def test_xclient_before_tls_still_requires_starttls(scripted_server: Any) -> None:
    server = scripted_server({"XCLIENT": "220 again"}, extensions=["XCLIENT NAME ADDR", "8BITMIME"])
    run = smtpbee(
        "send", "--server", f"127.0.0.1:{server.port}", *ENVELOPE, "--body", "x",
        "--xclient", "ADDR=192.0.2.1", "--json",
    )  # fmt: skip
    server.wait()
    assert run.returncode == 76, run.stderr
    assert as_json(run)["error"]["kind"] == "tls_required"
    assert "MAIL" not in verbs(server)


def test_xclient_refused_is_reported(scripted_server: Any) -> None:
    server = scripted_server(
        {"XCLIENT": "550 5.7.0 not authorized"}, extensions=["XCLIENT NAME ADDR", "8BITMIME"]
    )
    run = smtpbee(*send(server, *ENVELOPE, "--body", "x", "--xclient", "ADDR=192.0.2.1"))
    server.wait()
    assert run.returncode == 69, run.stderr
    assert "MAIL" not in verbs(server)


def test_probe_sends_xclient(scripted_server: Any) -> None:
    server = scripted_server({"XCLIENT": "220 again"}, extensions=["XCLIENT NAME ADDR"])
    run = smtpbee(
        "probe", "--server", f"127.0.0.1:{server.port}", "--tls", "none",
        "--xclient", "NAME=probe.example",
    )  # fmt: skip
    server.wait()
    assert run.returncode == 0, run.stderr
    assert verbs(server) == ["EHLO", "XCLIENT", "EHLO", "QUIT"]
    assert "xclient     220 again" in run.stdout


def test_proxy_v1_claims_the_real_addresses_by_default(scripted_server: Any) -> None:
    # The scripted server reads the PROXY line as a command; None: it says nothing to it.
    server = scripted_server({"PROXY": None})
    run = smtpbee(*send(server, *ENVELOPE, "--body", "x", "--proxy-protocol", "v1"))
    server.wait()
    assert run.returncode == 0, run.stderr
    proxy = server.commands[0]
    assert proxy.verb == "PROXY"
    family, source, destination, source_port, destination_port = proxy.argument.split()
    assert (family, source, destination) == ("TCP4", "127.0.0.1", "127.0.0.1")
    assert int(destination_port) == server.port
    assert int(source_port) == server.sessions[0].peer[1]


def test_proxy_v1_claims_what_it_is_told(scripted_server: Any) -> None:
    server = scripted_server({"PROXY": None})
    run = smtpbee(
        *send(server, *ENVELOPE, "--body", "x", "--proxy-protocol", "v1"),
        *("--proxy-source", "[2001:db8::7]:4444", "--proxy-destination", "[2001:db8::1]:25"),
    )
    server.wait()
    assert run.returncode == 0, run.stderr
    assert server.commands[0].argument == "TCP6 2001:db8::7 2001:db8::1 4444 25"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["--xclient", "ADDR"], 64),
        (["--xclient-after-tls"], 64),
        (["--proxy-source", "192.0.2.1:1"], 64),
        (["--proxy-protocol", "v1", "--proxy-source", "192.0.2.1"], 64),
        (["--proxy-protocol", "v3"], 64),
        (["--proxy-protocol", "v2", "--proxy-source", "192.0.2.1:1",
          "--proxy-destination", "[2001:db8::1]:25"], 65),
        (["--log", "/nonexistent/dir/log.jsonl"], 65),
    ],
)  # fmt: skip
def test_xclient_proxy_and_log_input_errors(
    scripted_server: Any, extra: list[str], code: int
) -> None:
    server = scripted_server()
    run = smtpbee(*send(server, *ENVELOPE, "--body", "x", *extra))
    assert run.returncode == code, run.stderr
    assert run.stderr.startswith("smtpbee: error: ")
    assert server.commands == []


# -- --log -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_log_is_written_also_when_the_send_fails(
    scripted_server: Any, tmp_path: Path, transport: str
) -> None:
    server = scripted_server({"RCPT": "550 5.1.1 no such user"})
    log = tmp_path / "session.jsonl"
    run = smtpbee(
        *send(server, *ENVELOPE, "--body", "x", "--log", str(log), "--transport", transport)
    )
    server.wait()
    assert run.returncode == 69, run.stderr
    header, *records = [json.loads(line) for line in log.read_text().splitlines()]
    assert header["smtpbee_log"] == 1
    assert header["server"] == f"127.0.0.1:{server.port}"
    sent = [r["data"] for r in records if r["dir"] == "C"]  # a pipelined write is one record
    assert sent[0].startswith("EHLO")
    assert "RCPT TO:<b@example.test>" in "\n".join(sent).splitlines()
    replies = [r["reply"]["code"] for r in records if r["dir"] == "S"]
    assert 550 in replies
    assert all(not r["unsafe"] for r in records)


def test_log_marks_the_unsafe_lines_and_redacts_the_password(
    scripted_server: Any, tmp_path: Path
) -> None:
    server = scripted_server(users={"alice": "wonderland"})
    log = tmp_path / "session.jsonl"
    run = smtpbee(
        *send(server, "--raw", "--raw-line", "NOOP", "--log", str(log)),
        *("--user", "alice", "--password", "wonderland", "--allow-insecure-auth"),
    )
    server.wait()
    assert run.returncode == 0, run.stderr
    text = log.read_text()
    assert "wonderland" not in text
    records = [json.loads(line) for line in text.splitlines()[1:]]
    [noop] = [r for r in records if r["dir"] == "C" and r["data"] == "NOOP"]
    assert noop["unsafe"] is True


def test_probe_writes_a_log(scripted_server: Any, tmp_path: Path) -> None:
    server = scripted_server()
    log = tmp_path / "probe.jsonl"
    run = smtpbee(
        "probe", "--server", f"127.0.0.1:{server.port}", "--tls", "none", "--log", str(log)
    )
    server.wait()
    assert run.returncode == 0, run.stderr
    lines = log.read_text().splitlines()
    assert json.loads(lines[0])["smtpbee_log"] == 1
    assert any(json.loads(line).get("data") == "QUIT" for line in lines[1:])


# -- against the Postfix of .ci/run ------------------------------------------------------


def _postfix_fact(name: str) -> str | None:
    for line in POSTFIX_ENV.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == f"SMTPBEE_POSTFIX_{name}":
            return value.strip()
    return None


def _claimed(prefix: str) -> str:
    return f"{prefix}.{secrets.randbelow(250) + 2}"


@pytest.mark.parametrize("after_tls", [False, True])
def test_postfix_takes_the_xclient_address(postfix: PostfixServer, after_tls: bool) -> None:
    port = _postfix_fact("XCLIENT_PORT")
    if port is None:
        pytest.skip("this Postfix allows no XCLIENT (an older .ci/postfix-start)")
    address, recipient = _claimed("192.0.2"), postfix.new_address("xclient")
    run = smtpbee(
        "send", "--server", f"{postfix.host}:{port}", "--cafile", postfix.cafile,
        "--from", f"sender@{postfix.domain}", "--to", recipient, "--subject", recipient,
        "--xclient", f"ADDR={address}", "--xclient", "NAME=claimed.example.test",
        *(["--xclient-after-tls"] if after_tls else []), "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert as_json(run)["xclient"]["code"] == 220
    delivered = postfix.wait_for_message(lambda content: recipient.encode() in content)
    assert f"[{address}]".encode() in delivered


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_postfix_takes_the_proxy_header(postfix: PostfixServer, version: str) -> None:
    port = _postfix_fact("PROXY_PORT")
    if port is None:
        pytest.skip("this Postfix has no PROXY listener (an older .ci/postfix-start)")
    address, recipient = _claimed("198.51.100"), postfix.new_address("proxy")
    run = smtpbee(
        "send", "--server", f"{postfix.host}:{port}", "--cafile", postfix.cafile,
        "--from", f"sender@{postfix.domain}", "--to", recipient, "--subject", recipient,
        "--proxy-protocol", version, "--proxy-source", f"{address}:40000",
        "--proxy-destination", f"127.0.0.1:{port}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    delivered = postfix.wait_for_message(lambda content: recipient.encode() in content)
    assert f"[{address}]".encode() in delivered


def test_postfix_proxy_v2_with_the_real_addresses(postfix: PostfixServer) -> None:
    port = _postfix_fact("PROXY_PORT")
    if port is None:
        pytest.skip("this Postfix has no PROXY listener (an older .ci/postfix-start)")
    run = smtpbee(
        "probe", "--server", f"{postfix.host}:{port}", "--cafile", postfix.cafile,
        "--proxy-protocol", "v2", "--quit-after", "TLS", "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = as_json(run)
    assert result["greeting"]["code"] == 220
    assert result["stopped"]["point"] == "TLS"


def test_postfix_quit_after_rcpt_and_pipelining_forced_off(postfix: PostfixServer) -> None:
    recipient = postfix.new_address("stop")
    run = smtpbee(
        "send", "--server", f"{postfix.host}:{postfix.port}", "--cafile", postfix.cafile,
        "--from", f"sender@{postfix.domain}", "--to", recipient, "--to", postfix.reject_address,
        "--body", "x", "--quit-after", "RCPT", "--no-pipeline", "--transcript", "--json",
    )  # fmt: skip
    # The last RCPT was refused: stopping there still says so.
    assert run.returncode == 69, run.stderr
    stopped = as_json(run)["stopped"]
    assert stopped["point"] == "RCPT" and stopped["reply"]["code"] == 550
    assert "C: DATA" not in run.stderr and "C: BDAT" not in run.stderr
    assert "C: QUIT" in run.stderr
