"""Big messages from bytes and from a file: MB/s, CPU and peak memory of a fresh process.

Run with ``python bench/bench_big.py [--size-mb N] [--gigabyte] [--clients a,b]
[--json PATH]``. One message of N MB (default 100), and with ``--gigabyte`` one of
1,000 MB, goes on one connection via DATA (Postfix's smtp-sink) and via BDAT
(bench_send.py's CHUNKING sink), each case in a fresh Python process of its own that
reports:

* MB/s: the message's size (10^6 bytes to the MB) over the wall-clock time of the send
  (connecting and QUIT included);
* the CPU seconds of that process during the send (user + system);
* the growth of its peak resident memory (``ru_maxrss``) over the send: for a message
  from bytes, the bytes are made (in one allocation) and the client imported and used
  once before the baseline, so the growth is what sending adds.

The message comes from bytes in memory or from a temporary file (written first, so it
is read from the page cache). smtpbee (sync, asyncio, trio) and the minimal blocking
client of reference_clients.py stream a file; smtplib and aiosmtplib take only a whole
message, so "from a file" is reading it whole and sending that, and they know no BDAT.
The 1,000 MB message is sent only from a file, and not by smtplib or aiosmtplib (they
hold the whole message, and copies of it: gigabytes of memory); the table says so.
Nothing here is a test, and nothing asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import send_clients
from bench_args import chosen_clients
from send_clients import CLIENTS

BENCH = Path(__file__).resolve().parent
NAMES = (
    "smtpbee sync",
    "smtpbee asyncio",
    "smtpbee trio",
    "smtplib",
    "aiosmtplib",
    "minimal blocking",
)
WHOLE_MESSAGE = frozenset({"smtplib", "aiosmtplib"})
LINE = b"X-Filler: " + b"y" * 988 + b"\r\n"  # 1,000 bytes: a MB is 1,000 of them
GIGABYTE_MB = 1000


def skip_reason(name: str, size_mb: int, source: str, sink: str) -> str | None:
    if name in WHOLE_MESSAGE and sink == "bdat":
        return "knows no BDAT"
    if name in WHOLE_MESSAGE and size_mb >= GIGABYTE_MB:
        return "holds whole messages"
    return None


def write_file(directory: Path, size_mb: int) -> Path:
    path = directory / f"message-{size_mb}mb.eml"
    block = LINE * 1000
    with path.open("wb") as file:
        for _ in range(size_mb):
            file.write(block)
    return path


def one_case(name: str, port: int, chunking: bool, size_mb: int, source: str) -> dict[str, float]:
    """In a fresh process: send one message; its MB/s, CPU seconds and peak growth."""
    client = CLIENTS[name]
    client(port, 1, [send_clients.RECIPIENT], send_clients.message(1024), chunking)
    body: send_clients.Body = Path(source) if source != "bytes" else LINE * (size_mb * 1000)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    client(port, 1, [send_clients.RECIPIENT], body, chunking)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    return {
        "mb_per_s": size_mb / elapsed,
        "cpu_s": user + system,
        "user_s": user,
        "sys_s": system,
        "peak_mb": (after.ru_maxrss - before.ru_maxrss) / 1024,
    }


def run_case(name: str, port: int, chunking: bool, size_mb: int, source: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--port", str(port)]
    command += ["--size-mb", str(size_mb), "--source", source]
    command += ["--chunking"] if chunking else []
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        # A failed send is reported as such, never as a figure.
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": last}
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


@contextlib.contextmanager
def sinks() -> Iterator[dict[str, int]]:
    with send_clients.smtp_sink() as data, send_clients.chunking_sink() as bdat:
        found = {"bdat": bdat}
        if data is not None:
            found["data"] = data
        yield found


def cases(size_mb: int, gigabyte: bool) -> list[tuple[int, str]]:
    found = [(size_mb, "bytes"), (size_mb, "file")]
    return found + ([(GIGABYTE_MB, "file")] if gigabyte else [])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--gigabyte", action="store_true", help="also 1,000 MB from a file")
    parser.add_argument("--clients", help=f"comma-separated, of: {', '.join(NAMES)}")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--chunking", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one_case(args.one, args.port, args.chunking, args.size_mb, args.source)))
        return
    names = chosen_clients(parser, args.clients, NAMES)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="smtpbee-bench-big-") as scratch, sinks() as ports:
        files: dict[int, Path] = {}
        print_header()
        for size_mb, source in cases(args.size_mb, args.gigabyte):
            if source == "file" and size_mb not in files:
                files[size_mb] = write_file(Path(scratch), size_mb)
            for name in names:
                row: dict[str, Any] = {"size_mb": size_mb, "source": source, "client": name}
                for sink in ("data", "bdat"):
                    reason = skip_reason(name, size_mb, source, sink)
                    if sink not in ports:
                        reason = "no smtp-sink"
                    if reason is None:
                        where = "bytes" if source == "bytes" else str(files[size_mb])
                        row[sink] = run_case(name, ports[sink], sink == "bdat", size_mb, where)
                    else:
                        row[sink] = {"skipped": reason}
                print_row(row)
                rows.append(row)
    print("peak MB: growth of the peak resident memory over the send, in a fresh process")
    if args.json is not None:
        figures = {"size_mb": args.size_mb, "gigabyte": args.gigabyte, "rows": rows}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def print_header() -> None:
    columns = "   MB/s  CPU s peak MB"
    print(f"{'':36}{'DATA (smtp-sink)':^23}  {'BDAT (CHUNKING sink)':^23}")
    print(f"{'message':16}{'client':20}{columns}  {columns}")


def print_row(row: dict[str, Any]) -> None:
    def cell(figure: float | None, width: int, digits: int = 0) -> str:
        if figure is None or math.isnan(figure):
            return f"{'-':>{width}}"
        return f"{figure:{width},.{digits}f}"

    message = f"{row['size_mb']:,} MB {row['source']}"
    text = f"{message:16}{row['client']:20}"
    for sink in ("data", "bdat"):
        case = row[sink]
        if "skipped" in case or "error" in case:
            note = case.get("skipped") or "failed: " + case["error"]
            text += f"  {note[:21]:21}  "
            continue
        text += (
            f"{cell(case['mb_per_s'], 7)}{cell(case['cpu_s'], 7, 2)}{cell(case['peak_mb'], 8)}  "
        )
    print(text.rstrip())
    for sink in ("data", "bdat"):
        if "error" in row[sink]:
            print(f"    {sink}: {row[sink]['error']}")


if __name__ == "__main__":
    main()
