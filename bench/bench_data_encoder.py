"""Throughput of DATA content encoding: smtpbee's DataEncoder against its baselines.

Run with ``python bench/bench_data_encoder.py [--size-mb N] [--repeat R]``.
Prints MB/s (of input) for, on a body of CRLF lines (1 % of them starting
with ".") and on the same body with bare LF line endings:

* a plain copy, and ``bytes.replace`` doing only the stuffing or only LF->CRLF;
* DataEncoder on the whole body and in 64 KiB chunks;
* smtplib's own DATA quoting, as ``SMTP.data()`` does it for bytes (stuffing
  only, then the CRLF "." CRLF ending) and ``smtplib.quotedata`` on str (which
  also normalises line endings, at the cost of a decode and an encode).

The median of R runs is shown; ``--json PATH`` also writes the figures there.
Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import smtplib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from smtpbee._data import DataEncoder

CHUNK = 64 * 1024
CRLF = b"\r\n"


def make_body(size: int) -> bytes:
    rng = random.Random(5321)
    words = [b"lorem", b"ipsum", b"dolor", b"sit", b"amet", b"consectetur", b"adipiscing"]
    lines = []
    total = 0
    while total < size:
        line = b" ".join(rng.choice(words) for _ in range(rng.randint(6, 12)))
        if rng.random() < 0.01:
            line = b"." + line
        lines.append(line)
        total += len(line) + 2
    return CRLF.join(lines)[:size]


def data_encoder_whole(body: bytes) -> int:
    encoder = DataEncoder()
    return len(encoder.encode(body)) + len(encoder.end())


def data_encoder_chunked(body: bytes) -> int:
    encoder = DataEncoder()
    out = 0
    for start in range(0, len(body), CHUNK):
        out += len(encoder.encode(body[start : start + CHUNK]))
    return out + len(encoder.end())


def smtplib_bytes(body: bytes) -> int:
    # What smtplib.SMTP.data() does with a bytes message.
    quoted = re.sub(rb"(?m)^\.", b"..", body)
    if quoted[-2:] != CRLF:
        quoted = quoted + CRLF
    quoted = quoted + b"." + CRLF
    return len(quoted)


def smtplib_quotedata(body: bytes) -> int:
    # smtplib.quotedata() works on str; latin-1 maps every octet to one char.
    quoted = smtplib.quotedata(body.decode("latin-1"))
    if quoted[-2:] != "\r\n":
        quoted += "\r\n"
    return len((quoted + ".\r\n").encode("latin-1"))


def median_rate(function: Callable[[bytes], object], body: bytes, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function(body)
        times.append(time.perf_counter() - start)
    return len(body) / statistics.median(times) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args()

    crlf_body = make_body(args.size_mb * 1_000_000)
    bodies = {"CRLF body": crlf_body, "LF body": crlf_body.replace(CRLF, b"\n")}
    contenders: list[tuple[str, Callable[[bytes], object]]] = [
        ("copy (bytes(bytearray))", lambda body: bytes(bytearray(body))),
        ('bytes.replace(b"\\r\\n.", ...)', lambda body: body.replace(b"\r\n.", b"\r\n..")),
        ('bytes.replace(b"\\n", b"\\r\\n")', lambda body: body.replace(b"\n", CRLF)),
        ("DataEncoder, whole", data_encoder_whole),
        ("DataEncoder, 64 KiB chunks", data_encoder_chunked),
        ("smtplib data() on bytes (no EOL fix)", smtplib_bytes),
        ("smtplib.quotedata on str", smtplib_quotedata),
    ]
    print(f"{args.size_mb} MB body, median of {args.repeat}, MB/s of input")
    print(f"{'':40s}" + "".join(f"{name:>12s}" for name in bodies))
    rows = []
    for name, function in contenders:
        rates = [median_rate(function, body, args.repeat) for body in bodies.values()]
        print(f"{name:40s}" + "".join(f"{rate:12.0f}" for rate in rates))
        rows.append({"name": name, "mb_per_s": dict(zip(bodies, rates, strict=True))})
    if args.json is not None:
        figures = {"size_mb": args.size_mb, "repeat": args.repeat, "bodies": list(bodies)}
        args.json.write_text(json.dumps(figures | {"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
