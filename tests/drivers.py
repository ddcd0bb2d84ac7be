"""A hand-written transport for the session procedures: scripted reads, polls, handshakes.

``Script`` answers each request of a procedure the way a transport would, from a
script: what each Read returns (bytes, or an error to throw in), what each Poll
finds (None: nothing arrived unasked), whether a TLS handshake verified the
server, the pieces of the body; and it records every request, so a test can
assert what the client wrote.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from smtpbee import ConnectionLostError, Poll, PullBody, Read, UpgradeTLS, Write

__all__ = ["Script"]


@dataclass
class Script:
    """A server as a script, serving one procedure at a time (``run``)."""

    reads: list[bytes | BaseException] = field(default_factory=list)
    body: Iterable[bytes] = ()
    tls_verified: bool = True
    polls: list[bytes | None] = field(default_factory=list)
    fail_write_containing: bytes | None = None
    requests: list[Any] = field(default_factory=list)

    def run(self, proc: Any) -> Any:
        chunks = iter(self.body)
        result: Any = None
        throw: BaseException | None = None
        while True:
            try:
                request = proc.throw(throw) if throw is not None else proc.send(result)
            except StopIteration as stop:
                return stop.value
            throw = None
            result = None
            self.requests.append(request)
            if isinstance(request, Read):
                item = self.reads.pop(0)
                if isinstance(item, BaseException):
                    throw = item
                else:
                    result = item
            elif isinstance(request, Write):
                marker = self.fail_write_containing
                if marker is not None and marker in request.data:
                    throw = ConnectionLostError("connection reset while writing")
            elif isinstance(request, UpgradeTLS):
                result = self.tls_verified
            elif isinstance(request, PullBody):
                result = next(chunks, b"")
            elif isinstance(request, Poll):
                result = self.polls.pop(0) if self.polls else None
            else:  # pragma: no cover - a new request type would need serving here
                raise AssertionError(f"unknown request {request!r}")

    @property
    def written(self) -> bytes:
        return b"".join(r.data for r in self.requests if isinstance(r, Write))
