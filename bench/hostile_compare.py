"""The hostile-server table against smtplib and aiosmtplib, beside smtpbee.

Run with ``python bench/hostile_compare.py [--only SUBSTRING] [--clients LIST]
[--json PATH]``. Needs ``.[dev]`` and aiosmtplib (the ``bench`` extra).

Every case of tests/hostile/cases.py that other libraries can run (``peers=True``)
is served by the same scripted server on loopback to three clients:

* smtpbee: the blocking client, run and checked exactly as tests/hostile runs it
  (``runners.run(case, "sync")`` and ``verify``);
* smtplib (blocking) and aiosmtplib (asyncio), driven as their users write it:
  ``SMTP``/``SMTP_SSL`` (``use_tls=True``) or ``starttls()`` with the suite's CA
  context, ``login`` (``auth`` with the named method when the case names a
  mechanism), ``sendmail``/``send_message``, ``noop``/``quit``/... for small
  commands, consecutive sends for a batch, the case's timeout, and the client's
  context manager around the session (its exit sends QUIT).

A peer *holds* a case when its outcome is of the right kind (an exception where
smtpbee must fail, none where it must succeed, per message for a batch), the
server stored what the case expects (delivered count, content), and the server's
transcript of what the peer wrote contains none of the case's forbidden patterns
(nor those no client may write: bare CR or LF in commands and content). The
patterns are matched ignoring ASCII case, for every client: verbs are not case
sensitive (RFC 5321 §2.4) and smtplib writes ``mail FROM:``, ``rcpt TO:``,
``data``. The exact exception class and smtpbee's own checks (escaping, SNI,
BDAT counts, ...) are not asked of the peers. A peer that has not finished
after the watchdog (``WATCHDOG`` seconds) is stopped and reported as ``hang``.

Neither peer implements CHUNKING: a case whose server offers it, where the peer
sent no BDAT, tests nothing of that peer and is shown as ``n/a`` (left out of
its totals). Peers receive a streamed body (``pieces``) whole: neither takes an
iterable.

The exit status is 1 if smtpbee fails to hold a case (the peers' results are the
point of the table, not failures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import re
import smtplib
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiosmtplib
import smtpbee
from smtpbee.testing import Command, Message, Transcript

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hostile import certs
from hostile.cases import CASES
from hostile.model import CATEGORIES, RECIPIENT, SENDER, Batch, Case, Forbidden, Login, Send, Step
from hostile.runners import LOCAL_HOSTNAME, build_server, run
from hostile.verify import forbidden_hits, verify

__all__ = [
    "CLIENTS",
    "PEERS",
    "WATCHDOG",
    "Result",
    "as_json",
    "compare",
    "hits",
    "main",
    "render",
    "run_peer",
    "run_smtpbee",
    "summary",
]

CLIENTS = ("smtpbee", "smtplib", "aiosmtplib")
PEERS = ("smtplib", "aiosmtplib")
WATCHDOG = 6.0
"""Seconds a peer may take on one case.

smtplib's timeout bounds each read, not a reply, so it reads the slowest drip in
the table (drip-continuations-deadline) to its end: about 4.5 s. Past the watchdog
the server is stopped, which wakes a client blocked on its socket.
"""
SERVER_END = 3.0  # how long to wait for the server's connection to end after a run
HOST = "127.0.0.1"


@dataclass
class Result:
    """One client on one case.

    Attributes:
        outcome: "ok", the class name of what the client raised, or "hang";
            for a batch, "ok" followed by each message's outcome.
        holds: the outcome is of the right kind, the server stored what it
            should, and nothing forbidden was written (None: the case does
            not apply to this client).
        forbidden: the forbidden patterns found in what the client wrote.
        problems: why it does not hold, in words (empty if it holds).
        detail: the text of the exception, shortened.
        elapsed: wall-clock seconds.
    """

    outcome: str
    holds: bool | None
    forbidden: list[Forbidden] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    detail: str = ""
    elapsed: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "holds": self.holds,
            "forbidden": [hit.describe() for hit in self.forbidden],
            "problems": self.problems,
            "detail": self.detail,
            "elapsed": round(self.elapsed, 3),
        }


def _short(error: BaseException, limit: int = 160) -> str:
    text = f"{type(error).__name__}: {error}".replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _wrote(hits: list[Forbidden]) -> list[str]:
    return [f"wrote: {hit.why}" for hit in hits]


def _fold(forbidden: Forbidden) -> Forbidden:
    pattern = forbidden.pattern
    if isinstance(pattern, bytes):
        folded = re.compile(re.escape(pattern), re.IGNORECASE)
    else:
        folded = re.compile(pattern.pattern, pattern.flags | re.IGNORECASE)
    return replace(forbidden, pattern=folded)


def hits(
    case: Case, transcript: Transcript, unparsed: bytes, written: bytes | None = None
) -> list[Forbidden]:
    """verify.forbidden_hits with the case's patterns matched ignoring ASCII case."""
    pairs = [(_fold(each), each) for each in case.forbidden]
    folded = replace(case, forbidden=tuple(fold for fold, _ in pairs))
    found = forbidden_hits(folded, transcript, unparsed, written)
    return [next((each for fold, each in pairs if fold is hit), hit) for hit in found]


