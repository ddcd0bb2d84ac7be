# smtpbee/_transaction
#
# The mail transaction, written once for every transport: MAIL, RCPT..., and
# the content by DATA or BDAT, on top of the session's building blocks (send a
# group of commands in one write, read the next reply, RSET).
#
# Theory of operation
# -------------------
# * Pipelined when the server offers PIPELINING: the envelope and DATA (or the
#   first BDAT chunk) go in one write and the replies are read in order; with
#   CHUNKING a small message is one round trip (MAIL, RCPTs, BDAT LAST).
#   Without PIPELINING each command waits for its reply.
# * The body is pulled (PullBody) piece by piece and never held whole: DATA
#   content is written in pieces of about _WRITE_SIZE (the last one together
#   with the terminator), BDAT in chunks of about _CHUNK_SIZE.
# * A refused envelope (MAIL, or every RCPT) or a refused content ends the
#   transaction with a ReplyError after an RSET, so the session can go on; a
#   DATA that is accepted although every recipient was refused gets the
#   terminator alone (RFC 2920 §3.1).
# * send_many overlaps consecutive transactions where RFC 2920 allows it: the
#   end of one content and the next envelope share a write, so each message
#   costs one round trip; every job is settled on its own.
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._commands import Bdat, Command, Data, EndOfData, Mail, MessageData, Rcpt, Rset
from ._data import LineEndingNormalizer
from ._errors import (
    ConnectionLostError,
    InvalidInputError,
    LocalProtocolError,
    OutcomeUnknownError,
    ProtocolError,
    ReplyError,
    SMTPError,
    SMTPTimeoutError,
    UnsupportedExtensionError,
    reply_error,
)
from ._replies import Reply
from ._requests import Procedure, PullBody
from ._validation import parse_reverse_path

if TYPE_CHECKING:
    from ._procedures import ClientSession

__all__ = ["BodyInfo", "MailJob", "MailTransactions", "SendResult"]

_CHUNK_SIZE = 1 << 20
# How many BDAT chunks may await their replies: enough to keep a link busy,
# few enough that a refusal wastes little.
_CHUNKS_IN_FLIGHT = 4
_WRITE_SIZE = 1 << 16


@dataclass(frozen=True, slots=True)
class BodyInfo:
    """What is known of a body before it is read.

    Attributes:
        size: its length in octets, if known (for SIZE=).
        eight_bit: whether it has 8-bit octets; None if unknown (streamed).
        binary: whether it must go as BINARYMIME (unnormalised octets).
    """

    size: int | None = None
    eight_bit: bool | None = None
    binary: bool = False

    @classmethod
    def of_bytes(cls, body: bytes) -> BodyInfo:
        return cls(size=len(body), eight_bit=not body.isascii())


@dataclass(slots=True)
class SendResult:
    """The outcome of one mail transaction.

    Attributes:
        recipients: every recipient's reply to RCPT, accepted or not.
        data: the server's final reply to the content.
        delivery: with LMTP, each accepted recipient's final reply.
    """

    recipients: dict[str, Reply]
    data: Reply | None = None
    delivery: dict[str, Reply] = field(default_factory=dict)

    @property
    def refused(self) -> dict[str, Reply]:
        """Recipients refused at RCPT time (or, with LMTP, at delivery)."""
        refused = {a: r for a, r in self.recipients.items() if not r.is_success}
        refused.update({a: r for a, r in self.delivery.items() if not r.is_success})
        return refused

    @property
    def accepted(self) -> list[str]:
        """Recipients the message went to."""
        return [a for a in self.recipients if a not in self.refused]


@dataclass(frozen=True, slots=True, kw_only=True)
class MailJob:
    """One message for ClientSession.send_many: its envelope and what is known of its body."""

    sender: str
    recipients: Sequence[str]
    body: BodyInfo
    smtputf8: bool = False
    mail_options: Mapping[str, Any] | None = None
    rcpt_options: Mapping[str, Any] | None = None


