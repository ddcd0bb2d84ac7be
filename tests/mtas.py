# tests/mtas: the real MTAs besides Postfix that the integration tests talk to.
#
# Each one is a private instance that a script under .ci/ starts on 127.0.0.1 (see the
# script for what it offers and why), with its facts in an env file of KEY=VALUE lines:
#
# - Exim 4 (.ci/exim-start): STARTTLS on 8026, implicit TLS on 8466, AUTH PLAIN, LOGIN
#   and CRAM-MD5 over TLS, PIPELINING, CHUNKING, SMTPUTF8, DSN; one maildir, stored with
#   CRLF line ends.
# - OpenSMTPD 6.8 (.ci/opensmtpd-start): plaintext on 8027; its STARTTLS listener (8028)
#   cannot finish a handshake with Debian 12's OpenSSL 3, hence no AUTH either; no
#   PIPELINING, CHUNKING or SMTPUTF8 in that version. One maildir, LF line ends.
# - Dovecot's LMTP server (.ci/lmtp-start): LMTP on 8024 and on a Unix socket; a maildir
#   per recipient, LF line ends; one address refused at RCPT, one over quota (refused
#   after the content, alone among the recipients).
#
# `MTA` reads an env file and polls the maildirs; `require` gives the fixtures their
# skip (locally) or failure (CI=true) when an instance is not running.
"""Real MTAs on loopback for the integration tests: Exim, OpenSMTPD, Dovecot LMTP."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn

import pytest

__all__ = ["ENV_FILES", "MTA", "MTAName", "require"]

MTAName = Literal["exim", "opensmtpd", "lmtp"]

ENV_FILES: dict[MTAName, Path] = {
    "exim": Path(os.environ.get("SMTPBEE_EXIM_ENV", "/tmp/smtpbee-exim/env")),
    "opensmtpd": Path(os.environ.get("SMTPBEE_OPENSMTPD_ENV", "/tmp/smtpbee-opensmtpd/env")),
    "lmtp": Path(os.environ.get("SMTPBEE_LMTP_ENV", "/tmp/smtpbee-lmtp/env")),
}
"""Where each start script writes its facts."""

_START_SCRIPTS: dict[MTAName, str] = {
    "exim": ".ci/exim-start",
    "opensmtpd": ".ci/opensmtpd-start",
    "lmtp": ".ci/lmtp-start",
}
_PREFIXES: dict[MTAName, str] = {
    "exim": "SMTPBEE_EXIM_",
    "opensmtpd": "SMTPBEE_OPENSMTPD_",
    "lmtp": "SMTPBEE_LMTP_",
}
_REQUIRED_FACTS = ("HOST", "PORT", "DOMAIN", "REJECT", "VERSION")
_LOOPBACK = frozenset({"127.0.0.1", "::1"})

# How much of a delivered file is read to find its Message-ID.
_HEAD_BYTES = 64 * 1024

# What an MTA puts in front of the message when it delivers it.
_TRACE_HEADERS = (b"return-path:", b"x-original-to:", b"delivered-to:", b"received:")


@dataclass
class MTA:
    """One running MTA, as its start script described it.

    Attributes:
        name: ``exim``, ``opensmtpd`` or ``lmtp``.
        host: Where it listens (127.0.0.1).
        port: Its SMTP port (STARTTLS offered when ``starttls``), or its LMTP port.
        mail_root: The maildir (Exim, OpenSMTPD), or the directory holding one maildir
            per recipient, named by the address in lower case (LMTP).
        domain: The domain it delivers (``example.test``).
        reject_address: The recipient it refuses at RCPT with 550.
        version: The Debian package's version.
        smtps_port: Its implicit-TLS port, if it has one.
        tls_port: The port whose STARTTLS is tried (OpenSMTPD's separate listener).
        starttls: Whether STARTTLS completes (False for OpenSMTPD 6.8 with OpenSSL 3).
        username: The test account for AUTH, if it offers AUTH.
        password: That account's password.
        cafile: PEM of the CA that signed its certificate, if it has TLS.
        full_address: A recipient whose mailbox is over quota (LMTP only).
        socket_path: Its Unix socket (LMTP only).
        log: Its log file, for a failing test to point at.
        client_context: A client context trusting ``cafile`` (None without one).
    """

    name: MTAName
    host: str
    port: int
    mail_root: Path
    domain: str
    reject_address: str
    version: str
    smtps_port: int | None = None
    tls_port: int | None = None
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    full_address: str | None = None
    socket_path: str | None = None
    log: str | None = None
    client_context: ssl.SSLContext | None = field(default=None, init=False, repr=False)
    _serial: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.host not in _LOOPBACK:
            raise ValueError(f"test servers listen on 127.0.0.1 or ::1 only, not {self.host!r}")
        if self.cafile:
            self.client_context = ssl.create_default_context(cafile=self.cafile)

    @property
    def lmtp(self) -> bool:
        return self.name == "lmtp"

    @property
    def per_recipient(self) -> bool:
        """Whether each recipient has a maildir of its own (LMTP)."""
        return self.lmtp

    @classmethod
    def from_env_file(cls, name: MTAName, path: Path) -> MTA:
        """Read the KEY=VALUE file that the MTA's start script writes.

        Raises:
            ValueError: A fact is missing (the file is from an older script).
        """
        prefix = _PREFIXES[name]
        facts: dict[str, str] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip().startswith(prefix):
                facts[key.strip().removeprefix(prefix)] = value.strip()
        missing = [prefix + key for key in _REQUIRED_FACTS if not facts.get(key)]
        if "MAILDIR" not in facts and "MAIL" not in facts:
            missing.append(prefix + "MAILDIR")
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}; run {_START_SCRIPTS[name]} again")

        def port(key: str) -> int | None:
            return int(facts[key]) if facts.get(key) else None

        return cls(
            name=name,
            host=facts["HOST"],
            port=int(facts["PORT"]),
            mail_root=Path(facts.get("MAILDIR") or facts["MAIL"]),
            domain=facts["DOMAIN"],
            reject_address=facts["REJECT"],
            version=facts["VERSION"],
            smtps_port=port("SMTPS_PORT"),
            tls_port=port("TLS_PORT") or (port("PORT") if name == "exim" else None),
            # Exim's STARTTLS was checked by its start script; OpenSMTPD's says.
            starttls=name == "exim" or facts.get("TLS") == "ok",
            username=facts.get("USER"),
            password=facts.get("PASSWORD"),
            cafile=facts.get("CAFILE"),
            full_address=facts.get("FULL"),
            socket_path=facts.get("SOCKET"),
            log=facts.get("LOG"),
        )

    def greeting(self, timeout: float = 5.0) -> bytes:
        """Connect, read the greeting line, say QUIT; raises OSError if it is down."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            line = sock.makefile("rb").readline(1024)
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
        return line

    def new_address(self, tag: str = "rcpt") -> str:
        """Return a recipient no other test in this run uses, e.g. ``rcpt-3-…@example.test``."""
        self._serial += 1
        return f"{tag}-{self._serial}-{time.time_ns()}@{self.domain}"

    def maildir(self, recipient: str | None = None) -> Path:
        """The maildir a recipient's copy lands in (LMTP: that recipient's own)."""
        if self.per_recipient:
            if recipient is None:
                raise ValueError(f"{self.name} has a maildir per recipient: name one")
            return self.mail_root / recipient.lower()
        return self.mail_root

    def delivered(self, recipient: str | None = None) -> list[Path]:
        """Every message file delivered (to ``recipient``'s maildir if given), by name."""
        if recipient is not None or not self.per_recipient:
            maildirs = [self.maildir(recipient)]
        else:
            maildirs = [p for p in self.mail_root.iterdir() if p.is_dir()]
        files: list[Path] = []
        for maildir in maildirs:
            for sub in ("new", "cur"):
                directory = maildir / sub
                if directory.is_dir():
                    files.extend(p for p in directory.iterdir() if p.is_file())
        return sorted(files, key=lambda p: p.name)

    def wait_for_messages(
        self,
        match: str | Callable[[bytes], bool],
        count: int = 1,
        *,
        recipient: str | None = None,
        timeout: float = 30.0,
    ) -> list[tuple[Path, bytes]]:
        """Poll until ``count`` delivered messages match; return their paths and bytes.

        Args:
            match: A Message-ID (with or without angle brackets), matched against the
                Message-ID header, or a predicate over the delivered bytes.
            count: How many copies to wait for (a single maildir gets one per
                recipient).
            recipient: Look only in this recipient's maildir (LMTP).
            timeout: Seconds to keep polling.

        Raises:
            TimeoutError: Fewer matched in time.
        """
        by_id = isinstance(match, str)
        predicate = _message_id_matcher(match) if isinstance(match, str) else match
        deadline = time.monotonic() + timeout
        found: dict[Path, bytes] = {}
        # A delivered file never changes, so each poll reads only the new arrivals.
        checked: set[Path] = set()
        while True:
            for path in self.delivered(recipient):
                if path in checked:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if by_id:
                        # The header is near the start: a 50 MB file is read whole
                        # only when it is the one.
                        with path.open("rb") as file:
                            head = file.read(_HEAD_BYTES)
                        if predicate(head):
                            found[path] = path.read_bytes()
                    elif predicate(content := path.read_bytes()):
                        found[path] = content
                    checked.add(path)
            if len(found) >= count:
                return sorted(found.items())
            if time.monotonic() >= deadline:
                where = self.maildir(recipient) if recipient else self.mail_root
                raise TimeoutError(
                    f"{len(found)} of {count} messages matched within {timeout}s "
                    f"({len(checked)} checked in {where}; log: {self.log})"
                )
            time.sleep(0.05)

    def wait_for_message(
        self,
        match: str | Callable[[bytes], bool],
        *,
        recipient: str | None = None,
        timeout: float = 30.0,
    ) -> bytes:
        """The bytes of the first delivered message that matches (see wait_for_messages)."""
        return self.wait_for_messages(match, recipient=recipient, timeout=timeout)[0][1]

    @staticmethod
    def original_bytes(delivered: bytes) -> bytes:
        """Undo what delivery added: drop the leading trace headers, restore CRLF.

        A file stored with CRLF line ends (Exim here) is cut at CRLF, so what is left
        is byte for byte what the MTA received; one stored with LF is cut at LF and
        joined with CRLF.
        """
        first = delivered.find(b"\n")
        newline = b"\r\n" if first > 0 and delivered[first - 1 : first] == b"\r" else b"\n"
        lines = delivered.split(newline)
        index = 0
        while index < len(lines) and lines[index].lower().startswith(_TRACE_HEADERS):
            index += 1
            while index < len(lines) and lines[index][:1] in (b" ", b"\t"):
                index += 1
        return b"\r\n".join(lines[index:])

    @staticmethod
    def trace_headers(delivered: bytes) -> bytes:
        """The trace headers the MTA put in front of the message, unfolded as stored."""
        head = delivered[: len(delivered) - len(MTA.original_bytes(delivered))]
        return head if b"\r\n" in head else head.replace(b"\n", b"\r\n")


def _message_id_matcher(message_id: str) -> Callable[[bytes], bool]:
    bare = message_id.strip().removeprefix("<").removesuffix(">").encode("utf-8")
    pattern = re.compile(
        rb"^message-id:[ \t]*<" + re.escape(bare) + rb">[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
    )

    def matches(content: bytes) -> bool:
        end = content.find(b"\n\n")
        if end < 0:
            end = content.find(b"\r\n\r\n")
        headers = content if end < 0 else content[:end]
        return pattern.search(headers) is not None

    return matches


def require(name: MTAName) -> MTA:
    """The MTA its start script runs; skips (or, with CI=true, fails) when it is absent."""
    in_ci = os.environ.get("CI") == "true"
    path = ENV_FILES[name]
    script = _START_SCRIPTS[name]

    def unavailable(reason: str) -> NoReturn:
        reason += f"; start it with `sudo bash {script}`"
        if in_ci:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)

    if not path.is_file():
        return unavailable(f"{name} is not running ({path} is missing)")
    mta = MTA.from_env_file(name, path)
    try:
        greeting = mta.greeting()
    except OSError as error:
        return unavailable(f"{name} at {mta.host}:{mta.port} does not answer: {error}")
    if not greeting.startswith(b"220"):
        return unavailable(f"{name} at {mta.host}:{mta.port} greeted {greeting!r}")
    return mta
