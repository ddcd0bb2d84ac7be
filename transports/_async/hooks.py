# smtpbee/transports/_async/hooks
#
# What each I/O framework fills in for the client of _async/client.py: open
# the connection, serve one request of a procedure, drop or close the
# connection, and a lock for one procedure at a time. The source of
# _sync/hooks.py (see _async/client.py).
#
# Here too: the unsafe path of a client (``client.unsafe``), the one way to
# smtpbee._unsafe; no other method of a client leads there.
from __future__ import annotations

import abc
from typing import Any, TypeVar

from smtpbee._replies import Reply
from smtpbee._requests import Procedure, Request
from smtpbee._unsafe import UnsafeSession
from smtpbee.transports._base import ClientBase

__all__ = ["AsyncHooks", "Unsafe"]

_T = TypeVar("_T")


class AsyncHooks(ClientBase, abc.ABC):
    """The hooks of a client; each transport's class implements them."""

    @property
    @abc.abstractmethod
    def _connected(self) -> bool:
        """Whether a connection is open."""

    @abc.abstractmethod
    async def _open(self) -> Any:
        """Open the connection (TCP, or take the given one); return the local address."""

    @abc.abstractmethod
    async def _serve(self, request: Request, body: Any) -> Any:
        """Answer one request of a procedure with the framework's I/O."""

    @abc.abstractmethod
    async def _abort(self) -> None:
        """Drop the connection at once."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection (no QUIT); safe to call twice."""

    @abc.abstractmethod
    async def _run(self, proc: Procedure[_T], body: Any = ()) -> _T:
        """Run a procedure to its end, one at a time (the client's loop)."""

    @property
    def unsafe(self) -> Unsafe:
        """The unsafe path: raw bytes, lines and bodies, exactly as given.

        For testing servers with what the safe methods refuse to send, and
        a TLS upgrade of its own (start_tls, for a STARTTLS sent raw). Its
        first use leaves the session unchecked: every safe method but quit()
        and close() is refused from then on, and what it writes is marked
        "C!" in the transcript.
        """
        return Unsafe(self)

    @abc.abstractmethod
    def _new_lock(self) -> Any:
        """A lock for one procedure at a time (for ``async with``)."""

    @property
    def _lock(self) -> Any:
        """The client's lock, made on first use (setdefault: one even if threads race)."""
        lock = self.__dict__.get("_client_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_client_lock", self._new_lock())
        return lock

    def _plain(self, exc: BaseException) -> BaseException:
        """The framework's I/O failure as the builtin one as_smtp_error maps."""
        return exc


class Unsafe:
    """A client's unsafe path (``client.unsafe``); see smtpbee.UnsafeSession."""

    def __init__(self, client: AsyncHooks) -> None:
        self._client = client

    def _session(self) -> UnsafeSession:
        return UnsafeSession(self._client.session.exchange)

    async def send_raw(self, data: bytes, *, replies: int = 1) -> list[Reply]:
        """Write ``data`` exactly, then read ``replies`` replies (0: none)."""
        return await self._client._run(self._session().send_raw(data, replies=replies))

    async def send_line(self, line: str | bytes, *, replies: int = 1) -> list[Reply]:
        """Write ``line`` (anything, CR, LF and NUL included) and CRLF; read the replies."""
        return await self._client._run(self._session().send_line(line, replies=replies))

    async def data_raw(self, body: bytes, *, terminator: bytes = b"\r\n.\r\n") -> Reply:
        """DATA, then ``body`` exactly (no dot-stuffing, no fixup) and ``terminator``."""
        proc = self._session().data_raw(body, terminator=terminator)
        return await self._client._run(proc)

    async def start_tls(self) -> bool:
        """The TLS handshake, after a STARTTLS sent here and its 220 read; whether verified.

        With the client's ssl_context and server_hostname; no EHLO follows.
        Bytes the server sent before the handshake raise StartTLSInjectionError.
        """
        return await self._client._run(self._session().start_tls())
