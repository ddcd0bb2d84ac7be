# smtpbee/transports/_plans
#
# The plans behind the client methods that take the user's Python values (a
# message, a body, a batch): each becomes a procedure of the core session and
# the pieces of body it pulls. A mixin of ClientBase.
#
# Invariant: nothing here decides anything about the protocol.
from __future__ import annotations

import email.message
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from smtpbee._errors import InvalidInputError, SMTPError
from smtpbee._extensions import Extensions
from smtpbee._procedures import ClientSession
from smtpbee._requests import Procedure
from smtpbee._transaction import SendResult
from smtpbee.transports._message import BatchItem, batch_source, body_source, prepare_message

__all__ = ["Plans"]


class Plans:
    """The plans of ClientBase: the user's values as a procedure and its body pieces."""

    _takes_async_bodies = False
    """Whether bodies may be async iterables (the async clients say yes)."""

    @property
    def session(self) -> ClientSession:  # pragma: no cover - ClientBase defines it
        raise NotImplementedError

    @property
    def extensions(self) -> Extensions:  # pragma: no cover - ClientBase defines it
        raise NotImplementedError

    def _plan_sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        body: Any,
        mail_options: Mapping[str, Any] | None,
        rcpt_options: Mapping[str, Any] | None,
        smtputf8: bool,
    ) -> tuple[Procedure[SendResult], Iterator[bytes] | AsyncIterable[bytes]]:
        info, pieces = body_source(body)
        if isinstance(pieces, AsyncIterable) and not self._takes_async_bodies:
            raise InvalidInputError("an async iterable body needs the asyncio or trio transport")
        if isinstance(recipients, str):
            recipients = [recipients]
        proc = self.session.sendmail(
            sender,
            recipients,
            body=info,
            smtputf8=smtputf8,
            mail_options=mail_options,
            rcpt_options=rcpt_options,
        )
        return proc, pieces

    def _plan_batch(
        self, items: Iterable[BatchItem]
    ) -> tuple[Procedure[list[SendResult | SMTPError]], Iterator[bytes]]:
        jobs, bodies = batch_source(items, self.extensions)
        return self.session.send_batch(jobs), bodies

    def _plan_message(
        self,
        msg: email.message.Message,
        sender: str | None,
        recipients: Sequence[str] | None,
        mail_options: Mapping[str, Any] | None,
        rcpt_options: Mapping[str, Any] | None,
    ) -> tuple[Procedure[SendResult], Iterator[bytes] | AsyncIterable[bytes]]:
        server = self.extensions
        prepared = prepare_message(msg, sender=sender, recipients=recipients, server=server)
        return self._plan_sendmail(
            prepared.sender,
            prepared.recipients,
            prepared.data,
            mail_options,
            rcpt_options,
            prepared.smtputf8,
        )