# ----------------------------------------------------------------------------
# smtpbee


def run_smtpbee(case: Case) -> Result:
    """The blocking client, run and verified as tests/hostile does."""
    started = time.monotonic()
    try:
        record = run(case, "sync")
    except Exception as exc:  # a runner that cannot finish is a result too
        return Result(type(exc).__name__, False, problems=["the run failed"], detail=_short(exc))
    outcome = "ok" if record.error is None else type(record.error).__name__
    if isinstance(record.result, list) and case.expect.batch:
        outcome += " [" + ", ".join(type(item).__name__ for item in record.result) + "]"
    found = hits(case, record.transcript, record.unparsed, record.written)
    problems = _wrote(found)
    try:
        verify(case, record)
    except AssertionError as exc:
        problems = problems or [str(exc).split(": ", 1)[-1][:160]]
    detail = _short(record.error) if record.error is not None else ""
    return Result(outcome, not problems, found, problems, detail, time.monotonic() - started)


# ----------------------------------------------------------------------------
# The peers: what they did, then the same judgement for both


@dataclass
class _PeerRun:
    error: BaseException | None = None
    items: list[BaseException | None] | None = None
    hung: bool = False
    transcript: Transcript = field(default_factory=Transcript)
    unparsed: bytes = b""
    commands: list[Command] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)


class Refused(Exception):
    """A small command's reply that refused it (smtplib returns such replies, never raises)."""

    def __init__(self, code: int, text: bytes) -> None:
        super().__init__(f"{code} {text.decode('utf-8', 'replace')}")
        self.code = code


def _outcome(peer: _PeerRun) -> str:
    if peer.hung:
        return "hang"
    if peer.error is not None:
        return type(peer.error).__name__
    if peer.items is not None:
        names = ("ok" if item is None else type(item).__name__ for item in peer.items)
        return "ok [" + ", ".join(names) + "]"
    return "ok"


def _judge(case: Case, peer: _PeerRun, elapsed: float) -> Result:
    expect = case.expect
    found = hits(case, peer.transcript, peer.unparsed)
    if (
        "CHUNKING" in (case.server.extensions or ())
        and not peer.hung
        and not any(command.verb == "BDAT" for command in peer.commands)
    ):
        return Result(_outcome(peer), None, found, ["never sent BDAT"], elapsed=elapsed)
    problems: list[str] = []
    if peer.hung:
        problems.append(f"still running after {WATCHDOG:g} s")
    elif expect.batch:
        wanted = [name != "SendResult" for name in expect.batch]
        got = None if peer.items is None else [item is not None for item in peer.items]
        if got != wanted:
            shown = " ".join("error" if failed else "ok" for failed in wanted)
            problems.append(f"expected per message: {shown}")
    elif expect.error is None and peer.error is not None:
        problems.append("expected success")
    elif expect.error is not None and peer.error is None:
        problems.append("expected an error")
    if expect.delivered is not None and len(peer.messages) != expect.delivered:
        problems.append(f"{len(peer.messages)} delivered, expected {expect.delivered}")
    stored = [message.content for message in peer.messages[:1]]
    if expect.content is not None and stored and stored[0] != expect.content:
        problems.append("the server stored other content")
    problems += _wrote(found)
    detail = _short(peer.error) if peer.error is not None else ""
    return Result(_outcome(peer), not problems, found, problems, detail, elapsed)


