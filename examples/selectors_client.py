"""smtpbee's core in an event loop of your own: non-blocking sockets and one selector.

``ClientSession`` holds the whole SMTP session logic (TLS policy, greeting, EHLO,
the pipelined mail transaction, QUIT) as generators that *yield requests* and do
no I/O. This program serves those requests itself, with ``selectors`` and
non-blocking sockets, and runs several sessions at once in one thread: the shape
of an embedding in any event loop (a GUI's, a game's, a monitoring agent's).

The requests (smtpbee._requests) and what each must be answered with:

    Write(buffers, phase, timeout)  all of them written, in order -> None
    Read(phase, timeout, new_wait)  at least one byte            -> bytes (b"" = closed)
    Poll()                          what already arrived          -> bytes, b"", or None
    UpgradeTLS(timeout)             the TLS handshake, done now   -> whether it was verified
    PullBody()                      the next piece of the body    -> bytes (b"" = the end)

When the I/O fails, the failure is thrown into the procedure instead, as
SMTPTimeoutError (a deadline passed) or ConnectionLostError (TLSVerificationError
for a refused certificate); the procedure decides what it means (for example
OutcomeUnknownError once the content is out) and raises it out of the driver.

Run it against a local server, for example ``python -m aiosmtpd -n -l 127.0.0.1:8025``
(aiosmtpd offers no TLS unless configured, hence ``--tls none``):

    python examples/selectors_client.py 127.0.0.1 8025 --tls none \\
        --from me@example.test --to you@example.test --sessions 2
"""

from __future__ import annotations

import argparse
import email.policy
import selectors
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage

import smtpbee

_WAIT = object()
"""What an I/O attempt returns when the socket is not ready: wait for the selector."""


class Driver:
    """Runs one session procedure on one non-blocking socket, one step at a time.

    The event loop asks ``events`` and ``deadline`` (what to wait for, until
    when) and calls ``on_ready()`` when the selector says the socket is ready,
    ``on_deadline()`` when the deadline has passed. When ``done`` is true,
    ``result`` or ``error`` holds the outcome.
    """

    def __init__(
        self,
        name: str,
        sock: socket.socket,
        procedure: smtpbee.Procedure[smtpbee.SendResult],
        *,
        body: Iterator[bytes],
        ssl_context: ssl.SSLContext | None,
        server_hostname: str,
    ) -> None:
        self.name = name
        self.sock = sock
        self.fileno = sock.fileno()  # kept by the TLS upgrade: the selector key
        self.done = False
        self.result: smtpbee.SendResult | None = None
        self.error: smtpbee.SMTPError | None = None
        self.events = selectors.EVENT_READ
        self.deadline = float("inf")
        self._procedure = procedure
        self._body = body
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname
        self._request: smtpbee.Request | None = None
        self._unsent = memoryview(b"")
        self._read_deadline = 0.0
        self._advance(lambda: next(procedure))

    # -- what the event loop calls ---------------------------------------------------

    def on_ready(self) -> None:
        """The socket is ready for what ``events`` asked: try the I/O again."""
        self._attempt_and_advance()

    def on_deadline(self) -> None:
        """The current request's deadline passed: throw a timeout in."""
        assert self._request is not None
        what = "the TLS handshake"
        if isinstance(self._request, smtpbee.Read | smtpbee.Write):
            what = self._request.phase.description
        timeout = smtpbee.SMTPTimeoutError(f"{self.name}: timed out waiting for {what}")
        self._advance(lambda: self._procedure.throw(timeout))

    # -- running the procedure -------------------------------------------------------

    def _advance(self, step: Callable[[], smtpbee.Request]) -> None:
        """Resume the procedure and answer its requests until one has to wait."""
        while True:
            try:
                request = step()
            except StopIteration as stop:  # the procedure returned its result
                self.result = stop.value
                self._finish()
                return
            except smtpbee.SMTPError as exc:  # the procedure ended with an error
                self.error = exc
                self._finish()
                return
            # Poll and PullBody are answered at once, without the socket.
            if isinstance(request, smtpbee.Poll):
                answer = self._poll()
                step = self._sender(answer)
                continue
            if isinstance(request, smtpbee.PullBody):
                step = self._sender(next(self._body, b""))
                continue
            try:
                self._begin(request)
                result = self._attempt()
            except OSError as exc:
                failure = _as_thrown(exc, self.name)
                step = self._thrower(failure)
                continue
            if result is _WAIT:
                return  # the event loop calls on_ready() or on_deadline() later
            step = self._sender(result)

    def _sender(self, value: object) -> Callable[[], smtpbee.Request]:
        return lambda: self._procedure.send(value)

    def _thrower(self, error: smtpbee.SMTPError) -> Callable[[], smtpbee.Request]:
        return lambda: self._procedure.throw(error)

    def _attempt_and_advance(self) -> None:
        try:
            result = self._attempt()
        except OSError as exc:
            failure = _as_thrown(exc, self.name)
            self._advance(self._thrower(failure))
            return
        if result is not _WAIT:
            self._advance(self._sender(result))

    def _begin(self, request: smtpbee.Request) -> None:
        """Start serving a request that needs the socket: its deadline and state."""
        self._request = request
        now = time.monotonic()
        if isinstance(request, smtpbee.Read):
            # A new reply gets a fresh deadline; the rest of an incomplete one
            # keeps the running deadline, so a server that drips one byte at a
            # time still times out.
            if request.new_wait:
                self._read_deadline = now + request.timeout
            self.deadline = self._read_deadline
        elif isinstance(request, smtpbee.Write):
            self._unsent = memoryview(request.data)
            self.deadline = now + request.timeout
        else:
            assert isinstance(request, smtpbee.UpgradeTLS)
            self.deadline = now + request.timeout
            if not isinstance(self.sock, ssl.SSLSocket):  # implicit TLS or STARTTLS
                context = self._ssl_context or ssl.create_default_context()
                self.sock = context.wrap_socket(
                    self.sock,
                    server_hostname=self._server_hostname,
                    do_handshake_on_connect=False,
                )

    def _attempt(self) -> object:
        """Do the current request's I/O without blocking: its result, or _WAIT."""
        request = self._request
        sock = self.sock
        try:
            if isinstance(request, smtpbee.Read):
                self.events = selectors.EVENT_READ
                return sock.recv(65536)
            if isinstance(request, smtpbee.Write):
                self.events = selectors.EVENT_WRITE
                while self._unsent:
                    sent = sock.send(self._unsent)
                    self._unsent = self._unsent[sent:]
                return None
            assert isinstance(request, smtpbee.UpgradeTLS) and isinstance(sock, ssl.SSLSocket)
            self.events = selectors.EVENT_READ
            sock.do_handshake()
            # The contract: True only when the handshake proved the server's
            # name. AUTH is refused over TLS that was not verified.
            return sock.context.verify_mode == ssl.CERT_REQUIRED and sock.context.check_hostname
        except ssl.SSLWantReadError:
            self.events = selectors.EVENT_READ
            return _WAIT
        except ssl.SSLWantWriteError:
            self.events = selectors.EVENT_WRITE
            return _WAIT
        except BlockingIOError:
            return _WAIT

    def _poll(self) -> bytes | None:
        """What the server has sent already, without waiting (None if nothing)."""
        try:
            return self.sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except OSError:
            return b""  # broken: the procedure sees a closed connection

    def _finish(self) -> None:
        self.done = True
        self.deadline = float("inf")


