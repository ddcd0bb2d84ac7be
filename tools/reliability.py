"""Regenerate RELIABILITY.md: the evidence that smtpbee holds up, gathered in one run.

``python tools/reliability.py`` runs the hostile-server suite and the real-MTA tests
(pytest, JUnit XML), the smtplib/aiosmtplib comparison (bench/hostile_compare.py),
measures the time-to-error of every deadline and the CPU and memory a hostile server
can cost, reads the soak figures (reliability/soak-*.json, from bench/soak.py) and the
fuzzing log (fuzz/campaign.log), counts the property tests and their CI budgets, reads
the safe defaults from the code, and writes RELIABILITY.md. Nothing in it is typed
by hand but the prose.

Options: ``--out PATH`` (default RELIABILITY.md), ``--skip-tests`` (keep the sections
that need pytest runs to what the last JUnit files in reliability/ say).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import itertools
import json
import platform
import re
import statistics
import subprocess
import sys
import time
import tracemalloc
import xml.etree.ElementTree as ElementTree
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import smtpbee
from smtpbee import NEED_DATA, Connection, ReplyLimits, Timeouts
from smtpbee.testing import DEFAULT, ScriptedServer, stall
from smtpbee.transports.sync import SMTPClient

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "reliability"

# ---------------------------------------------------------------------------
# Runs: pytest with JUnit XML, the comparison script


def run_pytest(targets: list[str], junit: Path) -> None:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets]
    subprocess.run([*command, f"--junitxml={junit}"], cwd=ROOT, check=False)


def junit_results(junit: Path) -> dict[str, str]:
    """Test id (name with parameters) -> passed / failed / skipped."""
    if not junit.is_file():
        return {}
    results: dict[str, str] = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        results[f"{case.get('classname', '')}::{case.get('name', '')}"] = outcome
    return results


# ---------------------------------------------------------------------------
# Measurements: deadlines, hostile input


def _phase_tables() -> dict[str, dict[str, Any]]:
    """Each RFC 5321 phase, and a server that goes silent exactly there."""
    return {
        "greeting": {"GREETING": stall()},
        "EHLO reply": {"EHLO": stall()},
        "MAIL reply": {"MAIL": stall()},
        "RCPT reply": {"RCPT": stall()},
        "354 to DATA": {"DATA": stall()},
        "final reply": {"MESSAGE": stall()},
    }


def measure_deadlines(deadline: float, trials: int) -> dict[str, list[float]]:
    """Seconds past the deadline before SMTPTimeoutError, per phase."""
    overshoots: dict[str, list[float]] = defaultdict(list)
    for phase, table in _phase_tables().items():
        for _ in range(trials):
            server = ScriptedServer({**table, "QUIT": DEFAULT}, extensions=[])
            with server.serve_in_thread() as running:
                started = time.monotonic()
                try:
                    client = SMTPClient(running.host, running.port, tls="none", timeout=deadline)
                    with client:
                        client.sendmail("a@x.test", ["b@x.test"], b"Subject: t\r\n\r\nx\r\n")
                except smtpbee.SMTPTimeoutError:
                    pass
                except smtpbee.OutcomeUnknownError as exc:
                    assert isinstance(exc.__cause__, smtpbee.SMTPTimeoutError)
                else:
                    raise AssertionError(f"no timeout at {phase}")
                overshoots[phase].append(time.monotonic() - started - deadline)
    return overshoots


def _drive(conn: Connection, chunks: Iterator[bytes]) -> tuple[int, str]:
    """Feed chunks until the reader refuses them; octets fed and the error's name."""
    fed = 0
    for chunk in chunks:
        conn.receive_data(chunk)
        fed += len(chunk)
        try:
            while conn.next_event() is not NEED_DATA:
                pass
        except smtpbee.RemoteProtocolError as exc:
            return fed, type(exc).__name__
    return fed, "none"


def _greeted() -> Connection:
    conn = Connection()
    conn.receive_data(b"220 mx\r\n")
    conn.next_event()
    conn.send(smtpbee.Ehlo("c.test"))
    return conn


def measure_hostile_input() -> list[tuple[str, int, str, float, int]]:
    """(attack, octets fed before the error, error, CPU seconds, peak bytes allocated)."""
    flood = b"x" * 65536
    attacks: dict[str, Callable[[], Iterator[bytes]]] = {
        "an endless line (64 KiB writes)": lambda: iter([b"250-" + flood] + [flood] * 256),
        "endless continuation lines": lambda: iter([b"250-" + b"y" * 1000 + b"\r\n"] * 20000),
        "an endless line, one byte at a time": lambda: itertools.chain(
            [b"250-"], (b"z" for _ in range(200000))
        ),
        "a reply past the 64 KiB cap, one byte at a time": lambda: (
            bytes([b]) for b in b"".join(b"250-" + b"k" * 60 + b"\r\n" for _ in range(2000))
        ),
    }
    rows = []
    for name, chunks in attacks.items():
        conn = _greeted()
        tracemalloc.start()
        start = time.process_time()
        fed, error = _drive(conn, chunks())
        cpu = time.process_time() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append((name, fed, error, cpu, peak))
    return rows