def run_peer(case: Case, client: str) -> Result:
    """Run ``case`` with ``client`` ("smtplib" or "aiosmtplib") and judge it."""
    started = time.monotonic()
    if client == "smtplib":
        peer = _run_smtplib(case)
    elif client == "aiosmtplib":
        peer = _in_thread(lambda: asyncio.run(_run_aiosmtplib(case)), WATCHDOG + SERVER_END + 5)
    else:
        raise ValueError(f"unknown client {client!r}")
    return _judge(case, peer, time.monotonic() - started)


def _in_thread(work: Callable[[], _PeerRun], limit: float) -> _PeerRun:
    """Run ``work`` in a thread, bounded: a client stuck beyond ``limit`` is a hang."""
    box: list[_PeerRun] = []
    thread = threading.Thread(target=lambda: box.append(work()), daemon=True)
    thread.start()
    thread.join(limit)
    return box[0] if box else _PeerRun(hung=True)


def _context(case: Case) -> ssl.SSLContext | None:
    return certs.client_context(case.client.trust) if case.client.tls != "none" else None


def _body(step: Send) -> bytes | str:
    if step.body.kind == "str":
        return step.body.data
    return step.body.whole()


# ----------------------------------------------------------------------------
# smtplib


def _run_smtplib(case: Case) -> _PeerRun:
    peer = _PeerRun()
    running = build_server(case).serve_in_thread().start()

    def session() -> None:
        try:
            peer.items = _smtplib_session(case, running.port)
        except Exception as exc:
            peer.error = exc

    thread = threading.Thread(target=session, daemon=True, name=f"smtplib-{case.id}")
    thread.start()
    thread.join(WATCHDOG)
    if thread.is_alive():
        peer.hung = True
    with contextlib.suppress(Exception):
        running.wait(timeout=0.1 if peer.hung else SERVER_END)
    with contextlib.suppress(Exception):
        running.stop(grace=0.2)
    thread.join(SERVER_END)
    peer.transcript = running.transcript
    peer.unparsed = b"".join(each.unparsed for each in running.sessions)
    peer.commands = running.commands
    peer.messages = running.messages
    return peer


def _smtplib_session(case: Case, port: int) -> list[BaseException | None] | None:
    spec = case.client
    context = _context(case)
    smtp: smtplib.SMTP
    if spec.tls == "implicit":
        smtp = smtplib.SMTP_SSL(
            HOST, port, local_hostname=LOCAL_HOSTNAME, timeout=spec.timeout, context=context
        )
    else:
        smtp = smtplib.SMTP(HOST, port, local_hostname=LOCAL_HOSTNAME, timeout=spec.timeout)
    items: list[BaseException | None] | None = None
    with smtp:
        if spec.tls == "starttls":
            smtp.starttls(context=context)
        elif spec.tls == "opportunistic":
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context)
        if not case.steps:
            # smtpbee's connect() says EHLO; smtplib's leaves it to the first command.
            smtp.ehlo_or_helo_if_needed()
        for step in case.steps:
            items = _smtplib_step(smtp, step)
    return items


def _smtplib_step(smtp: smtplib.SMTP, step: Step) -> list[BaseException | None] | None:
    if isinstance(step, Login):
        if step.mechanism is None:
            smtp.login(step.username, step.password)
        else:
            # smtplib's documented way to use one mechanism (login() tries each offered).
            smtp.ehlo_or_helo_if_needed()
            smtp.user, smtp.password = step.username, step.password
            smtp.auth(step.mechanism, getattr(smtp, f"auth_{step.mechanism.lower()}"))
        return None
    if isinstance(step, Send):
        if step.body.kind == "message":
            smtp.send_message(step.body.message())
        else:
            smtp.sendmail(step.sender, list(step.recipients), _body(step))
        return None
    if isinstance(step, Batch):
        items: list[BaseException | None] = []
        for data in step.bodies:
            try:
                smtp.sendmail(SENDER, [RECIPIENT], data)
            except Exception as exc:
                items.append(exc)
            else:
                items.append(None)
        return items
    if step.verb == "QUIT":
        code, text = smtp.quit()
    elif step.verb == "NOOP":
        code, text = smtp.noop()
    elif step.verb == "RSET":
        code, text = smtp.rset()
    elif step.verb == "VRFY":
        code, text = smtp.verify(step.argument)
    else:
        text = smtp.help(step.argument)
        code = 214
    if not 200 <= code < 400:
        raise Refused(code, text)
    return None


