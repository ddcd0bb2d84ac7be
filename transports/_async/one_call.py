# smtpbee/transports/_async/one_call
#
# send_with: the one-call ``send`` of every transport (connect, log in if
# asked, send one message, QUIT), written once; each transport module binds it
# to its client class. The source of _sync/one_call.py (see _async/client.py).
from __future__ import annotations

import email.message
from collections.abc import Sequence
from typing import Any, TypeVar

from smtpbee._errors import InvalidInputError
from smtpbee._transaction import SendResult
from smtpbee.transports._async.client import AsyncClient
from smtpbee.transports._message import AsyncBody

__all__ = ["send_with"]

_C = TypeVar("_C", bound=AsyncClient)


async def send_with(
    client_class: type[_C],
    message_or_body: email.message.Message | AsyncBody,
    *,
    host: str,
    port: int = 25,
    sender: str | None = None,
    recipients: Sequence[str] | None = None,
    username: str | None = None,
    password: str | None = None,
    allow_insecure: bool = False,
    **client_kwargs: Any,
) -> SendResult:
    """Connect, log in if asked, send one message, QUIT: the one-call ``send``.

    Args:
        client_class: the transport's client class.
        message_or_body: an email message (its headers give the envelope
            unless sender and recipients are given) or a body.
        host: the server.
        port: its port (465 means implicit TLS unless ``tls`` says otherwise).
        sender: the envelope sender (required with a body).
        recipients: the envelope recipients (required with a body).
        username: log in with this user name.
        password: and this password.
        allow_insecure: allow that login over plaintext or unverified TLS.
        **client_kwargs: the client's other arguments (tls, ssl_context, ...).
    """
    is_message = isinstance(message_or_body, email.message.Message)
    if not is_message and (sender is None or recipients is None):
        raise InvalidInputError("a raw body needs sender= and recipients=")
    async with client_class(host, port, **client_kwargs) as client:
        if username is not None:
            await client.login(username, password or "", allow_insecure=allow_insecure)
        if isinstance(message_or_body, email.message.Message):
            return await client.send_message(message_or_body, sender=sender, recipients=recipients)
        assert sender is not None and recipients is not None
        return await client.sendmail(sender, recipients, message_or_body)
