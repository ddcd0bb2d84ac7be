# smtpbee/transports/_async/hooks
#
# What each I/O framework fills in for the client of _async/client.py: open
# the connection, serve one request of a procedure, drop or close the
# connection, and a lock for one procedure at a time. The source of
# _sync/hooks.py (see _async/client.py).
from __future__ import annotations

import abc
from typing import Any

from smtpbee._requests import Request
from smtpbee.transports._base import ClientBase

__all__ = ["AsyncHooks"]


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