# ----------------------------------------------------------------------------
# aiosmtplib


async def _run_aiosmtplib(case: Case) -> _PeerRun:
    peer = _PeerRun()
    running = build_server(case).serve_asyncio()
    await running.__aenter__()
    try:
        watchdog = asyncio.timeout(WATCHDOG)
        try:
            async with watchdog:
                peer.items = await _aiosmtplib_session(case, running.port)
        except Exception as exc:
            peer.hung = watchdog.expired()
            peer.error = None if peer.hung else exc
        with contextlib.suppress(Exception):
            await running.wait(timeout=0.1 if peer.hung else SERVER_END)
    finally:
        with contextlib.suppress(Exception):
            await running.aclose(grace=0.2)
    peer.transcript = running.transcript
    peer.unparsed = b"".join(each.unparsed for each in running.sessions)
    peer.commands = running.commands
    peer.messages = running.messages
    return peer


async def _aiosmtplib_session(case: Case, port: int) -> list[BaseException | None] | None:
    spec = case.client
    start_tls = {"starttls": True, "opportunistic": None}.get(spec.tls, False)
    smtp = aiosmtplib.SMTP(
        hostname=HOST,
        port=port,
        local_hostname=LOCAL_HOSTNAME,
        timeout=spec.timeout,
        use_tls=spec.tls == "implicit",
        start_tls=start_tls,
        tls_context=_context(case),
    )
    items: list[BaseException | None] | None = None
    async with smtp:
        if not case.steps and smtp.is_ehlo_or_helo_needed:
            # smtpbee's connect() says EHLO; aiosmtplib's leaves it to the first command.
            await smtp.ehlo()
        for step in case.steps:
            items = await _aiosmtplib_step(smtp, step)
    return items


async def _aiosmtplib_step(smtp: aiosmtplib.SMTP, step: Step) -> list[BaseException | None] | None:
    if isinstance(step, Login):
        if step.mechanism == "LOGIN":
            await smtp.auth_login(step.username, step.password)
        elif step.mechanism == "PLAIN":
            await smtp.auth_plain(step.username, step.password)
        elif step.mechanism == "CRAM-MD5":
            await smtp.auth_crammd5(step.username, step.password)
        else:
            await smtp.login(step.username, step.password)
        return None
    if isinstance(step, Send):
        if step.body.kind == "message":
            await smtp.send_message(step.body.message())
        else:
            await smtp.sendmail(step.sender, list(step.recipients), _body(step))
        return None
    if isinstance(step, Batch):
        items: list[BaseException | None] = []
        for data in step.bodies:
            try:
                await smtp.sendmail(SENDER, [RECIPIENT], data)
            except Exception as exc:
                items.append(exc)
            else:
                items.append(None)
        return items
    if step.verb == "QUIT":
        await smtp.quit()
    elif step.verb == "NOOP":
        await smtp.noop()
    elif step.verb == "RSET":
        await smtp.rset()
    elif step.verb == "VRFY":
        await smtp.vrfy(step.argument)
    elif step.argument:
        # help() takes no topic; the command itself does.
        await smtp.execute_command(b"HELP", step.argument.encode())
    else:
        await smtp.help()
    return None


# ----------------------------------------------------------------------------
# The table


def compare(
    cases: Sequence[Case],
    clients: Sequence[str] = CLIENTS,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[Case, dict[str, Result]]]:
    """Each case with each client: [(case, {client: result})], in table order."""
    rows = []
    for case in cases:
        results: dict[str, Result] = {}
        for client in clients:
            results[client] = run_smtpbee(case) if client == "smtpbee" else run_peer(case, client)
        rows.append((case, results))
        if progress is not None:
            progress(case.id)
    return rows


