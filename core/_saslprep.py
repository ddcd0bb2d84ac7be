# smtpbee/_saslprep
#
# SASLprep (RFC 4013): the stringprep (RFC 3454) profile that turns a user name
# or password into the one canonical form both ends hash or compare. SCRAM needs
# it: the client and the server must derive the salted password from the same
# code points, or a password typed with a compatibility character (U+2168 for
# "IX", a no-break space) would never match.
#
# The steps run in the RFC's order: map (non-ASCII spaces to U+0020, the
# "commonly mapped to nothing" table B.1 removed), normalise with NFKC, then
# check: prohibited output (C.1.2, C.2.1, C.2.2, C.3 to C.9), the bidirectional
# rules of RFC 3454 §6, and, for stored strings, unassigned code points (A.1).
# Stringprep is defined over Unicode 3.2, so the NFKC step uses the Unicode 3.2
# database the standard library keeps for exactly this purpose (as its IDNA
# codec does), not the current one.
#
# Invariants: the result is a fixed point (saslprep(saslprep(s)) == saslprep(s));
# an error message never quotes the input, which is usually a password.
from __future__ import annotations

import stringprep
import unicodedata

from ._errors import SASLprepError

__all__ = ["saslprep"]

# Tables whose characters may not appear after mapping and normalisation
# (RFC 4013 §2.3), with the names an error message reports.
_PROHIBITED_TABLES = (
    ("C.1.2 (non-ASCII space)", stringprep.in_table_c12),
    ("C.2.1 (ASCII control)", stringprep.in_table_c21),
    ("C.2.2 (non-ASCII control)", stringprep.in_table_c22),
    ("C.3 (private use)", stringprep.in_table_c3),
    ("C.4 (non-character)", stringprep.in_table_c4),
    ("C.5 (surrogate)", stringprep.in_table_c5),
    ("C.6 (inappropriate for plain text)", stringprep.in_table_c6),
    ("C.7 (inappropriate for canonical representation)", stringprep.in_table_c7),
    ("C.8 (change display properties or deprecated)", stringprep.in_table_c8),
    ("C.9 (tagging character)", stringprep.in_table_c9),
)


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """Prepare a user name or password with SASLprep (RFC 4013).

    Args:
        text: the string as the user typed it.
        allow_unassigned: True for a "query" string (RFC 3454 §7), which may hold
            code points unassigned in Unicode 3.2; False (the default) for a "stored"
            string, which refuses them.

    Returns:
        The prepared string (possibly empty: callers that need a non-empty
        result check it themselves).

    Raises:
        SASLprepError: the string holds a prohibited or (for stored strings)
            unassigned character, or breaks the bidirectional rules.
    """
    # Printable ASCII is untouched by every step: no mapping, NFKC is the
    # identity, nothing is prohibited and nothing is right-to-left.
    if text.isascii() and text.isprintable():
        return text

    mapped = "".join(
        " " if stringprep.in_table_c12(char) else char
        for char in text
        if not stringprep.in_table_b1(char)
    )
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)

    for char in prepared:
        for table_name, in_table in _PROHIBITED_TABLES:
            if in_table(char):
                raise SASLprepError(
                    f"SASLprep: prohibited character from table {table_name}",
                    table=table_name.split(" ", 1)[0],
                )
        if not allow_unassigned and stringprep.in_table_a1(char):
            raise SASLprepError(
                "SASLprep: code point unassigned in Unicode 3.2 (table A.1)", table="A.1"
            )

    _check_bidi(prepared)
    return prepared


def _check_bidi(prepared: str) -> None:
    """Apply the bidirectional rules of RFC 3454 §6 (C.8 was checked already)."""
    right_to_left = [stringprep.in_table_d1(char) for char in prepared]
    if not any(right_to_left):
        return
    if any(stringprep.in_table_d2(char) for char in prepared):
        raise SASLprepError(
            "SASLprep: mixes right-to-left and left-to-right characters", table="bidi"
        )
    if not (right_to_left[0] and right_to_left[-1]):
        raise SASLprepError(
            "SASLprep: right-to-left text must start and end with a right-to-left character",
            table="bidi",
        )
