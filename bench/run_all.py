"""Run every benchmark and write BENCHMARKS.md and the figures as JSON.

Run with ``python bench/run_all.py [--quick] [--json PATH] [--out BENCHMARKS.md]``.
Each script runs in a subprocess of its own (its table printed as it goes) with
``--json`` pointing at a temporary file; the figures are gathered, with the machine,
the versions of smtpbee, its peers and Postfix, and, when Postfix's ``smtp-source`` is
installed, its msg/s against a ``smtp-sink`` started as bench_send.py starts one: a
client in C on the same loopback, the reference for the small messages (it does not
pipeline: MAIL, RCPT, DATA and the content are one round trip each).

Besides bench_send.py, bench_core.py, bench_data_encoder.py and bench_import.py it runs
bench_cpu.py (client CPU per message and per recipient beside the minimal clients of
reference_clients.py and smtp-source), bench_rtt.py (round trips per message at 10 ms
RTT), bench_big.py (100 MB and, where the temporary directory has room, 1,000 MB
messages from bytes and from a file) and bench_pool.py (8 and 32 connections at once).

``--quick`` uses small counts (about two minutes in all), and leaves the 1,000 MB
message out unless ``--gigabyte`` asks for it; ``--no-gigabyte`` leaves it out of a
full run. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

# Script, its arguments at the default counts, its arguments with --quick.
SCRIPTS: dict[str, tuple[str, list[str], list[str]]] = {
    "send": ("bench_send.py", [], ["--messages", "300", "--big-mb", "10"]),
    "core": (
        "bench_core.py",
        [],
        ["--replies", "5000", "--transactions", "2000", "--messages", "300", "--rounds", "3"],
    ),
    "data_encoder": ("bench_data_encoder.py", [], ["--size-mb", "5", "--repeat", "3"]),
    "import": ("bench_import.py", [], ["--runs", "5"]),
    "cpu": ("bench_cpu.py", [], ["--messages", "200", "--rcpt-messages", "20"]),
    "rtt": ("bench_rtt.py", [], ["--messages", "30", "--transactions", "1"]),
    "big": ("bench_big.py", [], ["--size-mb", "10"]),
    "pool": ("bench_pool.py", [], ["--messages", "300", "--rounds", "1"]),
}
# The 1,000 MB message is written to a temporary file: with this much free space there.
GIGABYTE_ROOM = 3 * 10**9
DEFAULT_MESSAGES = 2000  # bench_send.py's own default, for smtp-source to match
QUICK_MESSAGES = 300
DISTRIBUTIONS = ("smtpbee", "aiosmtplib", "smtpproto", "trio", "aiosmtpd")


# -- collecting -------------------------------------------------------------------------


def run_script(command: Sequence[str]) -> dict[str, Any]:
    """Run one benchmark command with ``--json`` added; the figures it wrote."""
    with tempfile.TemporaryDirectory(prefix="smtpbee-bench-") as scratch:
        figures_path = Path(scratch) / "figures.json"
        subprocess.run([*command, "--json", str(figures_path)], check=True, cwd=ROOT)
        figures: dict[str, Any] = json.loads(figures_path.read_text())
        return figures


def machine() -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    meminfo = [line.split() for line in _read("/proc/meminfo") if line.startswith("MemTotal:")]
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": models[0] if models else platform.processor() or None,
        "memory_gib": int(meminfo[0][1]) / 1024**2 if meminfo else None,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def _read(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["Postfix"] = _postfix_version()
    return found


def _postfix_version() -> str | None:
    postconf = _postfix_tool("postconf")
    if postconf is None:
        return None
    run = subprocess.run(
        [postconf, "-d", "-h", "mail_version"], capture_output=True, text=True, timeout=30
    )
    if run.returncode != 0:
        return None
    return run.stdout.strip() or None


def _postfix_tool(name: str) -> str | None:
    # Postfix installs its tools in /usr/sbin, often not on an ordinary user's PATH.
    found = shutil.which(name) or f"/usr/sbin/{name}"
    return found if os.access(found, os.X_OK) else None


def smtp_source(messages: int) -> dict[str, Any] | None:
    """msg/s of Postfix's smtp-source, N messages on one connection, best of 3."""
    source = _postfix_tool("smtp-source")
    if source is None or shutil.which("smtp-sink") is None:
        return None
    sys.path.insert(0, str(BENCH))
    import bench_send

    best = float("inf")
    with bench_send.sink() as (port, _):
        for _ in range(3):
            # -d keeps the one session open between messages: without it, smtp-source
            # opens a new connection (and says HELO) for every message.
            command = [source, "-c", "-d", "-m", str(messages), "-s", "1", "-l", "1024"]
            command += ["-f", "a@x.test", "-t", "b@x.test", f"127.0.0.1:{port}"]
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=600)
            best = min(best, time.perf_counter() - started)
    return {"messages": messages, "message_bytes": 1024, "msgs_per_s": messages / best}