def _as_thrown(exc: OSError, name: str) -> smtpbee.SMTPError:
    """The error a procedure understands for a failed socket operation."""
    error: smtpbee.SMTPError
    if isinstance(exc, ssl.SSLCertVerificationError):
        error = smtpbee.TLSVerificationError(f"{name}: the certificate was refused: {exc}")
    else:
        error = smtpbee.ConnectionLostError(f"{name}: connection lost: {exc}")
    error.__cause__ = exc
    return error


def run(drivers: list[Driver]) -> None:
    """The event loop: one selector for every session, until all are done."""
    with selectors.DefaultSelector() as selector:
        registered: set[int] = set()
        while True:
            for driver in drivers:
                if driver.done and driver.fileno in registered:
                    selector.unregister(driver.fileno)
                    registered.discard(driver.fileno)
                if driver.done:
                    driver.sock.close()
            waiting = [driver for driver in drivers if not driver.done]
            if not waiting:
                return
            for driver in waiting:
                if driver.fileno in registered:
                    selector.modify(driver.fileno, driver.events, driver)
                else:
                    selector.register(driver.fileno, driver.events, driver)
                    registered.add(driver.fileno)
            timeout = min(driver.deadline for driver in waiting) - time.monotonic()
            for key, _ in selector.select(max(timeout, 0.0)):
                ready: Driver = key.data
                if not ready.done:
                    ready.on_ready()
            now = time.monotonic()
            for driver in waiting:
                if not driver.done and driver.deadline <= now:
                    driver.on_deadline()


def deliver(
    session: smtpbee.ClientSession, sender: str, recipients: list[str], message: bytes
) -> smtpbee.Procedure[smtpbee.SendResult]:
    """A whole session as one procedure: procedures compose with ``yield from``."""
    yield from session.open()  # TLS as the mode says, greeting, EHLO, STARTTLS
    result = yield from session.sendmail(
        sender, recipients, body=smtpbee.BodyInfo.of_bytes(message)
    )
    yield from session.quit()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--from", dest="sender", required=True)
    parser.add_argument("--to", dest="recipients", action="append", required=True)
    parser.add_argument("--tls", choices=[mode.value for mode in smtpbee.TLSMode])
    parser.add_argument("--cafile", help="trust only this CA (PEM)")
    parser.add_argument("--sessions", type=int, default=1, help="sessions run at once")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    context = ssl.create_default_context(cafile=args.cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    drivers: list[Driver] = []
    for number in range(1, args.sessions + 1):
        name = f"session {number}"
        message = EmailMessage()
        message["From"] = args.sender
        message["To"] = ", ".join(args.recipients)
        message["Subject"] = f"selectors example, {name} of {args.sessions}"
        message.set_content("Sent by examples/selectors_client.py.\n")
        data = message.as_bytes(policy=email.policy.SMTP)

        sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
        sock.setblocking(False)  # from here on, only the selector waits

        def transcript(direction: str, line: str, name: str = name) -> None:
            print(f"{name} {direction}: {line}")

        session = smtpbee.ClientSession(
            local_hostname=f"[{sock.getsockname()[0]}]",
            tls=smtpbee.resolve_tls_mode(args.tls, args.port),
            timeouts=smtpbee.Timeouts.uniform(args.timeout),
            transcript=transcript,
        )
        procedure = deliver(session, args.sender, args.recipients, data)
        drivers.append(
            Driver(
                name,
                sock,
                procedure,
                body=iter([data]),
                ssl_context=context,
                server_hostname=args.host,
            )
        )

    run(drivers)

    failed = 0
    for driver in drivers:
        if driver.result is not None:
            accepted = ", ".join(driver.result.accepted)
            print(f"{driver.name}: delivered to {accepted}: {driver.result.data}")
        else:
            failed += 1
            print(f"{driver.name}: {type(driver.error).__name__}: {driver.error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
