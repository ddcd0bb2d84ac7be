"""The message `smtpbee send` shapes: the default message, --header, --add-header, --data.

The helpers are checked directly (headers parsed back with the email package)
and through the command line against a scripted server, whose stored message
is what the client really sent.
"""

from __future__ import annotations

import email.policy
import email.utils
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from smtpbee import __version__
from smtpbee.cli import build_parser
from smtpbee.cli._compose import DEFAULT_BODY, message_bytes, parse_header, substitute
from smtpbee.cli._output import InputError, UsageError
from test_cli import scripted, smtpbee

SEND = ["send", "--server", "127.0.0.1:9", "--from", "a@example.test", "--to", "b@example.test"]


def shaped(*extra: str) -> bytes:
    """The message bytes `smtpbee send SEND EXTRA` would send."""
    return message_bytes(build_parser().parse_args([*SEND, *extra]))


def parsed(data: bytes) -> Any:
    return BytesParser(policy=email.policy.SMTP).parsebytes(data)


def text(msg: Any) -> str:
    content: str = msg.get_content()
    return content.replace("\r\n", "\n")


def header_names(data: bytes) -> list[str]:
    return list(parsed(data).keys())


# -- the default message -----------------------------------------------------------------


def test_the_default_message_has_valid_date_message_id_from_to_and_subject() -> None:
    data = shaped("--header", "X-Tag: 1")
    msg = parsed(data)
    assert msg["From"] == "a@example.test"
    assert msg["To"] == "b@example.test"
    date = email.utils.parsedate_to_datetime(msg["Date"])
    assert date.tzinfo is not None
    assert msg["Subject"] == f"test {msg['Date']}"
    message_id = msg["Message-ID"]
    assert message_id.startswith("<") and message_id.endswith("@example.test>")
    assert email.utils.parseaddr(message_id)[1].count("@") == 1
    assert msg["X-Mailer"] == f"smtpbee {__version__}"
    assert text(msg) == DEFAULT_BODY
    assert "smtpbee" in DEFAULT_BODY
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert not msg.defects


def test_the_message_id_takes_the_helo_name_first() -> None:
    msg = parsed(shaped("--subject", "s", "--helo", "client.example.net"))
    assert msg["Message-ID"].endswith("@client.example.net>")


def test_the_null_sender_gives_no_from_and_a_subject_keeps_the_default_body() -> None:
    args = build_parser().parse_args(
        ["send", "--server", "h", "--from", "", "--to", "b@example.test", "--subject", "Hi"]
    )
    msg = parsed(message_bytes(args))
    assert "From" not in msg
    assert msg["Subject"] == "Hi"
    assert text(msg) == DEFAULT_BODY


def test_an_explicitly_empty_body_stays_empty() -> None:
    assert text(parsed(shaped("--body", ""))).strip() == ""


# -- --header and --add-header -----------------------------------------------------------


def test_header_replaces_every_field_of_that_name_in_place() -> None:
    data = shaped("--subject", "old", "--header", "subject: new", "--header", "X-New: added")
    names = header_names(data)
    assert [n for n in names if n.lower() == "subject"] == ["subject"]
    assert names.index("subject") == 2  # where Subject was: From, To, Subject
    assert names[-1] == "X-New"
    msg = parsed(data)
    assert msg["Subject"] == "new"
    assert msg["X-New"] == "added"


def test_add_header_adds_even_a_second_subject() -> None:
    data = shaped("--subject", "one", "--add-header", "Subject: two", "--add-header", "X-A: 1")
    msg = parsed(data)
    assert msg.get_all("Subject") == ["one", "two"]
    assert header_names(data)[-2:] == ["Subject", "X-A"]


def test_header_with_a_non_ascii_value_is_encoded() -> None:
    data = shaped("--header", "Subject: Grüße")
    assert data.isascii()
    assert parsed(data)["Subject"] == "Grüße"


def test_header_edits_a_given_message_and_leaves_its_body_alone(tmp_path: Path) -> None:
    body = b"line one\r\n.leading dot\r\nbare\rcr and bare\nlf\r\n"
    message = b"From: a@example.test\r\nSubject: old\r\nX-Keep: spaced   value\r\n\r\n" + body
    path = tmp_path / "m.eml"
    path.write_bytes(message)
    data = shaped("--message", str(path), "--header", "Subject: new", "--add-header", "X-B: 2")
    assert data == (
        b"From: a@example.test\r\nSubject: new\r\nX-Keep: spaced   value\r\nX-B: 2\r\n\r\n" + body
    )
    # Without edits the message goes exactly as it is.
    assert shaped("--message", str(path)) == message


def test_a_message_with_lf_line_ends_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(b"Subject: old\nX-A: 1\n\nbody\n")
    data = shaped("--message", str(path), "--header", "X-A: 2")
    assert data == b"Subject: old\nX-A: 2\n\nbody\n"