# ---------------------------------------------------------------------------
# What is read, not measured: soak, fuzzing, property tests, defaults


def soak_runs() -> list[dict[str, Any]]:
    runs = [json.loads(p.read_text()) for p in sorted(DATA.glob("soak-*.json"))]
    return sorted(runs, key=lambda run: run["config"]["fault_rate"])


def fuzz_summary() -> dict[str, dict[str, Any]]:
    log = ROOT / "fuzz" / "campaign.log"
    targets: dict[str, dict[str, Any]] = defaultdict(lambda: Counter())
    for line in log.read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S+)", line))
        if "target" not in fields:
            continue
        entry = targets[fields["target"]]
        entry["runs"] += 1
        entry["execs"] += int(fields["execs"])
        entry["seconds"] += int(fields["seconds"])
        entry["findings"] += int(fields["findings"])
        entry["cov"] = int(fields["cov"])
        entry["ft"] = int(fields["ft"])
        entry["corpus"] = int(fields["corpus"])
    return dict(targets)


def property_tests() -> list[tuple[str, int, int]]:
    """(file, property tests, examples per CI run), from the test sources."""
    rows = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text())
        tests, budget = 0, 0
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = {ast.unparse(d).split("(")[0] for d in node.decorator_list}
                if "given" in names:
                    tests += 1
                    budget += _ci_examples(node)
            elif isinstance(node, ast.ClassDef) and any(
                "RuleBasedStateMachine" in ast.unparse(b) for b in node.bases
            ):
                tests += 1
                budget += 150 * 4
        if tests:
            rows.append((str(path.relative_to(ROOT)), tests, budget))
    return rows