def room_for_gigabyte() -> bool:
    """Whether the temporary directory has room for bench_big.py's 1,000 MB file."""
    return shutil.disk_usage(tempfile.gettempdir()).free >= GIGABYTE_ROOM


def collect(quick: bool, gigabyte: bool = False) -> dict[str, Any]:
    started = time.monotonic()
    document: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": quick,
        "machine": machine(),
        "versions": versions(),
        "commands": {},
    }
    for key, (script, default_arguments, quick_arguments) in SCRIPTS.items():
        arguments = quick_arguments if quick else default_arguments
        if key == "big" and gigabyte:
            arguments = [*arguments, "--gigabyte"]
        document["commands"][key] = " ".join(["python", f"bench/{script}", *arguments])
        document[key] = run_script([sys.executable, str(BENCH / script), *arguments])
    # smtp-source is measured only against the sink the Python clients had.
    if document["send"].get("sink") == "Postfix smtp-sink":
        document["smtp_source"] = smtp_source(QUICK_MESSAGES if quick else DEFAULT_MESSAGES)
    else:
        document["smtp_source"] = None
    document["elapsed_s"] = time.monotonic() - started
    return document


# -- rendering --------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows), ""]


def _number(figure: float | None, digits: int = 0) -> str:
    return "-" if figure is None else f"{figure:,.{digits}f}"


def _machine_section(document: dict[str, Any]) -> list[str]:
    box = document["machine"]
    memory = box["memory_gib"]
    rows = [
        ["CPUs", str(box["cpu_count"])],
        ["CPU model", box["cpu_model"] or "unknown"],
        ["memory", "unknown" if memory is None else f"{memory:.1f} GiB"],
        ["kernel", box["kernel"]],
        ["Python", box["python"]],
    ]
    versions = [
        [name, version or "not installed"] for name, version in document["versions"].items()
    ]
    return [
        "## Machine",
        "",
        *_table(["", ""], rows),
        "## Versions",
        "",
        *_table(["software", "version"], versions),
    ]


def _send_section(document: dict[str, Any]) -> list[str]:
    send = document["send"]
    big = f"{send['big_mb']} MB"
    lines = [
        "## Sending mail (bench_send.py)",
        "",
        f"{send['messages']:,} small messages on one connection against {send['sink']} on"
        f" loopback, best of 3; RT/msg counted by a relay; peak memory growth and CPU"
        f" seconds of a fresh process sending one {big} message via DATA.",
        "",
    ]
    rows = [
        [
            row["client"],
            _number(row.get("msgs_per_s")),
            _number(row.get("us_per_msg")),
            _number(row.get("rt_per_msg"), 2),
            _number(row["peak_mb"]),
            _number(row["cpu_s"], 2),
        ]
        for row in send["data"]
    ]
    reference = document.get("smtp_source")
    if reference is not None:
        rate = reference["msgs_per_s"]
        rows.append(["Postfix smtp-source (C)", _number(rate), _number(1e6 / rate), "-", "-", "-"])
    header = ["client", "msg/s", "µs/msg", "RT/msg", f"peak MB, {big} via DATA", "CPU s"]
    lines += _table(header, rows)
    if reference is not None:
        lines += [
            f"Postfix smtp-source: `smtp-source -c -d -m {reference['messages']} -s 1 -l"
            f" {reference['message_bytes']}` (`-d`: one connection for all messages) against a"
            f" smtp-sink started the same way; its messages are {reference['message_bytes']}"
            " bytes and it does not pipeline (MAIL, RCPT, DATA and the content wait for a"
            " reply each: 4 round trips per message). Best of 3 wall-clock runs of the whole"
            " process: a client in C, the reference for one connection on this machine.",
            "",
        ]
    if send["bdat_small"]:
        lines += ["Small messages via BDAT (bench_send.py's own CHUNKING sink):", ""]
        rows = [
            [
                row["client"],
                _number(row["msgs_per_s"]),
                _number(row["us_per_msg"]),
                _number(row["rt_per_msg"], 2),
            ]
            for row in send["bdat_small"]
        ]
        lines += _table(["client", "msg/s", "µs/msg", "RT/msg"], rows)
    if send["bdat_big"]:
        lines += [f"One {big} message via BDAT (the same CHUNKING sink):", ""]
        rows = [
            [row["client"], _number(row["peak_mb"]), _number(row["cpu_s"], 2)]
            for row in send["bdat_big"]
        ]
        lines += _table(["client", "peak MB", "CPU s"], rows)
    return lines


