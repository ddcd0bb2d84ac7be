# smtpbee/_sasl
#
# The contract every SASL mechanism for SMTP AUTH (RFC 4954) fulfils: the
# SASLMechanism base class, the two errors a mechanism raises, and the few
# checks the mechanism families share. A mechanism is a small synchronous step
# object that never touches the network. The connection owns the wire: it sends
# `AUTH <name> [initial-response]`, base64-decodes each `334` challenge, hands
# the raw bytes to `respond()`, base64-encodes what comes back, sends `*` to
# cancel when `respond()` raises, and calls `success()` on `235`. A mechanism
# only turns decoded challenges into raw responses, so it can be tested with the
# RFC examples alone.
#
# Mechanisms are pluggable: any subclass of SASLMechanism (a name, a
# sends_secret_in_clear flag, initial_response() and respond()) works with the
# connection. smtpbee ships SCRAM in _scram and the simpler mechanisms, with the
# registry of all of them, in _auth.
#
# Layering: this module imports neither _scram nor _auth, _scram builds on it,
# and _auth builds on both, so the registry in _auth lists every mechanism
# without an import cycle.
#
# Contract of a mechanism object:
#   * it serves one exchange and keeps its own step count; build a new one to
#     try again (SCRAM in particular must never reuse its nonce);
#   * initial_response() returns what goes on the AUTH line (None: nothing;
#     b"": an empty response, sent as "="). If the connection cannot send it
#     there (RFC 4954: a line over 512 octets), it may send `AUTH <name>` alone
#     and answer the server's first, empty, challenge by calling respond(b""):
#     a client-first mechanism answers that with its initial response;
#   * respond() raises InvalidChallengeError for a challenge that makes no
#     sense at this step (including one too many), never a bare ValueError;
#   * success() raises AuthenticationIncomplete when a 235 arrives before the
#     mechanism finished: for SCRAM that means the server never proved it knows
#     the password, which is what an impostor looks like;
#   * secrets (passwords, tokens) are fields with repr=False and never appear in
#     a repr, a str or an exception message; bad input is refused with
#     InvalidInputError when the object is built, before any byte is produced.
from __future__ import annotations

import abc
from typing import ClassVar

from ._errors import AuthenticationIncomplete, InvalidChallengeError, InvalidInputError

__all__ = [
    "AuthenticationIncomplete",
    "InvalidChallengeError",
    "SASLMechanism",
    "escape_saslname",
    "printable_server_text",
    "refuse_challenge_before_start",
    "refuse_empty",
]

# An error text quoted from the server is bounded, so a hostile server cannot
# make an exception message (and every log line that shows it) huge.
_MAX_QUOTED_SERVER_TEXT = 200


class SASLMechanism(abc.ABC):
    """One SASL exchange, as a synchronous step object without I/O.

    Subclass it to add a mechanism: set ``name`` and ``sends_secret_in_clear``,
    override ``initial_response()`` if the client speaks first, and implement
    ``respond()``.

    Attributes:
        name: the mechanism name as SMTP AUTH sends it, e.g. "PLAIN".
        sends_secret_in_clear: True when a listener on the connection learns the
            secret (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER); choose_mechanism passes
            over such mechanisms when told not to allow cleartext. (The session
            refuses every mechanism over plaintext or unverified TLS unless the
            caller passes ``allow_insecure``.)
    """

    name: ClassVar[str]
    sends_secret_in_clear: ClassVar[bool] = False

    def initial_response(self) -> bytes | None:
        """The raw bytes to send with the AUTH command.

        Returns:
            None for no initial response; b"" for an empty one (sent as "=").
        """
        return None

    @abc.abstractmethod
    def respond(self, challenge: bytes) -> bytes:
        """Answer one 334 challenge.

        Args:
            challenge: the challenge, already base64-decoded.

        Returns:
            The raw response, which the connection base64-encodes.

        Raises:
            InvalidChallengeError: the challenge makes no sense at this step.
        """

    def success(self) -> None:
        """Called when the server replies 235.

        Raises:
            AuthenticationIncomplete: the mechanism had not finished.
        """
        return None

    @property
    def failure_details(self) -> str | None:
        """The error the server explained itself with during the exchange, if any."""
        return None


def refuse_empty(mechanism: str, what: str, value: str) -> None:
    """Refuse an empty credential field with InvalidInputError."""
    if not value:
        raise InvalidInputError(f"{mechanism}: the {what} is empty")


def refuse_challenge_before_start(mechanism: str, challenge: bytes) -> None:
    """Refuse anything but the empty challenge that asks for a deferred initial response."""
    # A client-first mechanism whose initial response was deferred gets one
    # empty challenge first (RFC 4422 §5); anything else is nonsense.
    if challenge:
        raise InvalidChallengeError(
            f"{mechanism}: the server sent a non-empty challenge before the client's first message"
        )


def escape_saslname(name: str) -> str:
    """Escape a name for a GS2 header or SCRAM ``n=`` (RFC 5801 §4, RFC 5802 §5.1)."""
    return name.replace("=", "=3D").replace(",", "=2C")


def printable_server_text(raw: str) -> str:
    """Server-supplied text made safe to put in an exception message."""
    shown = "".join(char if char.isprintable() else "\N{REPLACEMENT CHARACTER}" for char in raw)
    if len(shown) > _MAX_QUOTED_SERVER_TEXT:
        return shown[:_MAX_QUOTED_SERVER_TEXT] + "..."
    return shown
