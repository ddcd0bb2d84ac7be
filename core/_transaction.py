# smtpbee/_transaction
#
# The mail transaction, written once for every transport: MAIL, RCPT..., and
# the content by DATA or BDAT, on top of the exchange's building blocks (send
# a group of commands in one write, read the next reply).
#
# Theory of operation
# -------------------
# * Pipelined when the server offers PIPELINING: the envelope and DATA (or the
#   first BDAT chunk) go in one write and the replies are read in order; with
#   CHUNKING a small message is one round trip (MAIL, RCPTs, BDAT LAST).
#   Without PIPELINING each command waits for its reply.
# * The body is pulled (PullBody) piece by piece and never held whole: DATA
#   content is written in pieces of about _WRITE_SIZE (the last one together
#   with the terminator), BDAT in chunks of about BDAT_CHUNK_SIZE. A body the
#   caller already holds whole comes with the plan (BodyInfo.content) and is
#   taken as the one piece, with no PullBody round trip.
# * A refused envelope (MAIL, or every RCPT) or a refused content ends the
#   transaction with a ReplyError after an RSET, so the session can go on; a
#   DATA that is accepted although every recipient was refused gets the
#   terminator alone (RFC 2920 §3.1).
# * A refusal read settles its transaction: when the server then closes (or
#   breaks SMTP) before the RSET or before the rest of a pipelined envelope
#   is answered, the refusal is what the caller gets, not a connection error
#   that would invite a retry; the session is over all the same.
# * What each reply means comes from the events (accepted or not, a
#   ContentRequested for the 354, the recipient of each LMTP reply): nothing
#   here reads a reply code.
# * send_batch overlaps consecutive transactions where RFC 2920 allows it: the
#   end of one content and the next envelope share a write, so each message
#   costs one round trip. Every job is settled on its own, and a failure that
#   ends the session keeps the results already settled: the rest get the error
#   (OutcomeUnknownError for each one whose content was out).
# * With CHUNKING, send_batch keeps a window of whole transactions in flight:
#   MAIL, RCPT... and BDAT LAST with the content, up to _TRANSACTIONS_IN_FLIGHT
#   of them written before the oldest one's replies are read. RFC 2920 §3.1
#   ends a group only at EHLO, DATA, VRFY, EXPN, TURN, QUIT and NOOP, and RFC
#   3030 §4.2 lets BDAT be pipelined, so the next MAIL may follow a BDAT LAST
#   unanswered. The replies come in order, so each is matched to its
#   transaction by position. A refused MAIL or a transaction with every RCPT
#   refused still has its chunk read and dropped by the server (RFC 3030 §2),
#   its BDAT LAST answered with an error. What a refused BDAT leaves behind is
#   not defined (RFC 1830 called it indeterminate and asked for RSET), so a
#   transaction written behind one that is unanswered, or was refused, starts
#   with an RSET in the same group: RCPTs can never join a transaction left
#   open under another sender. After a refusal the window is answered whole
#   before anything more is written. A message larger than one chunk goes
#   alone, once the window is answered.
# * Controls (_control): a stop at MAIL, RCPT or DATA sends the envelope only
#   up to that point (with PIPELINING too: the group is cut there), a stop at
#   DOT acts once the content is written or answered. A forced BDAT chunk size
#   cuts the content into chunks of exactly that many octets. With a stop set,
#   a batch does not overlap its transactions, so each point is where it says.
from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from ._commands import (
    MAIL_OPTIONS,
    RCPT_OPTIONS,
    Bdat,
    BodyType,
    Command,
    Data,
    EndOfData,
    Mail,
    MessageData,
    Rcpt,
    Rset,
)
from ._control import ControlPoint, SessionControls
from ._data import LineEndingNormalizer
from ._errors import (
    ConnectionLostError,
    InvalidInputError,
    LocalProtocolError,
    OutcomeUnknownError,
    ReplyError,
    SMTPError,
    UnsupportedExtensionError,
    reply_error,
)
from ._events import ContentRequested, ReplyReceived
from ._exchange import Exchange, ReplyEvent
from ._extensions import Extensions
from ._replies import Reply
from ._requests import Procedure, PullBody
from ._validation import parse_reverse_path

__all__ = [
    "BDAT_CHUNK_SIZE",
    "BodyInfo",
    "MailJob",
    "MailTransactions",
    "SendResult",
    "wants_smtputf8",
]