def _cpu_section(document: dict[str, Any]) -> list[str]:
    cpu = document.get("cpu")
    if not cpu:
        return []
    kinds = [kind for kind in ("data", "bdat") if any(row.get(kind) for row in cpu["rows"])]
    names = {"data": "smtp-sink, DATA", "bdat": "CHUNKING sink, BDAT"}
    lines = [
        "## Client CPU per message (bench_cpu.py)",
        "",
        f"CPU time of the client's process (`time.process_time`; user and system from"
        f" `getrusage`) per {cpu['message_bytes']:,}-byte message, {cpu['messages']:,}"
        f" messages on one connection, median of {cpu['rounds']} rounds; msg/s is the"
        " median wall-clock rate. \"x floor\" divides a client's CPU by the minimal client's"
        " of the same I/O (blocking, asyncio or trio) in the same column: the minimal"
        " clients of `bench/reference_clients.py` do only what a correct pipelined client"
        " cannot do without. smtplib and aiosmtplib send DATA to the CHUNKING sink too (\\*).",
        "",
    ]
    header = ["client"]
    for kind in kinds:
        header += [f"{names[kind]}: µs user", "µs sys", "µs total", "x floor", "msg/s"]
    rows = []
    for row in cpu["rows"]:
        cells = [row["client"] + (" \\*" if row.get("data_only") else "")]
        for kind in kinds:
            case = row.get(kind)
            one = case["rcpt1"] if case else {}
            cells += [
                _number(one.get("user_us")),
                _number(one.get("sys_us")),
                _number(one.get("cpu_us")),
                _number(case.get("x_floor") if case else None, 2),
                _number(one.get("msgs_per_s")),
            ]
        rows.append(cells)
    source = cpu.get("smtp_source")
    if source is not None and "data" in kinds:
        one = source["rcpt1"]
        rows.append(
            [
                "Postfix smtp-source (C)",
                _number(one["user_us"]),
                _number(one["sys_us"]),
                _number(one["cpu_us"]),
                "-",
                _number(one["msgs_per_s"]),
                *(["-"] * 5 * (len(kinds) - 1)),
            ]
        )
    lines += _table(header, rows)
    lines += [
        f"Per recipient: {cpu['rcpt_messages']:,} messages to {cpu['recipients']} recipients"
        f" each; µs/extra rcpt is (CPU per message at {cpu['recipients']} recipients - CPU"
        f" per message at 1) / {cpu['recipients'] - 1}.",
        "",
    ]
    header = ["client"]
    for kind in kinds:
        header += [f"{names[kind]}: µs/msg", "msg/s", "µs/extra rcpt"]
    rows = []
    for row in cpu["rows"]:
        cells = [row["client"] + (" \\*" if row.get("data_only") else "")]
        for kind in kinds:
            case = row.get(kind)
            many = case["rcpt101"] if case else {}
            cells += [
                _number(many.get("cpu_us")),
                _number(many.get("msgs_per_s")),
                _number(case.get("us_per_extra_rcpt") if case else None, 2),
            ]
        rows.append(cells)
    if source is not None and "data" in kinds:
        many = source["rcpt101"]
        rows.append(
            [
                "Postfix smtp-source (C)",
                _number(many["cpu_us"]),
                _number(many["msgs_per_s"]),
                _number(source["us_per_extra_rcpt"], 2),
                *(["-"] * 3 * (len(kinds) - 1)),
            ]
        )
    lines += _table(header, rows)
    if source is not None:
        lines += [
            "Postfix smtp-source: `smtp-source -c -d -m N -s 1 -r R -l 1024` against the"
            " same smtp-sink, its CPU from `RUSAGE_CHILDREN`: a client in C, lock-step"
            " (a round trip per command).",
            "",
        ]
    return lines