def _ci_examples(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    for decorator in node.decorator_list:
        found = re.search(r"examples\((\d+)\)", ast.unparse(decorator))
        if found:
            return int(found[1]) * 4
    return 1000


def defaults() -> list[tuple[str, str]]:
    timeouts, limits = Timeouts(), ReplyLimits()
    return [
        ("TLS", "required: implicit on port 465, STARTTLS elsewhere (`tls=None`)"),
        ("certificates", "verified against the host name, TLS >= 1.2 (default_ssl_context)"),
        ("AUTH", "only over TLS whose certificate was verified, unless allow_insecure=True"),
        (
            "timeouts (s)",
            ", ".join(
                f"{f.name} {getattr(timeouts, f.name):g}" for f in dataclasses.fields(timeouts)
            ),
        ),
        (
            "reply limits (octets)",
            ", ".join(f"{f.name} {getattr(limits, f.name)}" for f in dataclasses.fields(limits)),
        ),
        ("retries", "never after content was written (OutcomeUnknownError); pools: once before"),
        ("transcripts", "secrets redacted, server text escaped; logging off (NullHandler)"),
    ]


# ---------------------------------------------------------------------------
# The document


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


RUNNER_COLUMNS = {
    "core": ("driver-whole", "driver-bytes", "driver-random"),
    "sync": ("sync",),
    "asyncio": ("asyncio",),
    "trio": ("trio",),
}
MARKS = {"passed": "✓", "failed": "✗", "skipped": "skipped", "": "not run"}


def hostile_section(results: dict[str, str], compare: dict[str, Any]) -> list[str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from hostile.cases import CASES  # type: ignore[import-not-found,unused-ignore]

    by_run: dict[tuple[str, str], str] = {}
    for test_id, outcome in results.items():
        found = re.search(r"test_case\[(.+)/([a-z-]+)\]$", test_id)
        if found:
            by_run[found[1], found[2]] = outcome
    rows = []
    for case in CASES:
        marks = []
        for runners in RUNNER_COLUMNS.values():
            outcomes = {by_run.get((case.id, runner), "") for runner in runners}
            worst = next((o for o in ("failed", "", "skipped") if o in outcomes), "passed")
            marks.append(MARKS[worst])
        rows.append([f"`{case.id}`", case.category, case.expect.outcome, *marks, case.source])
    lines = [
        f"{len(CASES)} cases, each run {sum(map(len, RUNNER_COLUMNS.values()))} ways: on the"
        " core alone (fed whole, byte by byte and split at random: the same outcome and the"
        " same bytes) and on each client. ✓ = the outcome is the one in the table and no"
        " forbidden byte pattern appears in what the client wrote, as the server recorded it.",
        "",
    ]
    lines += table(["case", "category", "outcome", *RUNNER_COLUMNS, "source"], rows)
    if compare:
        lines += compare_section(compare)
    return lines


def compare_section(compare: dict[str, Any]) -> list[str]:
    clients = list(compare["summary"])
    categories = sorted({case["category"] for case in compare["cases"]})
    lines = [
        "### The same servers against smtplib and aiosmtplib (bench/hostile_compare.py)",
        "",
        "A client *holds* a case when it ends in the right kind of outcome (an error where"
        " smtpbee raises one, success where smtpbee succeeds) and writes none of the case's"
        " forbidden bytes. Versions: "
        + ", ".join(f"{name} {version}" for name, version in compare["versions"].items())
        + ".",
        "",
    ]
    rows = []
    for category in categories:
        cells = []
        for client in clients:
            held, total = compare["summary"][client]["by_category"].get(category, [0, 0])
            cells.append(f"{held}/{total}")
        rows.append([category, *cells])
    rows.append(
        ["**all**"] + [f"**{s['held']}/{s['total']}**" for s in compare["summary"].values()]
    )
    lines += table(["category", *clients], rows)
    missed = [
        case
        for case in compare["cases"]
        if any(not case[client]["holds"] for client in clients if client != "smtpbee")
    ]
    lines += [f"The {len(missed)} cases a peer does not hold:", ""]
    lines += table(
        ["case", *[c for c in clients if c != "smtpbee"]],
        [
            [f"`{case['id']}`", *[_peer_cell(case[c]) for c in clients if c != "smtpbee"]]
            for case in missed
        ],
    )
    return lines


def _peer_cell(record: dict[str, Any]) -> str:
    if record["holds"] is None:
        return "n/a"
    if record["holds"]:
        return "✓"
    wrote = "; wrote: " + ", ".join(record["forbidden"]) if record.get("forbidden") else ""
    return f"✗ {record['outcome']}{wrote}".replace("|", "\\|")


TRANSPORTS = ("sync", "asyncio", "trio")
MTAS = ("exim", "opensmtpd", "lmtp")
POSTFIX_TESTS = tuple((ROOT / "tests").glob("test_postfix*.py"))


def mta_versions() -> dict[str, str]:
    versions = {}
    for name in MTAS:
        env = Path(f"/tmp/smtpbee-{name}/env")
        found = re.search(r"VERSION=(\S+)", env.read_text()) if env.is_file() else None
        versions[name] = found[1] if found else "not running"
    postconf = subprocess.run(
        ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, check=False
    )
    versions["postfix"] = postconf.stdout.strip() or "not installed"
    return versions


def mta_section(results: dict[str, str]) -> list[str]:
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for test_id, outcome in results.items():
        params = re.search(r"\[(.+)\]$", test_id)
        parts = params[1].split("-") if params else []
        transport = next((part for part in parts if part in TRANSPORTS), None)
        if transport is None:
            continue
        if "test_postfix" in test_id:
            mta = "postfix"
        else:
            # The server is a parameter of the shared tests, or named by the test itself.
            named = re.search(r"\b(exim|opensmtpd|lmtp)", test_id.replace("_", " "))
            mta = next((p for p in parts if p in MTAS), named[1] if named else "?")
        counts[mta, transport][outcome] += 1
    versions = mta_versions()
    rows = [
        [mta, versions.get(mta, "?")]
        + [f"{counts[mta, t]['passed']}/{sum(counts[mta, t].values())}" for t in TRANSPORTS]
        for mta in sorted({m for m, _ in counts})
    ]
    return table(["MTA", "version", *TRANSPORTS], rows)


def render(args: argparse.Namespace) -> str:
    hostile_junit, mta_junit = DATA / "junit-hostile.xml", DATA / "junit-mtas.xml"
    compare_json = DATA / "hostile-compare.json"
    if not args.skip_tests:
        run_pytest(["tests/hostile"], hostile_junit)
        run_pytest(
            ["tests/test_mtas.py", *sorted(str(p.relative_to(ROOT)) for p in POSTFIX_TESTS)],
            mta_junit,
        )
        subprocess.run(
            [sys.executable, "bench/hostile_compare.py", "--json", str(compare_json)],
            cwd=ROOT,
            check=False,
        )
    compare = json.loads(compare_json.read_text()) if compare_json.is_file() else {}
    lines = [
        "# RELIABILITY",
        "",
        "Evidence that smtpbee holds up against servers that are broken or hostile,",
        "regenerated by `python tools/reliability.py`. Every figure below is measured",
        f"or read from the repository by that run; this one on {time.strftime('%Y-%m-%d')},"
        f" Python {platform.python_version()}, {platform.platform()}.",
        "",
        "## Hostile servers (tests/hostile)",
        "",
        *hostile_section(junit_results(hostile_junit), compare),
        "## The reply matrix",
        "",
        "Every command by every reply code has one documented outcome:",
        "[docs/reply-codes.md](docs/reply-codes.md), generated from the declarations and",
        "checked cell by cell against a live connection by tests/test_state.py.",
        "",
        "## Real MTAs (tests/test_mtas.py, tests/test_postfix*.py)",
        "",
        "Tests passed per MTA and transport: delivery byte for byte to several recipients, a",
        "50 MB message, STARTTLS and implicit TLS with a test CA, AUTH against the MTA's own",
        "authenticator, PIPELINING, CHUNKING, SMTPUTF8 and DSN where the MTA offers them, and",
        "LMTP (Dovecot's server, TCP and Unix socket) with one result per recipient. Each runs",
        "from the Debian package with a private configuration on loopback (.ci/*-start).",
        "OpenSMTPD 6.8 on Debian 12 cannot complete a TLS handshake with OpenSSL 3, so it is",
        "tested in plaintext only. aiosmtpd runs in-process in the rest of the suite.",
        "Postfix's row also counts every control point, forced pipelining, BDAT chunk sizes,",
        "XCLIENT and PROXY v1/v2 headers (tests/test_postfix_controls.py,",
        "tests/test_postfix_xclient_proxy.py).",
        "",
        *mta_section(junit_results(mta_junit)),
        "## Fault-injection soak (bench/soak.py against Postfix)",
        "",
    ]
    soak_rows = []
    for run in soak_runs():
        total, config = run["total"], run["config"]
        soak_rows.append(
            [
                run["seed"],
                config["fault_rate"],
                total["sent"],
                total["delivered"],
                total["failed"],
                f"{total['unknown']} ({total['unknown_arrived']} arrived)",
                total["duplicates"],
                total["lost"],
                total["failed_arrived"],
                f"{run['wall_seconds']:.0f} s",
            ]
        )
    lines += table(
        [
            "seed",
            "fault rate",
            "sent",
            "delivered",
            "failed",
            "unknown",
            "duplicates",
            "lost",
            "failed but arrived",
            "wall",
        ],
        soak_rows,
    )
    lines += ["## Fuzzing (fuzz/campaign.log)", ""]
    fuzz = fuzz_summary()
    lines += table(
        [
            "target",
            "runs",
            "executions",
            "exec/s",
            "coverage edges",
            "features",
            "corpus",
            "findings",
        ],
        [
            [
                t,
                f["runs"],
                f"{f['execs']:,}",
                f"{f['execs'] // max(f['seconds'], 1):,}",
                f["cov"],
                f["ft"],
                f["corpus"],
                f["findings"],
            ]
            for t, f in sorted(fuzz.items())
        ],
    )
    total = sum(f["execs"] for f in fuzz.values())
    lines += [
        f"{total:,} executions in all; each finding is fixed with a regression test in",
        "tests/test_fuzz_findings.py.",
        "",
    ]
    lines += ["## Property tests", ""]
    properties = property_tests()
    lines += table(
        ["file", "property tests", "examples per CI run (at least)"],
        [list(row) for row in properties],
    )
    lines += ["## CPU and memory under hostile input", ""]
    lines += table(
        ["attack", "octets fed before the error", "error", "CPU s", "peak KiB allocated"],
        [
            [n, f"{fed:,}", e, f"{cpu:.3f}", peak // 1024]
            for n, fed, e, cpu, peak in measure_hostile_input()
        ],
    )
    limits = ReplyLimits()
    lines += [
        f"The caps: a line of {limits.max_line_length} octets, a reply of "
        f"{limits.max_reply_size}; work stays linear (tests/test_linear.py).",
        "",
    ]
    deadline, trials = 0.3, args.trials
    lines += [
        "## Time to error per deadline",
        "",
        f"A server that goes silent at each phase; deadline {deadline} s, {trials} runs"
        " each, blocking client; seconds past the deadline before SMTPTimeoutError.",
        "",
    ]
    overshoot = measure_deadlines(deadline, trials)
    lines += table(
        ["phase", "median overshoot", "worst overshoot"],
        [[p, f"{statistics.median(v):.3f}", f"{max(v):.3f}"] for p, v in overshoot.items()],
    )
    lines += ["## Safe defaults, as shipped", ""]
    lines += table(["concern", "default"], [list(row) for row in defaults()])
    lines += [
        "## Out of scope",
        "",
        "- The server side of SMTP, and delivery decisions (MX lookup, queueing, retries",
        "  over hours): smtpbee is a client that talks to one server.",
        "- DKIM, SPF, DMARC, ARC and S/MIME: message signing and policy are the sender's",
        "  application's or the relay's business.",
        "- Defending against a hostile *client process*: the caller is trusted.",
        "- DANE and MTA-STS policy lookup (they need DNS); certificate checks follow the",
        "  SSLContext the caller gives, verified by default.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "RELIABILITY.md")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    args.out.write_text(render(args), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