class MailTransactions:
    """The mail-transaction procedures of one ClientSession."""

    def __init__(self, session: ClientSession) -> None:
        self._session = session

    def send_mail(
        self,
        sender: str,
        recipients: Iterable[str],
        *,
        body: BodyInfo,
        smtputf8: bool = False,
        mail_options: Mapping[str, Any] | None = None,
        rcpt_options: Mapping[str, Any] | None = None,
    ) -> Procedure:
        """One mail transaction: MAIL, RCPT..., DATA or BDAT; the body is pulled.

        Pipelined when the server offers PIPELINING, chunked when it offers
        CHUNKING (then a small message is one round trip). Returns a
        SendResult when at least one recipient got the message.

        Raises:
            ReplyError: MAIL refused, every recipient refused (``.recipients``
                holds each reply), or the content refused. The transaction is
                reset first, so the session can go on.
            LocalProtocolError: bad input; nothing was sent.
            OutcomeUnknownError: the connection failed after the content.
        """
        mail, rcpts, chunked = self._prepare(
            sender, recipients, body, smtputf8, mail_options, rcpt_options
        )
        result = SendResult(recipients={})
        try:
            return (yield from self._transaction(mail, rcpts, body, chunked, result))
        except OutcomeUnknownError as exc:
            # Who was accepted before the outcome became unknown.
            exc.recipients = dict(result.recipients)
            raise

    def _prepare(
        self,
        sender: str,
        recipients: Iterable[str],
        body: BodyInfo,
        smtputf8: bool,
        mail_options: Mapping[str, Any] | None,
        rcpt_options: Mapping[str, Any] | None,
    ) -> tuple[Mail, list[Rcpt], bool]:
        """The MAIL and RCPT commands for a message, checked; whether to use BDAT."""
        # A recipient named twice would get two RCPTs but one entry in the
        # result, and LMTP would then answer more often than counted.
        recipients = list(dict.fromkeys(recipients))
        if not recipients:
            raise InvalidInputError("at least one recipient is needed")
        ext = self._session.conn.extensions
        rcpts = [Rcpt(recipient=r, **dict(rcpt_options or {})) for r in recipients]
        sender_path = parse_reverse_path(sender)
        needs_utf8 = (
            smtputf8
            or (sender_path is not None and sender_path.needs_smtputf8)
            or any(r.needs_smtputf8 for r in rcpts)
        )
        mail_args: dict[str, Any] = dict(mail_options or {})
        mail_args.setdefault("smtputf8", needs_utf8)
        if body.binary:
            mail_args.setdefault("body", "BINARYMIME")
        elif body.eight_bit or (body.eight_bit is None and ext.eightbitmime):
            if ext.eightbitmime:
                mail_args.setdefault("body", "8BITMIME")
            elif not needs_utf8:
                raise UnsupportedExtensionError(
                    "the message has 8-bit content and the server does not offer 8BITMIME"
                )
        if body.size is not None and ext.supports_size:
            mail_args.setdefault("size", body.size)
        mail = Mail(sender=sender, **mail_args)
        chunked = ext.chunking and (self._session.conn.pipelining or body.binary)
        return mail, rcpts, chunked

    def _transaction(
        self, mail: Mail, rcpts: list[Rcpt], body: BodyInfo, chunked: bool, result: SendResult
    ) -> Procedure:
        if self._session.conn.pipelining:
            return (yield from self._pipelined_transaction(mail, rcpts, body, chunked, result))
        return (yield from self._lockstep_transaction(mail, rcpts, body, chunked, result))

    def send_many(self, jobs: Iterable[MailJob]) -> Procedure:
        """Several mail transactions on this session, each settled on its own.

        With PIPELINING (and DATA), consecutive transactions overlap as RFC 2920
        §3.1 allows: the end of one message's content, its terminator, and the
        next MAIL, RCPTs and DATA go out in one write, so each message costs one
        round trip. With CHUNKING each message is already one round trip.

        Returns a list with one entry per job, in order: its SendResult, the
        SMTPError that ended it (a refusal, bad input, or — for the message
        whose final reply was lost — OutcomeUnknownError), or None for jobs
        never tried because the session ended first.
        """
        jobs = list(jobs)
        results: list[SendResult | SMTPError | None] = [None] * len(jobs)
        # With CHUNKING a message is one round trip already; LMTP's replies per
        # recipient make overlapping more trouble than it saves.
        ext = self._session.conn.extensions
        overlap = self._session.conn.pipelining and not self._session.conn.lmtp and not ext.chunking
        carry: list[Command] = []
        awaiting: tuple[int, SendResult] | None = None
        index = -1
        try:
            for index, job in enumerate(jobs):
                try:
                    mail, rcpts, chunked = self._prepare(
                        job.sender,
                        job.recipients,
                        job.body,
                        job.smtputf8,
                        job.mail_options,
                        job.rcpt_options,
                    )
                except LocalProtocolError as exc:
                    results[index] = exc
                    yield from self._skip_body()
                    continue
                if not overlap:
                    try:
                        results[index] = yield from self._transaction(
                            mail, rcpts, job.body, chunked, SendResult(recipients={})
                        )
                    except ReplyError as exc:
                        results[index] = exc
                    continue
                yield from self._send_content([*carry, mail, *rcpts, Data()])
                carry = []
                if awaiting is not None:
                    results[awaiting[0]] = yield from self._settle(awaiting[1])
                    awaiting = None
                result = SendResult(recipients={})
                data_reply, failure = yield from self._envelope_replies(mail, rcpts, result)
                if failure is not None or data_reply.code != 354:
                    results[index] = yield from self._abandon(failure, data_reply)
                    yield from self._skip_body()
                    continue
                carry = yield from self._stream_content([EndOfData()], write_last=False)
                awaiting = (index, result)
            if awaiting is not None:
                yield from self._send_content(carry)
                results[awaiting[0]] = yield from self._settle(awaiting[1])
        except (ConnectionLostError, SMTPTimeoutError, OutcomeUnknownError, ProtocolError) as exc:
            # The session is over. The message whose content was handed over may
            # have been delivered; the one whose envelope was on its way was not.
            if awaiting is not None:
                results[awaiting[0]] = _outcome_unknown(exc)
            if results[index] is None:
                results[index] = _envelope_lost(exc) if awaiting is not None else exc
        return results

    def _envelope_replies(self, mail: Mail, rcpts: list[Rcpt], result: SendResult) -> Procedure:
        """The replies to MAIL, each RCPT and DATA; the envelope's failure, if any."""
        mail_reply = (yield from self._session._reply()).reply
        for rcpt in rcpts:
            result.recipients[rcpt.recipient] = (yield from self._session._reply()).reply
        data_reply = (yield from self._session._reply()).reply
        return data_reply, _envelope_failure(mail, mail_reply, result)

    def _abandon(self, failure: ReplyError | None, data_reply: Reply) -> Procedure:
        """End a transaction whose envelope or DATA was refused; return the error."""
        if data_reply.code == 354:
            # RFC 2920 §3.1: DATA accepted with no recipient: end it at once.
            yield from self._session._send([EndOfData()])
            yield from self._session._reply()
        yield from self._reset()
        return failure or reply_error(data_reply, command="DATA", phase="DATA")

    def _settle(self, result: SendResult) -> Procedure:
        """Read the final reply of an overlapped transaction.

        No RSET on failure: the transaction is over, and the next one is
        already on its way.
        """
        reply = (yield from self._session._reply()).reply
        result.data = reply
        if reply.is_success:
            return result
        return reply_error(reply, phase="DATA (end of content)")

    def _skip_body(self) -> Procedure:
        """Consume a job's body unsent, so the next job's body comes next."""
        while (yield PullBody()):
            pass

    def _pipelined_transaction(
        self, mail: Mail, rcpts: list[Rcpt], body: BodyInfo, chunked: bool, result: SendResult
    ) -> Procedure:
        normalizer = None if body.binary else LineEndingNormalizer()
        opener: Bdat | Data
        if chunked:
            data, last = yield from self._next_chunk(normalizer)
            opener = Bdat(data, last=last)
        else:
            opener = Data()
        yield from self._session._send([mail, *rcpts, opener])
        opener_reply, failure = yield from self._envelope_replies(mail, rcpts, result)
        if failure is not None:
            raise (yield from self._abandon(failure, opener_reply))
        if isinstance(opener, Bdat):
            return (yield from self._chunks(result, opener, opener_reply, normalizer))
        return (yield from self._data_content(result, opener_reply))

    def _lockstep_transaction(
        self, mail: Mail, rcpts: list[Rcpt], body: BodyInfo, chunked: bool, result: SendResult
    ) -> Procedure:
        mail_reply = yield from self._session.command(mail)
        if mail_reply.is_success:
            for rcpt in rcpts:
                result.recipients[rcpt.recipient] = yield from self._session.command(rcpt)
        failure = _envelope_failure(mail, mail_reply, result)
        if failure is not None:
            yield from self._reset()
            raise failure
        if chunked:
            normalizer = None if body.binary else LineEndingNormalizer()
            data, last = yield from self._next_chunk(normalizer)
            opener = Bdat(data, last=last)
            opener_reply = yield from self._session.command(opener)
            return (yield from self._chunks(result, opener, opener_reply, normalizer))
        data_reply = yield from self._session.command(Data())
        return (yield from self._data_content(result, data_reply))

    def _stream_content(self, trailer: list[Command], *, write_last: bool = True) -> Procedure:
        """Pull the body and send it as DATA content, then ``trailer`` (EndOfData...).

        Small pieces are gathered up to _WRITE_SIZE, and the last piece goes in
        the same write as the trailer: a small message is one write. With
        ``write_last=False`` that last group is returned instead of written, so
        the caller can put the next transaction's envelope behind it.
        """
        held: list[bytes] = []
        held_size = 0
        while True:
            piece = yield PullBody()
            if piece:
                held.append(piece)
                held_size += len(piece)
                if held_size < _WRITE_SIZE:
                    continue
            group: list[Command] = [MessageData(b"".join(held))] if held else []
            held, held_size = [], 0
            if not piece:
                group += trailer
                if not write_last:
                    return group
            yield from self._send_content(group)
            if not piece:
                return []

    def _send_content(self, group: list[Command]) -> Procedure:
        try:
            yield from self._session._send(group)
        except LocalProtocolError:
            # Ending the content now would deliver a truncated message,
            # and DATA has no other way out: the session must die.
            self._session.conn.send_failed()
            raise

    def _data_content(self, result: SendResult, data_reply: Reply) -> Procedure:
        if data_reply.code != 354:
            raise (yield from self._abandon(None, data_reply))
        yield from self._stream_content([EndOfData()])
        return (yield from self._final_replies(result, "DATA"))

    def _chunks(
        self,
        result: SendResult,
        chunk: Bdat,
        reply: Reply,
        normalizer: LineEndingNormalizer | None,
    ) -> Procedure:
        """Go on with BDAT after the first chunk was answered.

        With PIPELINING up to _CHUNKS_IN_FLIGHT chunks go out before their
        replies are read (RFC 3030 §4.2), so a large message does not wait a
        round trip per chunk; without it, each chunk waits for its reply.
        """
        session = self._session
        window = _CHUNKS_IN_FLIGHT if session.conn.pipelining else 1
        unanswered: deque[Bdat] = deque()
        last_sent = chunk.last
        while True:
            if session.conn.lmtp and chunk.last:
                return (yield from self._lmtp_delivery(result, reply, "BDAT"))
            if not reply.is_success:
                for _ in unanswered:  # already on their way: their replies come first
                    yield from session._reply()
                yield from self._reset()
                raise reply_error(reply, command=chunk.transcript_line(), phase="BDAT")
            if chunk.last:
                result.data = reply
                return result
            while not last_sent and len(unanswered) < window:
                data, last_sent = yield from self._next_chunk(normalizer)
                following = Bdat(data, last=last_sent)
                try:
                    yield from session._send([following])
                except LocalProtocolError:
                    # Nothing of this chunk went out: abandon the transaction.
                    for _ in unanswered:
                        yield from session._reply()
                    yield from self._reset()
                    raise
                unanswered.append(following)
            chunk = unanswered.popleft()
            reply = (yield from session._reply()).reply

    def _final_replies(self, result: SendResult, phase: str) -> Procedure:
        first = (yield from self._session._reply()).reply
        if self._session.conn.lmtp:
            return (yield from self._lmtp_delivery(result, first, phase))
        result.data = first
        if not first.is_success:
            yield from self._reset()
            raise reply_error(first, phase=f"{phase} (end of content)")
        return result

    def _lmtp_delivery(self, result: SendResult, first: Reply, phase: str) -> Procedure:
        # RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
        accepted = [a for a, r in result.recipients.items() if r.is_success]
        reply = first
        for index, address in enumerate(accepted):
            if index:
                reply = (yield from self._session._reply()).reply
            result.delivery[address] = reply
        result.data = reply
        if not any(r.is_success for r in result.delivery.values()):
            yield from self._reset()
            error = reply_error(reply, phase=f"{phase} (LMTP delivery to every recipient failed)")
            error.recipients = dict(result.delivery)
            raise error
        return result

    def _next_chunk(self, normalizer: LineEndingNormalizer | None) -> Procedure:
        """The next BDAT chunk, up to about _CHUNK_SIZE, and whether it is the last."""
        parts: list[bytes] = []
        size = 0
        while size < _CHUNK_SIZE:
            piece = yield PullBody()
            if not piece:
                if normalizer is not None:
                    parts.append(normalizer.end())
                return b"".join(parts), True
            if normalizer is not None:
                piece = normalizer.encode(piece)
            parts.append(piece)
            size += len(piece)
        return b"".join(parts), False

    def _reset(self) -> Procedure:
        """RSET after a failed transaction.

        Only reached while the session is alive: a 421, a closed connection
        or an I/O error has already raised out of _reply.
        """
        yield from self._session.command(Rset())


def _envelope_failure(mail: Mail, mail_reply: Reply, result: SendResult) -> ReplyError | None:
    """The error that ends a transaction whose MAIL or every RCPT was refused."""
    if not mail_reply.is_success:
        return reply_error(mail_reply, command=mail.transcript_line(), phase="MAIL")
    replies = list(result.recipients.values())
    if any(r.is_success for r in replies):
        return None
    permanent = [r for r in replies if r.is_permanent]
    error = reply_error((permanent or replies)[0], phase="RCPT (every recipient refused)")
    error.recipients = dict(result.recipients)
    return error


def _outcome_unknown(exc: SMTPError) -> OutcomeUnknownError:
    if isinstance(exc, OutcomeUnknownError):
        return exc
    unknown = OutcomeUnknownError(f"{exc}: the message may have been accepted")
    unknown.__cause__ = exc
    return unknown


def _envelope_lost(exc: SMTPError) -> SMTPError:
    if not isinstance(exc, OutcomeUnknownError):
        return exc
    lost = ConnectionLostError("the session ended before this message's content was sent")
    lost.__cause__ = exc
    return lost
