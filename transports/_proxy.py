# smtpbee/transports/_proxy
#
# Connecting through a proxy: SOCKS5, SOCKS4 or HTTP CONNECT, for every transport.
#
# Theory of operation
# -------------------
# ``proxy="socks5://user:pass@host:port"`` is parsed and checked when the client
# is built (ProxyURL), so a typo fails there. The client's _open() then asks the
# proxy for a tunnel to the SMTP server with python-socks (the optional extra
# ``smtpbee[proxy]``), one backend per transport: connect_sync, connect_asyncio,
# connect_trio. Each returns a plain TCP socket already connected, through the
# proxy, to the server; everything after it (implicit TLS, STARTTLS, the
# certificate checked against the server's name, never the proxy's) is what it
# is without a proxy.
#
# Decisions:
#   * python-socks is imported only inside the connect helpers: a client without
#     a proxy never loads it. Whether it is installed is checked (without
#     importing it) when a client with a proxy is built.
#   * The SMTP server's name is sent to a SOCKS5 or HTTP proxy as it is, so the
#     proxy resolves it (SOCKS4 has no names: it is resolved here).
#   * ``source_address`` applies to the one connection the client makes: the
#     one to the proxy.
#   * The proxy's credentials never leave ProxyURL: its str() and repr() show
#     "***" for them, and so do the errors and the log.
#   * A proxy that refuses the connection, the login or the tunnel is a
#     ConnectionLostError (the proxy's error as its cause); one that does not
#     answer in time (connect_timeout) an SMTPTimeoutError.
#
# Invariant: nothing here reads or writes SMTP.
from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from smtpbee._errors import ConnectionLostError, InvalidInputError

if TYPE_CHECKING:
    import trio
    from python_socks import ProxyType

__all__ = ["PROXY_SCHEMES", "ProxyURL", "parse_proxy"]

PROXY_SCHEMES = ("socks5", "socks4", "http")
"""The proxy URL schemes: SOCKS5, SOCKS4 and HTTP CONNECT."""

_INSTALL_HINT = "a proxy needs python-socks: install it with `pip install 'smtpbee[proxy]'`"

_log = logging.getLogger("smtpbee.connection")


@dataclass(frozen=True, slots=True)
class ProxyURL:
    """A checked proxy URL; str() and repr() never show its credentials.

    Attributes:
        scheme: "socks5", "socks4" or "http" (HTTP CONNECT).
        host: the proxy's name or address.
        port: the proxy's port.
        username: the user name (SOCKS4: the user id), percent-decoded, or None.
        password: the password, percent-decoded, or None.
    """

    scheme: str
    host: str
    port: int
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        login = "***@" if self.username is not None else ""
        return f"{self.scheme}://{login}{host}:{self.port}"

    def __repr__(self) -> str:
        return f"ProxyURL({str(self)!r})"

    # -- connecting ------------------------------------------------------------------------

    def connect_sync(
        self, host: str, port: int, timeout: float, source: tuple[str, int] | None
    ) -> socket.socket:
        """A blocking socket connected to ``host:port`` through the proxy."""
        with self._failures(host, port):
            from python_socks.sync import Proxy

            proxy = Proxy(self._type(), self.host, self.port, self.username, self.password)
            return proxy.connect(host, port, timeout=timeout, local_addr=source)

    async def connect_asyncio(
        self, host: str, port: int, timeout: float, source: tuple[str, int] | None
    ) -> socket.socket:
        """A non-blocking socket connected to ``host:port`` through the proxy."""
        with self._failures(host, port):
            from python_socks.async_.asyncio import Proxy

            proxy = Proxy(self._type(), self.host, self.port, self.username, self.password)
            return await proxy.connect(host, port, timeout=timeout, local_addr=source)

    async def connect_trio(
        self, host: str, port: int, timeout: float, source: tuple[str, int] | None
    ) -> trio.socket.SocketType:
        """A trio socket connected to ``host:port`` through the proxy."""
        with self._failures(host, port):
            from python_socks.async_.trio import Proxy

            proxy = Proxy(self._type(), self.host, self.port, self.username, self.password)
            return await proxy.connect(host, port, timeout=timeout, local_addr=source)

    def _type(self) -> ProxyType:
        from python_socks import ProxyType

        return {
            "socks5": ProxyType.SOCKS5,
            "socks4": ProxyType.SOCKS4,
            "http": ProxyType.HTTP,
        }[self.scheme]

    @contextlib.contextmanager
    def _failures(self, host: str, port: int) -> Iterator[None]:
        """python-socks' failures as smtpbee's, without the credentials."""
        _log.info("connecting to %s port %s through the proxy %s", host, port, self)
        try:
            yield
        except ImportError as exc:
            raise InvalidInputError(f"{_INSTALL_HINT} ({exc})") from None
        except Exception as exc:
            from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError

            if not isinstance(exc, ProxyError | ProxyConnectionError | ProxyTimeoutError):
                raise
            where = f"connecting to {host}:{port} through the proxy {self}"
            reason = self._hidden(str(exc) or type(exc).__name__)
            if isinstance(exc, ProxyTimeoutError) or isinstance(exc.__cause__, TimeoutError):
                raise TimeoutError(f"the proxy did not answer in time ({reason})") from exc
            raise ConnectionLostError(f"{where}: {reason}") from exc

    def _hidden(self, text: str) -> str:
        for secret in (self.password, self.username):
            # Shorter ones would blot out ordinary words; python-socks quotes neither.
            if secret is not None and len(secret) >= 3:
                text = text.replace(secret, "***")
        return text


def parse_proxy(url: object, sock: object = None) -> ProxyURL | None:
    """The ProxyURL of the ``proxy`` argument (None for None), checked.

    Raises:
        InvalidInputError: not ``scheme://[user:password@]host:port`` with a
            scheme of PROXY_SCHEMES; a connected ``sock`` given as well; or
            python-socks is not installed.
        TypeError: not a string.
    """
    if url is None:
        return None
    if not isinstance(url, str):
        raise TypeError(f"proxy must be a URL string, not {type(url).__name__}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        # urlsplit's own message may quote the URL, credentials and all.
        raise InvalidInputError(
            "proxy: not a URL of the form scheme://host:port with a port from 1 to 65535"
        ) from None
    login = "***@" if "@" in parts.netloc else ""
    shown = f"{parts.scheme}://{login}{parts.hostname or ''}"

    def bad(why: str) -> InvalidInputError:
        return InvalidInputError(f"proxy {shown}...: {why}")

    if parts.scheme not in PROXY_SCHEMES:
        raise bad(f"the scheme must be one of {', '.join(PROXY_SCHEMES)}")
    if not parts.hostname:
        raise bad("no proxy host")
    if not port:
        raise bad("give the proxy's port (scheme://host:port), from 1 to 65535")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad("a proxy URL has no path, query or fragment")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    if parts.scheme == "socks4" and password is not None:
        raise bad("SOCKS4 has no password (only a user id)")
    if parts.scheme != "socks4" and (username is None) != (password is None):
        raise bad("give both a user name and a password, or neither")
    if sock is not None:
        raise InvalidInputError("a proxy cannot go with a connected sock: give one or the other")
    if not _installed():
        raise InvalidInputError(_INSTALL_HINT)
    return ProxyURL(parts.scheme, parts.hostname, port, username, password)


def _installed() -> bool:
    """Whether python-socks can be imported (without importing it)."""
    try:
        return find_spec("python_socks") is not None
    except (ImportError, ValueError):
        return False
