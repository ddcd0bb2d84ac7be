"""What every benchmark script's command line shares: picking clients by name."""

from __future__ import annotations

import argparse
from collections.abc import Iterable


def chosen_clients(
    parser: argparse.ArgumentParser, given: str | None, known: Iterable[str]
) -> list[str]:
    """The clients ``--clients`` names, comma-separated (all of them when not given).

    An unknown name is a usage error (parser.error exits).
    """
    known = list(known)
    names = known if given is None else given.split(",")
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown clients: {', '.join(unknown)}")
    return names
