"""Import time: smtpbee beside smtplib and aiosmtplib, each in fresh interpreters.

Run with ``python bench/bench_import.py [--runs N] [--no-bytecode-cache] [--profile MOD]``.
Each import is timed in a new ``python`` process, around the import statement alone
(interpreter start-up and ``site`` are not counted), N times; the median and the
minimum are printed, with the number of modules the import loaded and which of the
heavier standard modules it pulled in.

Bytecode: an installed package runs from its cached ``.pyc`` files, but a checkout may
run with ``PYTHONDONTWRITEBYTECODE`` set, where every smtpbee module is compiled again
at each start. So by default the children share a fresh ``PYTHONPYCACHEPREFIX`` (a
temporary directory, removed at the end), warmed by one untimed run per import: every
library is measured as it would run installed. ``--no-bytecode-cache`` measures the
environment as it is instead. ``--profile MOD`` prints the slowest entries of
``python -X importtime -c "import MOD"`` (same bytecode setting). ``--json PATH`` also
writes the figures there.

Nothing here is a test, and nothing asserts a time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

TARGETS = (
    "smtpbee",
    "smtpbee.transports.sync",
    "smtpbee.transports.asyncio",
    "smtplib",
    "aiosmtplib",
)

# Standard modules worth knowing about when they are loaded (or not) by an import.
NOTABLE = (
    "asyncio",
    "email.message",
    "hashlib",
    "hmac",
    "json",
    "logging",
    "secrets",
    "socket",
    "ssl",
    "stringprep",
    "unicodedata",
)

# Runs in the child: the import alone is timed; what it loaded is reported as JSON.
_CHILD = """\
import sys, time
before = set(sys.modules)
start = time.perf_counter()
import {module}
elapsed = time.perf_counter() - start
loaded = sorted(set(sys.modules) - before)
import json
print(json.dumps({{"seconds": elapsed, "loaded": loaded}}))
"""


@dataclass(frozen=True)
class Figure:
    module: str
    median_ms: float
    min_ms: float
    modules: int
    notable: tuple[str, ...]


def _environment(pycache: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def _child(module: str, env: dict[str, str]) -> dict[str, object]:
    run = subprocess.run(
        [sys.executable, "-c", _CHILD.format(module=module)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(run.stdout.splitlines()[-1])
    return result


def measure(module: str, runs: int, env: dict[str, str]) -> Figure:
    """Time ``import module`` in ``runs`` fresh interpreters (after one untimed run)."""
    first = _child(module, env)
    times = []
    for _ in range(runs):
        result = _child(module, env)
        seconds = result["seconds"]
        assert isinstance(seconds, float)
        times.append(seconds * 1000)
    loaded = first["loaded"]
    assert isinstance(loaded, list)
    notable = tuple(name for name in NOTABLE if name in loaded)
    return Figure(module, statistics.median(times), min(times), len(loaded), notable)


def profile(module: str, env: dict[str, str], top: int = 25) -> None:
    """Print the slowest entries (cumulative) of ``-X importtime`` for one import."""
    _child(module, env)  # warm the bytecode cache
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    rows = []
    for line in run.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), int(parts[0]), parts[2].rstrip()))
    # The tree is printed children first: the import's own subtree is the run of lines
    # after the last top-level entry of the start-up (encodings, site ...).
    tops = [i for i, row in enumerate(rows[:-1]) if not row[2][1:].startswith(" ")]
    rows = rows[tops[-1] + 1 :] if tops else rows
    print(f"\n-X importtime, import {module}: the {top} largest cumulative entries (us)")
    print(f"{'cumulative':>10} {'self':>8}  module")
    for cumulative, own, name in sorted(rows, reverse=True)[:top]:
        print(f"{cumulative:>10} {own:>8} {name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per import")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="use the environment as it is (PYTHONDONTWRITEBYTECODE included)",
    )
    parser.add_argument("--profile", metavar="MOD", action="append", default=[])
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("modules", nargs="*", default=list(TARGETS), metavar="MODULE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="smtpbee-bench-pycache-") as pycache:
        env = _environment(None if args.no_bytecode_cache else pycache)
        cache = "as in the environment" if args.no_bytecode_cache else "warm (.pyc cached)"
        print(f"Python {sys.version.split()[0]}; {args.runs} fresh interpreters per import;"
              f" bytecode {cache}")  # fmt: skip
        print(f"{'import':<28} {'median ms':>9} {'min ms':>7} {'modules':>8}  notable")
        figures: list[Figure] = []
        for module in args.modules:
            if importlib.util.find_spec(module.split(".")[0]) is None:
                print(f"{module:<28} {'(not installed)':>26}")
                continue
            figure = measure(module, args.runs, env)
            figures.append(figure)
            print(
                f"{figure.module:<28} {figure.median_ms:>9.1f} {figure.min_ms:>7.1f}"
                f" {figure.modules:>8}  {', '.join(figure.notable) or '-'}"
            )
        for module in args.profile:
            profile(module, env)
    if args.json is not None:
        rows = [asdict(figure) for figure in figures]
        document = {"runs": args.runs, "bytecode": cache, "rows": rows}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
