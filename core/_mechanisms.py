# smtpbee/_mechanisms
#
# The registry of every SASL mechanism smtpbee ships (MECHANISMS, SCRAM from
# _scram included) and choose_mechanism, which picks the strongest one a server
# offers for a user name and password. Imported only when a password login
# happens: SCRAM brings hashlib, secrets and SASLprep's Unicode tables with it.
#
# choose_mechanism passes over a mechanism that refuses the credentials (SCRAM
# when SASLprep prohibits a character of the password) for the next one, and
# names every reason when nothing fits.
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from ._auth import PASSWORD_MECHANISM_PREFERENCE, CramMD5, Login, OAuthBearer, Plain, XOAuth2
from ._errors import InvalidInputError, UnsupportedExtensionError
from ._sasl import SASLMechanism, printable_server_text
from ._scram import ScramSHA1, ScramSHA256

__all__ = ["MECHANISMS", "choose_mechanism"]

MECHANISMS: Mapping[str, type[SASLMechanism]] = MappingProxyType(
    {
        mechanism.name: mechanism
        for mechanism in (
            ScramSHA256,
            ScramSHA1,
            CramMD5,
            Plain,
            Login,
            XOAuth2,
            OAuthBearer,
        )
    }
)
"""The mechanisms smtpbee ships, by SASL name."""

_PASSWORD_MECHANISMS: Mapping[str, Callable[[str, str], SASLMechanism]] = MappingProxyType(
    {
        "SCRAM-SHA-256": ScramSHA256,
        "SCRAM-SHA-1": ScramSHA1,
        "CRAM-MD5": CramMD5,
        "PLAIN": Plain,
        "LOGIN": Login,
    }
)


def choose_mechanism(
    offered: Iterable[str], username: str, password: str, *, allow_cleartext: bool = True
) -> SASLMechanism:
    """The strongest offered mechanism that can authenticate with a password.

    Mechanisms are tried in PASSWORD_MECHANISM_PREFERENCE order; one that
    refuses the credentials (e.g. SCRAM when SASLprep prohibits a character of the
    password) is passed over for the next.

    Args:
        offered: the mechanism names the server advertised (case-insensitive).
        username: the user name.
        password: the password.
        allow_cleartext: False to pass over the mechanisms that send the password
            itself (PLAIN, LOGIN).

    Returns:
        A fresh mechanism object, ready for one exchange.

    Raises:
        UnsupportedExtensionError: no offered mechanism fits; the message names
            what was offered and why each candidate was passed over.
    """
    offered_names = [name.upper() for name in offered]
    reasons: list[str] = []
    last_refusal: InvalidInputError | None = None
    for name in PASSWORD_MECHANISM_PREFERENCE:
        if name not in offered_names:
            continue
        factory = _PASSWORD_MECHANISMS[name]
        if MECHANISMS[name].sends_secret_in_clear and not allow_cleartext:
            reasons.append(f"{name} would send the password in clear")
            continue
        try:
            return factory(username, password)
        except InvalidInputError as exc:
            reasons.append(str(exc))
            last_refusal = exc
    shown = ", ".join(printable_server_text(name) for name in offered_names) or "none"
    message = (
        f"no usable AUTH mechanism: the server offers {shown}; with a password smtpbee can"
        f" use {', '.join(PASSWORD_MECHANISM_PREFERENCE)}"
    )
    if reasons:
        message += " (" + "; ".join(reasons) + ")"
    raise UnsupportedExtensionError(message) from last_refusal