BDAT_CHUNK_SIZE = 1 << 20
"""About how many octets of content a BDAT chunk carries (file bodies are read in
pieces of this size, so that a chunk is a piece as read, not a join of smaller ones)."""
# How many BDAT chunks may await their replies: enough to keep a link busy,
# few enough that a refusal wastes little.
_CHUNKS_IN_FLIGHT = 4
# How many whole transactions (MAIL, RCPT..., BDAT LAST) a CHUNKING batch
# writes before it reads their replies: a sixteenth of a round trip per
# message, their replies (about a kilobyte) far below what a socket buffers,
# so neither side can block the other's writes (RFC 2920 §3.1), and a 421 or
# a throttle meets at most this many messages already written.
_TRANSACTIONS_IN_FLIGHT = 16
_WRITE_SIZE = 1 << 16
_MAIL_POINT = ControlPoint.MAIL
_DATA_POINT = ControlPoint.DATA
_DOT = ControlPoint.DOT
_Failure = TypeVar("_Failure", bound=SMTPError)
_ENVELOPE_POINTS = frozenset({ControlPoint.MAIL, ControlPoint.RCPT, ControlPoint.DATA})
# Requests are values: the one every body piece asks with is built once.
_PULL_BODY = PullBody()


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
    content: bytes | None = field(default=None, repr=False, compare=False)
    """The body itself, when it is held whole: sent as it is, and no PullBody is asked."""

    @classmethod
    def of_bytes(cls, body: bytes) -> BodyInfo:
        """What is known of a body held whole: its size, and whether it is 8-bit."""
        return cls(size=len(body), eight_bit=not body.isascii())

    @classmethod
    def whole(cls, body: bytes) -> BodyInfo:
        """A body held whole and handed over with the plan: no PullBody is asked for it."""
        return cls(size=len(body), eight_bit=not body.isascii(), content=body)


def wants_smtputf8(extensions: Extensions, *, addresses: bool, headers: bool) -> bool:
    """Whether a message goes as SMTPUTF8 (RFC 6531).

    Args:
        extensions: what the server offers.
        addresses: an envelope address is not ASCII (then SMTPUTF8 is
            required: the transaction is refused without it).
        headers: the message has non-ASCII header text, which can go as
            UTF-8 only under SMTPUTF8 (RFC 2047 encoded otherwise).
    """
    return addresses or (headers and extensions.smtputf8)


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
        refused = self.refused
        return [a for a in self.recipients if a not in refused]


@dataclass(frozen=True, slots=True, kw_only=True)
class MailJob:
    """One message: its envelope and what is known of its body.

    ``mail_options`` holds Mail's keyword arguments (size, body, smtputf8, ret,
    envid, requiretls, mt_priority, auth, extra); ``rcpt_options`` Rcpt's
    (notify, orcpt, extra), applied to every recipient.

    Attributes:
        sender: the envelope sender; "" is the null sender ``<>``.
        recipients: the envelope recipients.
        body: what is known of the body before it is read.
        smtputf8: send as SMTPUTF8 even with ASCII addresses.
        mail_options: keyword arguments of Mail besides ``sender``.
        rcpt_options: keyword arguments of Rcpt besides ``recipient``.
    """

    sender: str
    recipients: Sequence[str]
    body: BodyInfo
    smtputf8: bool = False
    mail_options: Mapping[str, Any] | None = None
    rcpt_options: Mapping[str, Any] | None = None


def _check_options(options: Mapping[str, Any] | None, valid: frozenset[str], what: str) -> None:
    unknown = sorted(set(options or ()) - valid)
    if unknown:
        raise InvalidInputError(
            f"unknown {what} {', '.join(map(repr, unknown))}: the keys are"
            f" {', '.join(sorted(valid))}"
        )