def summary(
    rows: Sequence[tuple[Case, dict[str, Result]]], clients: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per client: held and total, and [held, total] per category (cases that apply)."""
    figures: dict[str, dict[str, Any]] = {}
    for client in clients:
        by_category = {category: [0, 0] for category in CATEGORIES}
        for case, results in rows:
            holds = results[client].holds
            if holds is not None:
                by_category[case.category][0] += holds
                by_category[case.category][1] += 1
        figures[client] = {
            "held": sum(held for held, _ in by_category.values()),
            "total": sum(total for _, total in by_category.values()),
            "not_applicable": sum(results[client].holds is None for _, results in rows),
            "by_category": {
                name: by_category[name]
                for name in CATEGORIES
                if any(c.category == name for c, _ in rows)
            },
        }
    return figures


def render(rows: Sequence[tuple[Case, dict[str, Result]]], clients: Sequence[str]) -> str:
    """The table (Markdown), then the summary per category and client."""
    lines = [
        "| case | category | expected | " + " | ".join(clients) + " |",
        "|---|---|---|" + "---|" * len(clients),
    ]
    for case, results in rows:
        cells = [_cell(results[client]) for client in clients]
        lines.append(
            f"| {case.id} | {case.category} | {case.expect.outcome} | {' | '.join(cells)} |"
        )
    figures = summary(rows, clients)
    lines += ["", "| category | " + " | ".join(clients) + " |", "|---|" + "---|" * len(clients)]
    for category in CATEGORIES:
        if category not in figures[clients[0]]["by_category"]:
            continue
        pairs = [figures[client]["by_category"][category] for client in clients]
        lines.append(f"| {category} | " + " | ".join(f"{h}/{t}" for h, t in pairs) + " |")
    totals = [f"**{figures[c]['held']}/{figures[c]['total']}**" for c in clients]
    lines.append("| all | " + " | ".join(totals) + " |")
    return "\n".join(lines)


def _cell(result: Result) -> str:
    mark = {True: "✓", False: "✗", None: "- n/a:"}[result.holds]
    text = f"{mark} {result.outcome}"
    if result.problems:
        text += ", " + "; ".join(result.problems)
    return text.replace("|", "\\|")


def versions() -> dict[str, str]:
    return {
        "smtpbee": smtpbee.__version__,
        "smtplib": "stdlib",
        "aiosmtplib": aiosmtplib.__version__,
    }


def as_json(
    rows: Sequence[tuple[Case, dict[str, Result]]], clients: Sequence[str], elapsed: float
) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "versions": {client: versions()[client] for client in clients},
        "elapsed": round(elapsed, 1),
        "cases": [
            {
                "id": case.id,
                "category": case.category,
                "expected": case.expect.outcome,
                "source": case.source,
                **{client: results[client].as_json() for client in clients},
            }
            for case, results in rows
        ],
        "summary": summary(rows, clients),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", default="", help="run the cases whose id contains this")
    parser.add_argument(
        "--clients", default=",".join(CLIENTS), help=f"comma-separated, of {', '.join(CLIENTS)}"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    clients = [name.strip() for name in args.clients.split(",") if name.strip()]
    unknown = set(clients) - set(CLIENTS)
    if unknown or not clients:
        parser.error(f"--clients takes {', '.join(CLIENTS)}, not {', '.join(sorted(unknown))}")
    cases = [case for case in CASES if case.peers and args.only in case.id]
    if not cases:
        parser.error(f"no case with peers=True has {args.only!r} in its id")
    started = time.monotonic()
    rows = compare(cases, clients, lambda name: print(f"  {name}", file=sys.stderr, flush=True))
    elapsed = time.monotonic() - started
    print(render(rows, clients))
    print(f"\n{len(cases)} cases, {len(clients)} clients, {elapsed:.1f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(rows, clients, elapsed), indent=2) + "\n")
    if "smtpbee" in clients and not all(results["smtpbee"].holds for _, results in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
