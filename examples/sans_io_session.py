"""A whole SMTP session driven through smtpbee's core, with no network at all.

The "server" is a list of canned replies. The loop below is what every
transport does: send a command, hand the server's bytes to the connection,
and read the events back. Run it: ``python examples/sans_io_session.py``.
"""

from __future__ import annotations

import smtpbee

SERVER_SAYS = {
    "greeting": b"220 mx.example.test ESMTP ready\r\n",
    "EHLO": b"250-mx.example.test hello\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250 SIZE 10485760\r\n",
    "MAIL": b"250 2.1.0 Sender ok\r\n",
    "RCPT": b"250 2.1.5 Recipient ok\r\n",
    "RCPT-refused": b"550 5.1.1 No such user here\r\n",
    "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "content": b"250 2.0.0 Ok: queued as 4B1F2\r\n",
    "QUIT": b"221 2.0.0 Bye\r\n",
}

MESSAGE = b"""From: alice@example.test
To: bob@example.test
Subject: sans-I/O

.a line starting with a dot gets stuffed
lone LF line ends become CRLF
"""


def show(direction: str, data: bytes) -> None:
    for line in data.decode("utf-8", "replace").splitlines():
        print(f"{direction}: {line}")


def receive(conn: smtpbee.Connection, data: bytes) -> list[smtpbee.Event]:
    """Feed the server's bytes and collect every event they complete."""
    show("S", data)
    conn.receive_data(data)
    events = []
    while (event := conn.next_event()) is not smtpbee.NEED_DATA:
        assert isinstance(event, smtpbee.Event)
        events.append(event)
        if isinstance(event, smtpbee.ConnectionClosed):
            break
    return events


def send(conn: smtpbee.Connection, *commands: smtpbee.Command) -> None:
    data = conn.send_all(list(commands))
    show("C", data)


def main() -> None:
    conn = smtpbee.Connection()
    print(f"[state {conn.state.name}]")
    receive(conn, SERVER_SAYS["greeting"])
    print(f"[state {conn.state.name}]")

    send(conn, smtpbee.Ehlo("client.example.test"))
    receive(conn, SERVER_SAYS["EHLO"])
    print(f"[state {conn.state.name}; server offers {sorted(conn.extensions.keywords)}]")

    # The server offers PIPELINING: the whole envelope and DATA go in one write.
    send(
        conn,
        smtpbee.Mail(sender="alice@example.test", size=len(MESSAGE)),
        smtpbee.Rcpt(recipient="bob@example.test"),
        smtpbee.Rcpt(recipient="nobody@example.test"),
        smtpbee.Data(),
    )
    replies = b"".join(SERVER_SAYS[k] for k in ("MAIL", "RCPT", "RCPT-refused", "DATA"))
    for event in receive(conn, replies):
        if isinstance(event, smtpbee.ContentRequested):
            # The 354 is not a final answer: it asks for the message content.
            print(f"  -> 'DATA' got {event.reply}: the server asks for the content")
            continue
        assert isinstance(event, smtpbee.ReplyReceived) and event.command is not None
        verdict = "accepted" if event.accepted else f"refused: {event.kind.value}"
        print(f"  -> {event.command.transcript_line()!r} got {event.reply} ({verdict})")
    print(f"[state {conn.state.name}; accepted {conn.accepted_recipients}]")

    send(conn, smtpbee.MessageData(MESSAGE), smtpbee.EndOfData())
    (final,) = receive(conn, SERVER_SAYS["content"])
    assert isinstance(final, smtpbee.ReplyReceived)
    print(f"[the message was {'accepted' if final.accepted else 'refused'}]")
    send(conn, smtpbee.Quit())
    receive(conn, SERVER_SAYS["QUIT"])
    receive(conn, b"")  # the server closes the connection
    print(f"[state {conn.state.name}]")


if __name__ == "__main__":
    main()