def test_a_message_without_a_header_section_cannot_be_edited(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(b"just text, no headers\r\n\r\nmore\r\n")
    with pytest.raises(InputError, match="not a header field"):
        shaped("--message", str(path), "--header", "X-A: 1")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("X-Evil: a\r\nBcc: victim@example.test", InputError),
        ("X-Evil: a\nb", InputError),
        ("X-Evil\r\nBcc: x: y", InputError),
        ("X-Nul: a\0b", InputError),
        ("no colon here", UsageError),
        (": no name", UsageError),
        ("Two Words: value", UsageError),
    ],
)
def test_parse_header_refuses(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_header(text, "--header")


def test_parse_header_strips_the_space_after_the_colon() -> None:
    assert parse_header("X-A:   value  ", "--header") == ("X-A", "value")
    assert parse_header("X-Empty:", "--header") == ("X-Empty", "")


# -- --data and its tokens ---------------------------------------------------------------


def test_substitute_replaces_known_tokens_and_keeps_the_rest() -> None:
    template = b"%A% %B% %UNKNOWN% 100% %lower% %%"
    assert (
        substitute(template, {"A": "x", "B": "\u00fc"})
        == "x \u00fc %UNKNOWN% 100% %lower% %%".encode()
    )


def test_data_template_gets_the_envelope(tmp_path: Path) -> None:
    template = tmp_path / "t.eml"
    template.write_bytes(
        b"From: %FROM_ADDRESS%\r\nTo: %TO_ADDRESS%\r\nDate: %DATE%\r\n"
        b"Message-ID: <%MESSAGEID%>\r\nSubject: %SUBJECT%\r\nX-Helo: %HELO%\r\n"
        b"X-Version: %SMTPBEE_VERSION%\r\nX-Other: %NOT_A_TOKEN%\r\n\r\n%BODY%"
    )
    data = shaped(
        "--to", "c@example.test", "--data", str(template), "--helo", "me.example",
        "--body", "the body\r\n",
    )  # fmt: skip
    msg = parsed(data)
    assert msg["From"] == "a@example.test"
    assert msg["To"] == "b@example.test, c@example.test"
    assert email.utils.parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert msg["Message-ID"].endswith("@me.example>")
    assert msg["Subject"] == f"test {msg['Date']}"
    assert msg["X-Helo"] == "me.example"
    assert msg["X-Version"] == __version__
    assert msg["X-Other"] == "%NOT_A_TOKEN%"
    assert data.endswith(b"\r\n\r\nthe body\r\n")


def test_data_with_subject_and_header(tmp_path: Path) -> None:
    template = tmp_path / "t.eml"
    template.write_bytes(b"Subject: %SUBJECT%\nX-A: 1\n\n%BODY%\n")
    data = shaped("--data", str(template), "--subject", "given", "--header", "X-A: 2")
    assert data == f"Subject: given\nX-A: 2\n\n{DEFAULT_BODY}\n".encode()


# -- through the command line ------------------------------------------------------------


def test_send_the_default_message_with_edits(scripted_server: Any) -> None:
    server = scripted(scripted_server)
    run = smtpbee(
        "send", "--server", f"127.0.0.1:{server.port}", "--tls", "none",
        "--from", "a@example.test", "--to", "b@example.test",
        "--header", "Subject: from the cli", "--add-header", "X-Trace: one",
        "--add-header", "X-Trace: two",
    )  # fmt: skip
    server.wait()
    assert run.returncode == 0, run.stderr
    [message] = server.messages
    msg = parsed(message.content)
    assert msg["Subject"] == "from the cli"
    assert msg.get_all("X-Trace") == ["one", "two"]
    assert msg["Date"] and msg["Message-ID"]


def test_send_data_from_stdin(scripted_server: Any) -> None:
    server = scripted(scripted_server)
    run = smtpbee(
        "send", "--server", f"127.0.0.1:{server.port}", "--tls", "none",
        "--from", "a@example.test", "--to", "b@example.test", "--data", "-",
        stdin=b"To: %TO_ADDRESS%\r\nSubject: %SUBJECT%\r\n\r\nhi %FROM_ADDRESS%\r\n",
    )  # fmt: skip
    server.wait()
    assert run.returncode == 0, run.stderr
    [message] = server.messages
    assert message.content.startswith(b"To: b@example.test\r\nSubject: test ")
    assert message.content.endswith(b"\r\n\r\nhi a@example.test\r\n")


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (["--header", "X-Evil: a\r\nRCPT TO:<x@example.test>"], 65),
        (["--add-header", "X-Evil: a\nb"], 65),
        (["--header", "Bad Name: x"], 64),
        (["--add-header", "nocolon"], 64),
        (["--data", "/nonexistent/template"], 65),
        (["--data", "-", "--message", "-"], 64),
        (["--data", "-", "--attach", "/etc/hostname"], 64),
    ],
)
def test_bad_shaping_options_are_refused_before_connecting(
    scripted_server: Any, extra: list[str], code: int
) -> None:
    server = scripted(scripted_server)
    run = smtpbee(
        "send", "--server", f"127.0.0.1:{server.port}", "--tls", "none",
        "--from", "a@example.test", "--to", "b@example.test", *extra, "--json",
    )  # fmt: skip
    assert run.returncode == code, run.stderr
    assert run.stderr.startswith("smtpbee: error: ")
    assert server.commands == []
