# smtpbee/transports/_async/one_call
#
# send_with: the one-call ``send`` of every transport (connect, log in if
# asked, send one message, QUIT), written once; each transport module binds it
# to its client class. log_in: how send() and the pools log in (a password, or
# an OAuth 2.0 token asked of its source for each connection). The source of
# _sync/one_call.py (see _async/client.py).
from __future__ import annotations

import email.message
import inspect
from collections.abc import Sequence
from typing import Any, TypeVar

from smtpbee._auth import OAuthBearer, SASLMechanism, XOAuth2
from smtpbee._errors import InvalidInputError
from smtpbee._transaction import SendResult
from smtpbee.transports._async.client import AsyncClient
from smtpbee.transports._message import AsyncBody
from smtpbee.transports._pool import AsyncTokenSource, check_login, checked_token

__all__ = ["bearer_token", "log_in", "send_with"]

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
    mechanism: str | None = None,
    token: AsyncTokenSource | None = None,
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
        mechanism: the SASL mechanism to log in with, e.g. "PLAIN" (default:
            the strongest the server offers; XOAUTH2 with a token).
        token: instead of a password, a callable that returns an OAuth 2.0
            bearer token (XOAUTH2, or OAUTHBEARER if named as ``mechanism``).
        allow_insecure: allow that login over plaintext or unverified TLS.
        **client_kwargs: the client's other arguments (tls, ssl_context, ...).

    Raises:
        InvalidInputError: a body without an envelope, or credentials that do
            not go together (see check_login), before anything is sent.
    """
    mechanism = check_login(username, password, mechanism, token)
    is_message = isinstance(message_or_body, email.message.Message)
    if not is_message and (sender is None or recipients is None):
        raise InvalidInputError("a raw body needs sender= and recipients=")
    async with client_class(host, port, **client_kwargs) as client:
        await log_in(client, username, password, mechanism, token, allow_insecure)
        if isinstance(message_or_body, email.message.Message):
            return await client.send_message(message_or_body, sender=sender, recipients=recipients)
        assert sender is not None and recipients is not None
        return await client.sendmail(sender, recipients, message_or_body)


async def bearer_token(source: AsyncTokenSource) -> str:
    """Ask a token source for a bearer token (awaiting what an async one returns)."""
    token = source()
    if inspect.isawaitable(token):
        return checked_token(await token)
    return checked_token(token)


async def log_in(
    client: AsyncClient,
    username: str | None,
    password: str | None,
    mechanism: str | None,
    token: AsyncTokenSource | None,
    allow_insecure: bool,
) -> None:
    """Log in if a user name is given: with a fresh token, or with the password.

    The arguments are checked by check_login first (``mechanism`` in upper case).
    """
    if username is None:
        return
    if token is None:
        await client.login(
            username, password or "", mechanism=mechanism, allow_insecure=allow_insecure
        )
        return
    bearer = await bearer_token(token)
    sasl: SASLMechanism
    if mechanism == "OAUTHBEARER":
        sasl = OAuthBearer(username, bearer, host=client.host, port=client.port)
    else:
        sasl = XOAuth2(username, bearer)
    await client.authenticate(sasl, allow_insecure=allow_insecure)
