# smtpbee/__main__
#
# `python -m smtpbee`: hands over to the command-line tool, which lives outside
# the core (smtpbee.cli). No logic and no I/O here.
"""``python -m smtpbee``: the smtpbee command-line tool."""

from __future__ import annotations

__all__: list[str] = []

if __name__ == "__main__":
    from smtpbee.cli import main

    raise SystemExit(main())
