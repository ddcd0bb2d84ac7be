# smtpbee/_session_log
#
# A session as data: SessionLog records what went over the wire, one record
# per event, in the JSON-lines format that `smtpbee replay` and
# smtpbee.testing.replay() read back.
#
# Format
# ------
# The first line is a header object, every other line one record:
#
#   {"smtpbee_log": 1, "server": "host:port", "started": "<ISO 8601>", ...}
#   {"t": 0.0012, "dir": "S", "tls": false, "unsafe": false,
#    "data": "220 mx.example ESMTP", "bytes_b64": "MjIw...",
#    "reply": {"code": 220, "enhanced": null, "lines": ["mx.example ESMTP"]},
#    "state": "CONNECTED"}
#
#   t          seconds since the log was created (the session's start)
#   dir        "C" (a write of the client), "S" (a reply) or "event"
#   tls        whether the connection was encrypted at that moment
#   unsafe     whether the write went through the unsafe path
#   data       the text a person reads: the transcript lines of a write (joined
#              by newlines), the lines of a reply, or what an event says;
#              escaped as the transcript escapes, secrets redacted
#   bytes_b64  the exact bytes (base64), left out when the write carried a
#              secret (an AUTH initial response, an answer to a challenge)
#   reply      for "S": code, enhanced status and the text of each line
#   state      the Connection's state name after the event
#   event      for "event": "tls-handshake", "connect", "close", "stopped",
#              "error"... (an event may carry more keys of its own)
#
# The recorder does no I/O: writing the file belongs to the caller (the CLI's
# --log FILE). The Exchange decides what is secret: the client's AUTH
# responses always; the server's challenges only for mechanisms other than
# PLAIN, LOGIN, CRAM-MD5, XOAUTH2 and OAUTHBEARER (a SCRAM server-first and
# server-final message, with the salt and the server's signature, would allow
# an offline guess of the password; the others' challenges reveal nothing,
# and a replay has to send them again).
from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeAlias

from ._errors import InvalidInputError
from ._replies import EnhancedStatus, Reply, escape_text

__all__ = ["LOG_VERSION", "SessionLog"]

LOG_VERSION = 1
"""The format version in every header line (``"smtpbee_log": 1``)."""

Record: TypeAlias = dict[str, Any]
Detail: TypeAlias = str | int | float | bool | None