class MailTransactions:
    """The mail-transaction procedures over one Exchange."""

    def __init__(
        self,
        exchange: Exchange,
        controls: SessionControls | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self._exchange = exchange
        self._conn = exchange.conn
        self._controls = controls or SessionControls(exchange, None)
        # The stop point, if any: checked where the content ends (DOT).
        self._point = self._controls.point
        self._chunk_size = chunk_size
        # Content octets pulled and not yet sent in a chunk of _chunk_size.
        self._held = bytearray()
        self._held_ended = False
        # Whether the body being sent was read to its end (b""): a batch
        # hands out its bodies one after another, so a job that ends early
        # must have the rest of its body skipped, or the next job would send it.
        self._body_ended = False
        # The body of the current job when the plan holds it whole
        # (BodyInfo.content): handed out without a PullBody, then b"".
        self._unpulled: bytes | None = None
        # What ended the session after a refusal had settled its transaction
        # (see _reset_after): the error for the jobs of a batch that follow.
        self._ended_after_refusal: SMTPError | None = None

    def _begin_body(self, body: BodyInfo) -> None:
        """The next pieces are this body's."""
        self._body_ended = False
        self._unpulled = body.content

    def _pull(self) -> Procedure[bytes]:
        piece = self._unpulled
        if piece is None:
            piece = yield _PULL_BODY
        else:
            self._unpulled = b""
        if not piece:
            self._body_ended = True
        return piece

    def _skip_body(self) -> Procedure[None]:
        """Consume what is left of a job's body unsent, so the next job's body comes next."""
        while not self._body_ended:
            yield from self._pull()

    def sendmail(self, job: MailJob) -> Procedure[SendResult]:
        """One mail transaction: MAIL, RCPT..., DATA or BDAT; the body is pulled.

        Pipelined when the server offers PIPELINING, chunked when it offers
        CHUNKING (then a small message is one round trip). Returns a
        SendResult when at least one recipient got the message.

        Raises:
            ReplyError: MAIL refused, every recipient refused (``.recipients``
                holds each reply), or the content refused. The transaction is
                reset first, so the session can go on; when the server closes
                instead, the refusal is still what is raised.
            LocalProtocolError: bad input; nothing was sent.
            OutcomeUnknownError: the connection failed after content was
                written (``.recipients`` says who would have it).
        """
        self._begin_body(job.body)
        mail, rcpts, chunked = self._prepare(job)
        result = SendResult(recipients={})
        try:
            return (yield from self._transaction(mail, rcpts, job.body, chunked, result))
        except OutcomeUnknownError as exc:
            exc.recipients = dict(result.recipients)
            raise

    def _prepare(self, job: MailJob) -> tuple[Mail, list[Rcpt], bool]:
        """The MAIL and RCPT commands for a message, checked; whether to use BDAT."""
        if job.mail_options:
            _check_options(job.mail_options, MAIL_OPTIONS, "mail_options key")
        if job.rcpt_options:
            _check_options(job.rcpt_options, RCPT_OPTIONS, "rcpt_options key")
        # A recipient named twice would get two RCPTs but one entry in the
        # result, and LMTP would then answer more often than counted.
        recipients = list(dict.fromkeys(job.recipients))
        if not recipients:
            raise InvalidInputError("at least one recipient is needed")
        ext = self._conn.extensions
        if job.rcpt_options:
            options = dict(job.rcpt_options)
            rcpts = [Rcpt(recipient=r, **options) for r in recipients]
        else:
            rcpts = [_plain_rcpt(r) if type(r) is str else Rcpt(recipient=r) for r in recipients]
        sender = job.sender
        international = (
            _sender_needs_smtputf8(sender)
            if type(sender) is str
            else _sender_needs_smtputf8.__wrapped__(sender)  # refuses it, uncached
        )
        if not international:
            for rcpt in rcpts:
                if rcpt.needs_smtputf8:
                    international = True
                    break
        needs_utf8 = job.smtputf8 or international
        body = job.body
        body_type: BodyType | None = None
        if body.binary:
            body_type = "BINARYMIME"
        elif body.eight_bit or (body.eight_bit is None and ext.eightbitmime):
            if ext.eightbitmime:
                body_type = "8BITMIME"
            elif not needs_utf8:
                raise UnsupportedExtensionError(
                    "the message has 8-bit content and the server does not offer 8BITMIME"
                )
        size = body.size if body.size is not None and ext.supports_size else None
        chosen = job.mail_options
        mail_args: dict[str, Any]
        if chosen:
            # What the caller chose stands; the rest is filled in.
            mail_args = dict(chosen)
            mail_args.setdefault("smtputf8", needs_utf8)
            if body_type is not None:
                mail_args.setdefault("body", body_type)
            if size is not None:
                mail_args.setdefault("size", size)
        else:
            mail_args = {"size": size, "body": body_type, "smtputf8": needs_utf8}
        mail = None
        if mail_args.keys() <= _PLAIN_MAIL_OPTIONS and type(sender) is str:
            try:  # noqa: SIM105 - suppress() would cost a context manager per message
                mail = _plain_mail(
                    sender, mail_args.get("size"), mail_args.get("body"), mail_args["smtputf8"]
                )
            except TypeError:  # unhashable: Mail() says what is wrong
                pass
        if mail is None:
            mail = Mail(sender=sender, **mail_args)
        chunked = self._chunk_size is not None or (
            ext.chunking and (self._conn.pipelining or body.binary)
        )
        if chunked and self._point is _DATA_POINT:
            if body.binary:
                raise InvalidInputError(
                    "binary content goes with BDAT, which has no DATA command to stop at"
                )
            # A stop at DATA needs a DATA command.
            chunked = False
        return mail, rcpts, chunked

    def _transaction(
        self, mail: Mail, rcpts: list[Rcpt], body: BodyInfo, chunked: bool, result: SendResult
    ) -> Procedure[SendResult]:
        if self._point is not None and self._point in _ENVELOPE_POINTS:
            yield from self._envelope_until(self._point, mail, rcpts, result)
        if self._chunk_size is not None:
            self._held = bytearray()
            self._held_ended = False
        if self._conn.pipelining:
            return (yield from self._pipelined_transaction(mail, rcpts, body, chunked, result))
        return (yield from self._lockstep_transaction(mail, rcpts, body, chunked, result))

    def send_batch(self, jobs: Iterable[MailJob]) -> Procedure[list[SendResult | SMTPError]]:
        """Several mail transactions on this session, each settled on its own.

        With PIPELINING (and DATA), consecutive transactions overlap as RFC 2920
        §3.1 allows: the end of one message's content, its terminator, and the
        next MAIL, RCPTs and DATA go out in one write, so each message costs one
        round trip. With CHUNKING, up to _TRANSACTIONS_IN_FLIGHT whole
        transactions (MAIL, RCPTs, BDAT LAST) are written before the oldest
        one's replies are read, so a message costs a fraction of a round trip.

        Returns one entry per job, in order: its SendResult, or the SMTPError
        that ended it (a refusal, bad input). When the session ends midway,
        the jobs settled before keep their results, each message whose content
        was out gets OutcomeUnknownError (or the server's 421), and every other
        job the error that ended the session.
        """
        jobs = list(jobs)
        conn = self._conn
        # LMTP's replies per recipient make overlapping more trouble than it
        # saves; a stop point or a forced chunk size must act where it says.
        overlap = (
            conn.pipelining and not conn.lmtp and self._chunk_size is None and self._point is None
        )
        if overlap and conn.extensions.chunking:
            return (yield from self._chunked_batch(jobs))
        results: list[SendResult | SMTPError | None] = [None] * len(jobs)
        carry: list[Command] = []
        awaiting: tuple[int, SendResult] | None = None
        index = -1
        try:
            for index, job in enumerate(jobs):
                self._begin_body(job.body)
                try:
                    mail, rcpts, chunked = self._prepare(job)
                except LocalProtocolError as exc:
                    results[index] = exc
                    yield from self._skip_body()
                    continue
                if not overlap:
                    try:
                        results[index] = yield from self._transaction(
                            mail, rcpts, job.body, chunked, SendResult(recipients={})
                        )
                    except (ReplyError, LocalProtocolError) as exc:
                        if not conn.open:
                            raise
                        results[index] = exc
                        yield from self._skip_body()
                    continue
                try:
                    yield from self._exchange.send([*carry, mail, *rcpts, Data()])
                except LocalProtocolError as exc:
                    # Nothing of the group went out: end the previous message
                    # alone, and this job fails on its own.
                    if carry:
                        yield from self._exchange.send(carry)
                    results[index] = exc
                    carry = []
                    if awaiting is not None:
                        results[awaiting[0]] = yield from self._settle(awaiting[1])
                        awaiting = None
                    yield from self._skip_body()
                    continue
                carry = []
                if awaiting is not None:
                    results[awaiting[0]] = yield from self._settle(awaiting[1])
                    awaiting = None
                result = SendResult(recipients={})
                opener, failure = yield from self._envelope_replies(mail, rcpts, result)
                if failure is not None or not isinstance(opener, ContentRequested):
                    results[index] = yield from self._abandon(failure, opener)
                    if self._ended_after_refusal is not None:
                        raise self._ended_after_refusal
                    yield from self._skip_body()
                    continue
                carry = yield from self._stream_content([EndOfData()], write_last=False)
                awaiting = (index, result)
            if awaiting is not None:
                yield from self._exchange.send(carry)
                results[awaiting[0]] = yield from self._settle(awaiting[1])
        except SMTPError as exc:
            # The session is over. The message whose content was out has the
            # error the exchange chose for it (OutcomeUnknownError, or the
            # server's answer); a refusal that came before the end is its
            # job's result; the others were not delivered.
            ended = self._ended_after_refusal or exc
            if awaiting is not None:
                results[awaiting[0]] = exc
            elif exc is not ended and results[index] is None:
                results[index] = exc
            lost = _envelope_lost(ended)
            for later in range(max(index, 0), len(jobs)):
                if results[later] is None:
                    results[later] = ended if awaiting is None and later == index else lost
        return [result for result in results if result is not None]

    def _chunked_batch(self, jobs: list[MailJob]) -> Procedure[list[SendResult | SMTPError]]:
        """send_batch with PIPELINING and CHUNKING: a window of whole transactions.

        Each message that fits in one chunk goes as one group, MAIL, RCPT...
        and BDAT LAST with its content, and up to _TRANSACTIONS_IN_FLIGHT
        groups (and about BDAT_CHUNK_SIZE octets of content) are written before
        the oldest one's replies are read. A larger message goes alone once
        the window is answered.
        """
        results: list[SendResult | SMTPError | None] = [None] * len(jobs)
        window = _Window()
        # Whether the server may still hold a transaction that the next MAIL
        # would meet: the newest one written is unanswered, or was refused.
        unsettled = False
        writing = alone = False
        index = -1
        try:
            for index, job in enumerate(jobs):
                self._begin_body(job.body)
                try:
                    mail, rcpts, _ = self._prepare(job)
                except LocalProtocolError as exc:
                    results[index] = exc
                    yield from self._skip_body()
                    continue
                normalizer = None if job.body.binary else LineEndingNormalizer()
                data, last = yield from self._next_chunk(normalizer)
                if not last:
                    if window.entries:
                        yield from self._settle_window(window, results, keep=0)
                        unsettled = window.newest_refused
                    alone = True
                    outcome = yield from self._transaction_alone(
                        mail, rcpts, job.body, (data, normalizer), reset_first=unsettled
                    )
                    alone = False
                    results[index] = outcome
                    # A refusal was followed by an RSET already; a group that
                    # could not be written changed nothing.
                    unsettled = unsettled and isinstance(outcome, LocalProtocolError)
                    continue
                entry = _InFlight(index, mail, rcpts, Bdat(data, last=True), reset_first=unsettled)
                writing = True
                try:
                    yield from self._exchange.send(entry.group())
                except LocalProtocolError as exc:
                    # Nothing of the group went out: this job fails on its own.
                    results[index] = exc
                    writing = False
                    continue
                writing = False
                window.add(entry)
                unsettled = True
                keep = 0 if window.refused else _TRANSACTIONS_IN_FLIGHT - 1
                if window.octets >= BDAT_CHUNK_SIZE:
                    keep = 0
                yield from self._settle_window(window, results, keep=keep)
                unsettled = bool(window.entries) or window.newest_refused
            yield from self._settle_window(window, results, keep=0)
        except SMTPError as exc:
            # The session is over. The transaction whose replies were being
            # read has the error the exchange chose for it (OutcomeUnknownError,
            # the server's 421, or a refusal read before the end); the others
            # written have their content out, unanswered; the rest were not sent.
            ended = self._ended_after_refusal or exc
            entries = window.entries
            if entries:
                results[entries.popleft().index] = exc
            for entry in entries:
                results[entry.index] = ended
            if writing or alone:
                results[index] = exc if alone else ended
            lost = _envelope_lost(ended)
            for later in range(len(jobs)):
                if results[later] is None:
                    results[later] = lost
        return [result for result in results if result is not None]

    def _settle_window(
        self, window: _Window, results: list[SendResult | SMTPError | None], keep: int
    ) -> Procedure[None]:
        """Read the replies of the oldest transactions until ``keep`` are left.

        After a refusal every transaction still in flight is answered before
        anything more is written: what state the server is in cannot be
        foreseen past a refusal, and the connection sends nothing until then.
        """
        entries = window.entries
        while len(entries) > keep or (entries and window.refused):
            entry = entries[0]
            outcome = yield from self._settle_in_flight(entry)
            entries.popleft()
            results[entry.index] = outcome
            window.octets -= len(entry.chunk.data)
            window.newest_refused = not isinstance(outcome, SendResult)
            window.refused = window.refused or window.newest_refused
        if not entries:
            window.refused = False

    def _settle_in_flight(self, entry: _InFlight) -> Procedure[SendResult | SMTPError]:
        """The replies of one transaction of a window, matched to it in order."""
        if entry.reset_first:
            # Whatever it met, a MAIL accepted after it starts a transaction
            # afresh; a refused one leaves nothing to deliver.
            yield from self._exchange.reply()
        result = entry.result
        chunk_event, failure = yield from self._envelope_replies(entry.mail, entry.rcpts, result)
        if failure is not None:
            # The server read and dropped the content (RFC 3030 §2).
            return failure
        result.data = chunk_event.reply
        if chunk_event.accepted:
            return result
        return reply_error(chunk_event.reply, command=entry.chunk.transcript_line(), phase="BDAT")

    def _transaction_alone(
        self,
        mail: Mail,
        rcpts: list[Rcpt],
        body: BodyInfo,
        opening: tuple[bytes, LineEndingNormalizer | None],
        *,
        reset_first: bool,
    ) -> Procedure[SendResult | ReplyError | LocalProtocolError]:
        """A message of a CHUNKING batch too large for the window; its first chunk pulled."""
        try:
            return (
                yield from self._pipelined_transaction(
                    mail,
                    rcpts,
                    body,
                    True,
                    SendResult(recipients={}),
                    opening=opening,
                    reset_first=reset_first,
                )
            )
        except (ReplyError, LocalProtocolError) as exc:
            if not self._conn.open:
                raise
            yield from self._skip_body()
            return exc

    def _envelope_until(
        self, point: ControlPoint, mail: Mail, rcpts: list[Rcpt], result: SendResult
    ) -> Procedure[NoReturn]:
        """The envelope up to a stop point (with PIPELINING, one group cut there), then stop."""
        commands: list[Command] = [mail] if point is _MAIL_POINT else [mail, *rcpts]
        if point is _DATA_POINT:
            commands.append(Data())
        exchange = self._exchange
        controls = self._controls
        if self._conn.pipelining:
            yield from exchange.send(commands)
            controls.sent(point)
            for _ in commands:
                last = yield from exchange.reply()
            raise (yield from controls.end(last.reply))
        mail_event = yield from self._phase_command(mail, _MAIL_POINT)
        if point is _MAIL_POINT:
            raise (yield from controls.end(mail_event.reply))
        if not mail_event.accepted:
            # Lock-step goes no further than a refused envelope allows.
            refusal = reply_error(mail_event.reply, command=mail.transcript_line(), phase="MAIL")
            raise (yield from self._reset_after(refusal))
        for rcpt in rcpts:
            event = yield from self._phase_command(
                rcpt, ControlPoint.RCPT if rcpt is rcpts[-1] else None
            )
            result.recipients[rcpt.recipient] = event.reply
        if point is ControlPoint.RCPT:
            raise (yield from controls.end(event.reply))
        failure = _envelope_failure(mail, mail_event, result)
        if failure is not None:
            raise (yield from self._reset_after(failure))
        event = yield from self._phase_command(Data(), _DATA_POINT)
        raise (yield from controls.end(event.reply))

    def _phase_command(self, command: Command, point: ControlPoint | None) -> Procedure[ReplyEvent]:
        """One command and its reply; the command of ``point`` may stop after it is sent."""
        yield from self._exchange.send([command])
        if point is not None:
            self._controls.sent(point)
        return (yield from self._exchange.reply())

    def _envelope_replies(
        self, mail: Mail, rcpts: list[Rcpt], result: SendResult
    ) -> Procedure[tuple[ReplyEvent, ReplyError | None]]:
        """The replies to MAIL, each RCPT and the opener; the envelope's failure, if any."""
        reply = self._exchange.reply
        mail_event = yield from reply()
        answered = 0
        try:
            for rcpt in rcpts:
                result.recipients[rcpt.recipient] = (yield from reply()).reply
                answered += 1
            opener = yield from reply()
        except SMTPError as exc:
            # The session ended with part of the group unanswered: a refused
            # MAIL, or every recipient refused, settled the envelope already.
            settled = not mail_event.accepted or answered == len(rcpts)
            failure = _envelope_failure(mail, mail_event, result) if settled else None
            if failure is None:
                raise
            failure.__context__ = exc
            self._ended_after_refusal = exc
            raise failure  # noqa: B904 - the refusal is the outcome, exc its context
        return opener, _envelope_failure(mail, mail_event, result)

    def _abandon(self, failure: ReplyError | None, opener: ReplyEvent) -> Procedure[ReplyError]:
        """End a transaction whose envelope or opener was refused; return the error."""
        if isinstance(opener, ContentRequested):
            # RFC 2920 §3.1: DATA accepted with no recipient: end it at once.
            yield from self._exchange.send([EndOfData()])
            yield from self._exchange.reply()
        return (
            yield from self._reset_after(
                failure or reply_error(opener.reply, command="DATA", phase="DATA")
            )
        )

    def _settle(self, result: SendResult) -> Procedure[SendResult | SMTPError]:
        """Read the final reply of an overlapped transaction.

        No RSET on failure: the transaction is over, and the next one is
        already on its way.
        """
        event = yield from self._exchange.reply()
        result.data = event.reply
        if isinstance(event, ReplyReceived) and event.accepted:
            return result
        return reply_error(event.reply, phase="DATA (end of content)")

    def _pipelined_transaction(
        self,
        mail: Mail,
        rcpts: list[Rcpt],
        body: BodyInfo,
        chunked: bool,
        result: SendResult,
        *,
        opening: tuple[bytes, LineEndingNormalizer | None] | None = None,
        reset_first: bool = False,
    ) -> Procedure[SendResult]:
        """MAIL, RCPTs and the opener in one group, then the content.

        ``opening`` is a first chunk (not the last) already pulled, and its
        normalizer; ``reset_first`` puts an RSET in front of the group.
        """
        opener: Bdat | Data
        if opening is not None:
            data, normalizer = opening
            opener = Bdat(data)
        else:
            normalizer = None if body.binary else LineEndingNormalizer()
            if chunked:
                data, last = yield from self._next_chunk(normalizer)
                opener = Bdat(data, last=last)
            else:
                opener = Data()
        group: list[Command] = [Rset()] if reset_first else []
        yield from self._exchange.send([*group, mail, *rcpts, opener])
        if reset_first:
            yield from self._exchange.reply()
        if self._point is _DOT and isinstance(opener, Bdat) and opener.last:
            self._controls.sent(_DOT)
        opener_event, failure = yield from self._envelope_replies(mail, rcpts, result)
        if failure is not None:
            raise (yield from self._abandon(failure, opener_event))
        if isinstance(opener, Bdat):
            return (yield from self._chunks(result, opener, opener_event, normalizer))
        return (yield from self._data_content(result, opener_event))

    def _lockstep_transaction(
        self, mail: Mail, rcpts: list[Rcpt], body: BodyInfo, chunked: bool, result: SendResult
    ) -> Procedure[SendResult]:
        command = self._exchange.command
        mail_event = yield from command(mail)
        if mail_event.accepted:
            for rcpt in rcpts:
                result.recipients[rcpt.recipient] = (yield from command(rcpt)).reply
        failure = _envelope_failure(mail, mail_event, result)
        if failure is not None:
            raise (yield from self._reset_after(failure))
        if chunked:
            normalizer = None if body.binary else LineEndingNormalizer()
            data, last = yield from self._next_chunk(normalizer)
            opener = Bdat(data, last=last)
            opener_event = yield from self._phase_command(opener, _DOT if last else None)
            return (yield from self._chunks(result, opener, opener_event, normalizer))
        data_event = yield from command(Data())
        return (yield from self._data_content(result, data_event))

    def _stream_content(
        self, trailer: list[Command], *, write_last: bool = True
    ) -> Procedure[list[Command]]:
        """Pull the body and send it as DATA content, then ``trailer`` (EndOfData...).

        Small pieces are gathered up to _WRITE_SIZE, and the last piece goes in
        the same write as the trailer: a small message is one write. With
        ``write_last=False`` that last group is returned instead of written, so
        the caller can put the next transaction's envelope behind it.
        """
        held: list[bytes] = []
        held_size = 0
        while True:
            piece = yield from self._pull()
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
                if self._point is _DOT:
                    self._controls.sent(_DOT)
                return []

    def _send_content(self, group: list[Command]) -> Procedure[None]:
        try:
            yield from self._exchange.send(group)
        except LocalProtocolError:
            # Ending the content now would deliver a truncated message,
            # and DATA has no other way out: the session must die.
            self._conn.send_failed()
            raise

    def _data_content(self, result: SendResult, opener: ReplyEvent) -> Procedure[SendResult]:
        if not isinstance(opener, ContentRequested):
            raise (yield from self._abandon(None, opener))
        yield from self._stream_content([EndOfData()])
        return (yield from self._final_replies(result, "DATA"))

    def _chunks(
        self,
        result: SendResult,
        chunk: Bdat,
        event: ReplyEvent,
        normalizer: LineEndingNormalizer | None,
    ) -> Procedure[SendResult]:
        """Go on with BDAT after the first chunk was answered.

        With PIPELINING up to _CHUNKS_IN_FLIGHT chunks go out before their
        replies are read (RFC 3030 §4.2), so a large message does not wait a
        round trip per chunk; without it, each chunk waits for its reply.
        """
        exchange = self._exchange
        window = _CHUNKS_IN_FLIGHT if self._conn.pipelining else 1
        unanswered: deque[Bdat] = deque()
        last_sent = chunk.last
        while True:
            if chunk.last and self._point is _DOT and not self._conn.lmtp:
                yield from self._controls.reached(_DOT, event.reply)
            if self._conn.lmtp and chunk.last:
                return (yield from self._lmtp_delivery(result, event, "BDAT"))
            if not event.accepted:
                for _ in unanswered:  # already on their way: their replies come first
                    yield from exchange.reply()
                refusal = reply_error(event.reply, command=chunk.transcript_line(), phase="BDAT")
                raise (yield from self._reset_after(refusal))
            if chunk.last:
                result.data = event.reply
                return result
            while not last_sent and len(unanswered) < window:
                data, last_sent = yield from self._next_chunk(normalizer)
                following = Bdat(data, last=last_sent)
                try:
                    yield from exchange.send([following])
                except LocalProtocolError as exc:
                    # Nothing of this chunk went out: abandon the transaction.
                    for _ in unanswered:
                        yield from exchange.reply()
                    raise (yield from self._reset_after(exc))  # noqa: B904 - exc itself
                if last_sent and self._point is _DOT:
                    self._controls.sent(_DOT)
                unanswered.append(following)
            chunk = unanswered.popleft()
            event = yield from exchange.reply()

    def _final_replies(self, result: SendResult, phase: str) -> Procedure[SendResult]:
        first = yield from self._exchange.reply()
        if self._conn.lmtp:
            return (yield from self._lmtp_delivery(result, first, phase))
        if self._point is _DOT:
            yield from self._controls.reached(_DOT, first.reply)
        result.data = first.reply
        if not first.accepted:
            refusal = reply_error(first.reply, phase=f"{phase} (end of content)")
            raise (yield from self._reset_after(refusal))
        return result

    def _lmtp_delivery(
        self, result: SendResult, first: ReplyEvent, phase: str
    ) -> Procedure[SendResult]:
        # RFC 2033 §4.2: one reply per accepted recipient, in RCPT order; the
        # connection binds each to its recipient and keeps the command pending
        # until the last one.
        event = first
        while True:
            # Only reached with a recipient accepted: a refused envelope was reset.
            assert isinstance(event, ReplyReceived) and event.recipient is not None
            result.delivery[event.recipient] = event.reply
            result.data = event.reply
            if not self._conn.pending or self._conn.pending[0] is not event.command:
                break
            event = yield from self._exchange.reply()
        if self._point is _DOT:
            yield from self._controls.reached(_DOT, event.reply)
        if not any(reply.is_success for reply in result.delivery.values()):
            error = reply_error(
                event.reply, phase=f"{phase} (LMTP delivery to every recipient failed)"
            )
            error.recipients = dict(result.delivery)
            raise (yield from self._reset_after(error))
        return result

    def _next_chunk(self, normalizer: LineEndingNormalizer | None) -> Procedure[tuple[bytes, bool]]:
        """The next BDAT chunk, up to about BDAT_CHUNK_SIZE, and whether it is the last."""
        if self._chunk_size is not None:
            return (yield from self._next_sized_chunk(normalizer, self._chunk_size))
        parts: list[bytes] = []
        size = 0
        while size < BDAT_CHUNK_SIZE:
            piece = yield from self._pull()
            if not piece:
                ending = b"" if normalizer is None else normalizer.end()
                if ending or not parts:
                    parts.append(ending)
                # One part is the piece as pulled: joining it alone copies nothing.
                return b"".join(parts), True
            if normalizer is not None:
                piece = normalizer.encode(piece)
            parts.append(piece)
            size += len(piece)
        return b"".join(parts), False

    def _next_sized_chunk(
        self, normalizer: LineEndingNormalizer | None, size: int
    ) -> Procedure[tuple[bytes, bool]]:
        """The next chunk of exactly ``size`` octets (the last may be shorter)."""
        held = self._held
        # One octet more than a chunk tells whether this chunk is the last.
        while len(held) <= size and not self._held_ended:
            piece = yield from self._pull()
            if not piece:
                self._held_ended = True
                if normalizer is not None:
                    held += normalizer.end()
            else:
                held += piece if normalizer is None else normalizer.encode(piece)
        if len(held) > size:
            chunk = bytes(held[:size])
            del held[:size]
            return chunk, False
        chunk = bytes(held)
        held.clear()
        return chunk, True

    def _reset_after(self, failure: _Failure) -> Procedure[_Failure]:
        """RSET after a failed transaction; the failure to raise, whatever the RSET met.

        A server that closes, or breaks SMTP, right after refusing ends the
        session (the exchange did), but the refusal stays the outcome: what
        the RSET met becomes its ``__context__``.
        """
        try:
            yield from self._exchange.command(Rset())
        except SMTPError as exc:
            failure.__context__ = exc
            self._ended_after_refusal = exc
        return failure


# Commands are immutable and keep their rendered line: a bulk sender's
# envelope, the same sender and recipients message after message, is built,
# checked and rendered once. Only envelopes without further options are kept,
# and a bad address is refused every time (an error is never cached).
_PLAIN_MAIL_OPTIONS = frozenset({"size", "body", "smtputf8"})


@functools.lru_cache(maxsize=256)
def _plain_mail(sender: str, size: int | None, body: BodyType | None, smtputf8: bool) -> Mail:
    return Mail(sender=sender, size=size, body=body, smtputf8=smtputf8)


@functools.lru_cache(maxsize=1024)
def _plain_rcpt(recipient: str) -> Rcpt:
    return Rcpt(recipient=recipient)


@functools.lru_cache(maxsize=256)
def _sender_needs_smtputf8(sender: str) -> bool:
    """Whether the sender, checked, has a non-ASCII address (a bad one raises, every time)."""
    path = parse_reverse_path(sender)
    return path is not None and path.needs_smtputf8


def _envelope_failure(mail: Mail, mail_event: ReplyEvent, result: SendResult) -> ReplyError | None:
    """The error that ends a transaction whose MAIL or every RCPT was refused."""
    if not mail_event.accepted:
        return reply_error(mail_event.reply, command=mail.transcript_line(), phase="MAIL")
    replies = result.recipients.values()
    for reply in replies:
        if reply.is_success:
            return None
    permanent = [r for r in replies if r.is_permanent]
    error = reply_error((permanent or list(replies))[0], phase="RCPT (every recipient refused)")
    error.recipients = dict(result.recipients)
    return error


def _envelope_lost(exc: SMTPError) -> SMTPError:
    """The error of a job the session ended before its content went out."""
    if not isinstance(exc, OutcomeUnknownError):
        return exc
    lost = ConnectionLostError("the session ended before this message's content was sent")
    lost.__cause__ = exc
    return lost


@dataclass(slots=True)
class _InFlight:
    """One transaction of a CHUNKING batch's window: written whole, unanswered."""

    index: int
    mail: Mail
    rcpts: list[Rcpt]
    chunk: Bdat
    # An RSET goes first when the transaction before may not have ended
    # (RFC 3030 leaves the state after a refused BDAT undefined): without it,
    # RCPTs could join a transaction left open under another sender.
    reset_first: bool
    result: SendResult = field(default_factory=lambda: SendResult(recipients={}))

    def group(self) -> list[Command]:
        commands: list[Command] = [Rset()] if self.reset_first else []
        return [*commands, self.mail, *self.rcpts, self.chunk]


@dataclass(slots=True)
class _Window:
    """The transactions of a CHUNKING batch in flight, oldest first."""

    entries: deque[_InFlight] = field(default_factory=deque)
    octets: int = 0
    # A transaction of this window was refused: read the rest before writing.
    refused: bool = False
    newest_refused: bool = False

    def add(self, entry: _InFlight) -> None:
        self.entries.append(entry)
        self.octets += len(entry.chunk.data)