def _rtt_section(document: dict[str, Any]) -> list[str]:
    rtt = document.get("rtt")
    if not rtt:
        return []
    delay = rtt["delay_ms"]
    lines = [
        "## Round trips at 10 ms RTT (bench_rtt.py)",
        "",
        f"Through a proxy that forwards each chunk {delay:g} ms after it came, each way"
        f" (delayed by {rtt['delayed_by']}; a NOOP took {rtt['rtt_ms']:.1f} ms), and counts"
        " a round trip each time the server answers after the client spoke; setting up and"
        f" QUIT taken out. bulk: {rtt['messages']:,} messages of 1 KB to one recipient;"
        f" {rtt['recipients']} recipients: {rtt['transactions']} messages to"
        f" {rtt['recipients']} recipients each. ms/msg is wall-clock. smtplib sends DATA"
        " where CHUNKING is offered too (\\*).",
        "",
    ]
    rows = [
        [
            row["case"],
            rtt["sinks"][row["sink"]],
            row["client"]
            + (" \\*" if row["sink"] == "bdat" and row["client"] == "smtplib" else ""),
            _number(row["rt_per_msg"], 2),
            _number(row["ms_per_msg"], 1),
        ]
        for row in rtt["rows"]
    ]
    return lines + _table(["case", "the server offers", "client", "RT/msg", "ms/msg"], rows)


def _big_section(document: dict[str, Any]) -> list[str]:
    big = document.get("big")
    if not big:
        return []
    lines = [
        "## Big messages (bench_big.py)",
        "",
        "One message on one connection, each case in a fresh process: MB/s of wall-clock"
        " time (10^6 bytes to the MB), the process's CPU seconds and the growth of its peak"
        " resident memory over the send. From a file, smtpbee and the minimal client stream"
        " it; smtplib and aiosmtplib read it whole first (they take nothing else) and know"
        " no BDAT. The 1,000 MB message is sent only from a file, and not by smtplib or"
        " aiosmtplib, which hold whole messages."
        + ("" if big.get("gigabyte") else " (This run left the 1,000 MB message out.)"),
        "",
    ]
    header = ["message", "client"]
    for name in ("DATA (smtp-sink)", "BDAT (CHUNKING sink)"):
        header += [f"{name}: MB/s", "CPU s", "peak MB"]
    rows = []
    for row in big["rows"]:
        cells = [f"{row['size_mb']:,} MB from {row['source']}", row["client"]]
        for sink in ("data", "bdat"):
            case = row[sink]
            if "skipped" in case or "error" in case:
                note = case.get("skipped") or "failed: " + str(case.get("error"))
                cells += [note, "-", "-"]
            else:
                cells += [
                    _number(case["mb_per_s"]),
                    _number(case["cpu_s"], 2),
                    _number(case["peak_mb"]),
                ]
        rows.append(cells)
    return lines + _table(header, rows)


def _pool_section(document: dict[str, Any]) -> list[str]:
    pool = document.get("pool")
    if not pool:
        return []
    widths = pool["connections"]
    header = ["client"]
    for width in widths:
        header += [f"{width} connections: msg/s", "µs CPU/msg"]
    rows = []
    for row in pool["rows"]:
        cells = [row["client"]]
        for width in widths:
            cells += [
                _number(row[str(width)]["msgs_per_s"]),
                _number(row[str(width)]["cpu_us"]),
            ]
        rows.append(cells)
    return [
        "## Concurrent connections (bench_pool.py)",
        "",
        f"{pool['messages']:,} messages of {pool['message_bytes']:,} bytes to smtp-sink over"
        f" N connections at once, median of {pool['rounds']} rounds: smtpbee's `SMTPPool`"
        " (size=N, `send_batch`), N smtpbee clients in N tasks, aiosmtplib and the minimal"
        " clients in N tasks. msg/s is wall-clock (opening the connections included), CPU"
        " is the client process's.",
        "",
        *_table(header, rows),
    ]