class SessionLog:
    """The recorder of one session: every write, every reply, TLS and the end.

    Give one to a client (``session_log=``) or to an `Exchange`; read
    ``records`` afterwards, or save ``to_jsonl()``. Nothing here touches a
    file or a socket.

    Args:
        server: where the session went, as ``"host:port"`` (the header's ``server``).
        clock: seconds on a monotonic clock; ``t`` counts from its value now.
        started: the header's start time (ISO 8601); default: now, in UTC.

    Attributes:
        header: the first line's object (``smtpbee_log``, ``server``,
            ``started``); add keys of your own before saving.
        records: the records, in order (dicts, as in the JSON lines).
    """

    def __init__(
        self,
        server: str = "",
        *,
        clock: Callable[[], float] = time.monotonic,
        started: str | None = None,
    ) -> None:
        if started is None:
            started = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.header: dict[str, Any] = {
            "smtpbee_log": LOG_VERSION,
            "server": server,
            "started": started,
        }
        self.records: list[Record] = []
        self._clock = clock
        self._start = clock()

    def __repr__(self) -> str:
        return f"<SessionLog {self.header.get('server') or '?'}: {len(self.records)} records>"

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    # -- recording ---------------------------------------------------------------------

    def _record(
        self, direction: str, *, tls: bool, unsafe: bool, data: str, raw: bytes | None, state: str
    ) -> Record:
        record: Record = {
            "t": round(self._clock() - self._start, 6),
            "dir": direction,
            "tls": tls,
            "unsafe": unsafe,
            "data": data,
        }
        if raw is not None:
            record["bytes_b64"] = base64.b64encode(raw).decode("ascii")
        record["reply"] = None
        record["state"] = state
        self.records.append(record)
        return record

    def sent(
        self,
        raw: bytes | None,
        text: str | None = None,
        *,
        tls: bool,
        state: str,
        unsafe: bool = False,
    ) -> Record:
        """Record a write of the client.

        Args:
            raw: the bytes written, or None when they carry a secret.
            text: what a person reads (the transcript lines, secrets
                redacted); default: ``raw`` decoded and escaped.
            tls: whether the connection is encrypted.
            state: the Connection's state name after the write.
            unsafe: whether the write went through the unsafe path.
        """
        if text is None:
            text = escape_text((raw or b"").decode("utf-8", "replace").removesuffix("\r\n"))
        return self._record("C", tls=tls, unsafe=unsafe, data=text, raw=raw, state=state)

    def received(
        self, raw: bytes | None, reply: Reply, *, tls: bool, state: str, redacted: bool = False
    ) -> Record:
        """Record a reply of the server: its exact bytes and its parsed form.

        ``redacted`` hides an AUTH challenge that could help guess the
        password (the text becomes ``<challenge>``, the bytes are left out).
        """
        if redacted:
            lines = ["<challenge>"]
            raw = None
        else:
            lines = [escape_text(line.decode("utf-8", "replace")) for line in reply.lines]
        last = len(lines) - 1
        code = reply.code
        text = "\n".join(
            f"{code}{' ' if i == last else '-'}{line}".rstrip() for i, line in enumerate(lines)
        )
        record = self._record("S", tls=tls, unsafe=False, data=text, raw=raw, state=state)
        enhanced = str(reply.enhanced) if reply.enhanced is not None else None
        record["reply"] = {"code": code, "enhanced": enhanced, "lines": lines}
        return record

    def event(
        self,
        name: str,
        *,
        tls: bool,
        state: str,
        data: str = "",
        raw: bytes | None = None,
        details: Mapping[str, Detail] | None = None,
    ) -> Record:
        """Record an event: a TLS handshake, a connect, a close, a stop, an error.

        ``details`` become keys of the record (``{"verified": True}``,
        ``{"by": "server"}``); they never replace the keys of the format.
        """
        record = self._record("event", tls=tls, unsafe=False, data=data, raw=raw, state=state)
        record["event"] = name
        for key, value in (details or {}).items():
            record.setdefault(key, value)
        return record

    # -- reading and writing -------------------------------------------------------------

    def to_jsonl(self) -> str:
        """The log as JSON lines: the header, then one record per line."""
        lines = [json.dumps(self.header, ensure_ascii=False)]
        lines += [json.dumps(record, ensure_ascii=False) for record in self.records]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_jsonl(cls, text: str) -> SessionLog:
        """Read a log that `to_jsonl` wrote.

        Raises:
            InvalidInputError: not a session log (no header line, a line that
                is not a JSON object, a record without a known ``dir``).
        """
        objects: list[dict[str, Any]] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise InvalidInputError(f"line {number}: not JSON ({exc})") from None
            if not isinstance(value, dict):
                raise InvalidInputError(f"line {number}: not a JSON object")
            objects.append(value)
        if not objects or objects[0].get("smtpbee_log") != LOG_VERSION:
            raise InvalidInputError(
                f'not an smtpbee session log: the first line must be {{"smtpbee_log": {LOG_VERSION}'
                ", ...}"
            )
        return cls.from_records(objects[1:], header=objects[0])

    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]], *, header: Mapping[str, Any] | None = None
    ) -> SessionLog:
        """A log holding these records (checked as `from_jsonl` checks lines).

        Raises:
            InvalidInputError: a record is not a mapping or has no known ``dir``.
        """
        log = cls(started=str(header.get("started", "")) if header else "")
        if header:
            log.header.update(header)
        for index, record in enumerate(records):
            if not isinstance(record, Mapping) or record.get("dir") not in ("C", "S", "event"):
                raise InvalidInputError(f"record {index}: not a session log record")
            log.records.append(dict(record))
        return log

    @staticmethod
    def bytes_of(record: Mapping[str, Any]) -> bytes | None:
        """The exact bytes of a record, or None when it has none (redacted, or an event).

        Raises:
            InvalidInputError: ``bytes_b64`` is not valid base64.
        """
        encoded = record.get("bytes_b64")
        if encoded is None:
            return None
        try:
            return base64.b64decode(str(encoded), validate=True)
        except binascii.Error:
            raise InvalidInputError(f"bytes_b64 is not base64: {encoded!r}") from None

    @staticmethod
    def reply_of(record: Mapping[str, Any]) -> Reply | None:
        """The Reply of an ``"S"`` record, rebuilt from its ``reply`` object (None if absent).

        Raises:
            InvalidInputError: the ``reply`` object is malformed.
        """
        value = record.get("reply")
        if value is None:
            return None
        try:
            enhanced = value.get("enhanced")
            status = None
            if enhanced is not None:
                klass, subject, detail = (int(part) for part in str(enhanced).split("."))
                status = EnhancedStatus(klass, subject, detail)
            lines = tuple(str(line).encode("utf-8") for line in value["lines"])
            return Reply(code=int(value["code"]), lines=lines, enhanced=status)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"not a reply: {value!r} ({exc})") from None
