# smtpbee/cli/_states
#
# `smtpbee states`: the client's state machine, rendered from the very table
# the core runs (smtpbee.render_state_machine), so what a learner reads is
# what the code does.
from __future__ import annotations

import argparse

from smtpbee import render_state_machine

__all__ = ["FORMATS", "add_arguments", "main"]

FORMATS = ("text", "mermaid", "dot")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smtpbee states``."""
    parser.add_argument(
        "--format", choices=FORMATS, default="text", help="text (default), mermaid or dot"
    )


def main(args: argparse.Namespace) -> int:
    """Print the state machine in the chosen format; returns 0."""
    print(render_state_machine(args.format), end="")
    return 0