def _core_section(document: dict[str, Any]) -> list[str]:
    core = document["core"]
    parser, transactions, messages = core["parser"], core["transactions"], core["messages"]
    lines = [
        "## The core alone (bench_core.py)",
        "",
        f"Reply parser: µs CPU per server write, median of {parser['rounds']} rounds of"
        f" {parser['count']:,}.",
        "",
    ]
    rows = [
        [row["name"], *(_number(row["us_per_write"][case], 2) for case in parser["cases"])]
        for row in parser["rows"]
    ]
    lines += _table(["reader", *parser["cases"]], rows)
    core_us, minimal_us = transactions["smtpbee_core_us"], transactions["minimal_client_us"]
    lines += [
        f"Pipelined transactions against canned replies: µs CPU per transaction, median of"
        f" {transactions['rounds']} rounds of {transactions['count']:,}.",
        "",
        *_table(
            ["", "µs/transaction"],
            [
                ["smtpbee core", _number(core_us, 1)],
                ["minimal client", _number(minimal_us, 1)],
                ["core overhead", f"{core_us - minimal_us:,.1f} ({core_us / minimal_us:.1f}x)"],
            ],
        ),
        f"send_message preparation: µs CPU per message, median of {messages['rounds']} rounds"
        f" of {messages['count']:,}.",
        "",
    ]
    rows = [
        [row["name"], *(_number(row["us_per_message"][case], 1) for case in messages["cases"])]
        for row in messages["rows"]
    ]
    lines += _table(["", *messages["cases"]], rows)
    return lines


def _encoder_section(document: dict[str, Any]) -> list[str]:
    encoder = document["data_encoder"]
    rows = [
        [f"`{row['name']}`", *(_number(row["mb_per_s"][body]) for body in encoder["bodies"])]
        for row in encoder["rows"]
    ]
    return [
        "## DATA encoding (bench_data_encoder.py)",
        "",
        f"MB/s of input on a {encoder['size_mb']} MB body, median of {encoder['repeat']}.",
        "",
        *_table(["", *encoder["bodies"]], rows),
    ]


def _import_section(document: dict[str, Any]) -> list[str]:
    figures = document["import"]
    rows = [
        [
            f"`{row['module']}`",
            _number(row["median_ms"], 1),
            _number(row["min_ms"], 1),
            str(row["modules"]),
            ", ".join(row["notable"]) or "-",
        ]
        for row in figures["rows"]
    ]
    return [
        "## Import time (bench_import.py)",
        "",
        f"{figures['runs']} fresh interpreters per import, bytecode {figures['bytecode']}.",
        "",
        *_table(["import", "median ms", "min ms", "modules", "notable"], rows),
    ]


def _reproduce_section(document: dict[str, Any]) -> list[str]:
    run_all = "python bench/run_all.py" + (" --quick" if document["quick"] else "")
    return [
        "## Reproducing",
        "",
        "With the `bench` extra installed (`pip install -e '.[bench]'`) and, for the",
        "reference sink and client, Postfix's `smtp-sink` and `smtp-source`:",
        "",
        "```",
        run_all,
        "```",
        "",
        "or one script at a time:",
        "",
        "```",
        *document["commands"].values(),
        "```",
        "",
    ]


SECTIONS: tuple[Callable[[dict[str, Any]], list[str]], ...] = (
    _machine_section,
    _send_section,
    _cpu_section,
    _rtt_section,
    _big_section,
    _pool_section,
    _core_section,
    _encoder_section,
    _import_section,
    _reproduce_section,
)


def render(document: dict[str, Any]) -> str:
    counts = "`--quick` counts" if document["quick"] else "the default counts"
    lines = [
        "# Benchmarks",
        "",
        f"One run of `bench/run_all.py` with {counts} on {document['date']}"
        f" ({document['elapsed_s'] / 60:.1f} minutes). Every figure is a median or a best-of"
        " within this one run; figures move with the machine and its load, so the ratios"
        " between clients within the run are what counts, not the absolute numbers.",
        "",
    ]
    for section in SECTIONS:
        lines += section(document)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (about 2 minutes)")
    parser.add_argument(
        "--gigabyte",
        action=argparse.BooleanOptionalAction,
        help="the 1,000 MB message (default: in a full run, if the temporary directory has"
        f" {GIGABYTE_ROOM // 10**9} GB free)",
    )
    parser.add_argument(
        "--json", type=Path, default=BENCH / "results.json", metavar="PATH", help="figures"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", metavar="PATH")
    args = parser.parse_args(argv)
    gigabyte = args.gigabyte
    if gigabyte is None:
        gigabyte = not args.quick and room_for_gigabyte()
    document = collect(args.quick, gigabyte)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    args.out.write_text(render(document))
    print(f"\nwrote {args.out} and {args.json} in {document['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
