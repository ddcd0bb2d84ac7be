"""smtpbee.testing: a scripted SMTP server for testing SMTP clients.

One server whose behaviour is a table of handlers per command, on top of the
defaults of a well-behaved server, run in the way the test needs::

    from smtpbee.testing import ScriptedServer, close, reply

    server = ScriptedServer(
        {"RCPT": reply(550, "5.1.1 No such user"), "QUIT": [reply(221, "bye"), close()]}
    )
    with server.serve_in_thread() as running:  # or serve_asyncio(), serve_trio()
        ...  # connect a client to running.host, running.port
    running.transcript  # every unit the client sent, every write of the server
    running.messages  # what was delivered

``replay("session.jsonl")`` turns a session captured with `smtpbee.SessionLog`
(``--log FILE`` on the command line) into such a server: it answers each
command as the logged server did and records every command that differs in
``server.divergences``.

``server.driver()`` answers a `smtpbee.ClientSession` procedure's I/O requests
from the same table without a socket, and ``server.session()`` is the server
without I/O at all (bytes in, outputs out). Hypothesis strategies for replies,
EHLO lists and whole handler tables are in `smtpbee.testing.strategies` (needs
``pip install smtpbee[testing]``).

Nothing in smtpbee's core or transports imports this package.
"""

from typing import TYPE_CHECKING

from ._defaults import DEFAULT_EXTENSIONS
from ._driver import ProcedureDriver
from ._engine import Output, ServerSession
from ._model import (
    DEFAULT,
    Action,
    Close,
    Command,
    Drip,
    Entry,
    Handler,
    HandlerFunction,
    Inject,
    Message,
    Pause,
    Replies,
    Reset,
    Response,
    Stall,
    StartTLS,
    Transcript,
    close,
    drip,
    inject,
    pause,
    replies,
    reply,
    reset,
    stall,
    start_tls,
)
from ._replay import Divergence, ReplayServer, replay
from ._running import RunningServer, ThreadedServer
from ._server import DEFAULT_HOSTNAME, ScriptedServer

if TYPE_CHECKING:
    from ._asyncio import AsyncioServer
    from ._trio import TrioServer

__all__ = [
    "DEFAULT",
    "DEFAULT_EXTENSIONS",
    "DEFAULT_HOSTNAME",
    "Action",
    "AsyncioServer",
    "Close",
    "Command",
    "Divergence",
    "Drip",
    "Entry",
    "Handler",
    "HandlerFunction",
    "Inject",
    "Message",
    "Output",
    "Pause",
    "ProcedureDriver",
    "ReplayServer",
    "Replies",
    "Reset",
    "Response",
    "RunningServer",
    "ScriptedServer",
    "ServerSession",
    "Stall",
    "StartTLS",
    "ThreadedServer",
    "Transcript",
    "TrioServer",
    "close",
    "drip",
    "inject",
    "pause",
    "replay",
    "replies",
    "reply",
    "reset",
    "stall",
    "start_tls",
]


def __getattr__(name: str) -> object:
    # The asyncio and trio runners are imported when first named (trio is optional).
    if name == "AsyncioServer":
        from ._asyncio import AsyncioServer

        return AsyncioServer
    if name == "TrioServer":
        from ._trio import TrioServer

        return TrioServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
