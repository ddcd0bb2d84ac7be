"""The documentation: every code example runs, the site builds, the API pages say it all.

Conventions the pages follow (docs/*.md, and README.md's python blocks):

* Every ```python block is executed on its own, in a fresh namespace, as a script
  (``__name__ == "__main__"``), in a temporary directory that holds ``message.eml``,
  ``big.eml`` (about 1 MB) and ``ca.pem`` (the test CA), so examples can open them.
* A block that talks to a server is preceded by an HTML comment, invisible on the page::

      <!-- docs-test: server=starttls messages=2 reject=nobody@example.test -->

  ``server`` is ``plain`` (no TLS), ``starttls`` or ``implicit``: that aiosmtpd server
  is started (it knows the login me / secret), and every client built for a host under
  ``example.test`` (or a connection URL naming one) is pointed at it, with the TLS
  mode the example's port implies and,
  when the example gives no ``ssl_context``, one that trusts the test CA (so does
  ``socket.create_connection``). ``messages``
  is how many messages the server must have received (default: at least one), and
  ``reject`` lists recipients it refuses. README.md has no such comments: its blocks
  that name ``mail.example.test`` get a STARTTLS server.
* A block whose only line is a snippet include (``--8<-- "examples/..."``) shows an
  example program, which has its own test below.

The site is built with ``mkdocs build --strict`` (warnings are errors) once per run;
that test skips only outside CI, when MkDocs is not installed.
"""

from __future__ import annotations

import email.policy
import functools
import html
import importlib.util
import inspect
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import smtpbee
from servers import AiosmtpdServer, LoopbackCA, TLSAiosmtpdServer
from smtpbee._commands import MAIL_OPTIONS, RCPT_OPTIONS
from smtpbee.transports._base import ClientBase

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"

USERS = {"me": "secret"}
"""The login the examples use; every server started here knows it."""

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<options>.*?)-->\s*$")
_INCLUDE = re.compile(r'^--8<--\s+"(?P<path>[^"]+)"$')


@dataclass(frozen=True)
class Block:
    """One fenced python block of a page, and how to run it."""

    path: Path
    line: int
    code: str
    server: str | None = None
    messages: int | None = None
    reject: tuple[str, ...] = ()
    include: str | None = None
    marked: bool = False

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclass
class _Options:
    server: str | None = None
    messages: int | None = None
    reject: list[str] = field(default_factory=list)


def _parse_options(text: str, where: str) -> _Options:
    options = _Options()
    for item in text.split():
        key, _, value = item.partition("=")
        if key == "server" and value in ("plain", "starttls", "implicit"):
            options.server = value
        elif key == "messages" and value.isdigit():
            options.messages = int(value)
        elif key == "reject" and value:
            options.reject = value.split(",")
        else:
            raise ValueError(f"{where}: unknown docs-test option {item!r}")
    return options


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file, with the options of their markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    previous = ""  # the last non-blank line before a fence
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            if lines[index].strip():
                previous = lines[index]
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ")[0].lstrip("{.").lower()
        start = index + 1
        index = start
        while index < len(lines) and not (
            lines[index].startswith(indent + fence) and not lines[index].strip(" \t`~")
        ):
            index += 1
        body = [
            line[len(indent) :] if line.startswith(indent) else line for line in lines[start:index]
        ]
        index += 1
        if language in ("python", "py"):
            where = f"{path.relative_to(ROOT)}:{start}"
            marker = _MARKER.match(previous)
            options = _parse_options(marker["options"], where) if marker else _Options()
            code = "\n".join(body) + "\n"
            include = _INCLUDE.match(code.strip())
            blocks.append(
                Block(
                    path=path,
                    line=start,
                    code=code,
                    server=options.server,
                    messages=options.messages,
                    reject=tuple(options.reject),
                    include=include["path"] if include else None,
                    marked=marker is not None,
                )
            )
        previous = ""
    return blocks


def _readme_blocks() -> list[Block]:
    blocks = []
    for block in python_blocks(README):
        if '"mail.example.test"' in block.code and block.server is None:
            block = Block(block.path, block.line, block.code, server="starttls")
        blocks.append(block)
    return blocks


DOC_PAGES = sorted(DOCS.rglob("*.md"))
BLOCKS = [block for page in DOC_PAGES for block in python_blocks(page)] + _readme_blocks()
TESTED_EXAMPLES = {"examples/selectors_client.py"}
"""The example programs the pages include, each run by a test of this module."""


# --------------------------------------------------------------------------------------
# Running a block


def _write_files(directory: Path, ca: LoopbackCA) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "me@example.test", "you@example.test", "Saved"
    msg.set_content("A message read from a file.\n")
    (directory / "message.eml").write_bytes(msg.as_bytes(policy=email.policy.SMTP))
    line = b"A line of a large message, sent as it is read, never loaded whole.\r\n"
    head = b"From: me@example.test\r\nTo: you@example.test\r\nSubject: Big\r\n\r\n"
    (directory / "big.eml").write_bytes(head + line * (1_000_000 // len(line)))
    shutil.copyfile(ca.cafile, directory / "ca.pem")


def _point_clients_at(
    monkeypatch: pytest.MonkeyPatch, server: AiosmtpdServer | None, ca: LoopbackCA
) -> None:
    """Clients (and sockets) made for a host under example.test reach the test server."""
    original = ClientBase.__init__

    @functools.wraps(original)
    def init(self: ClientBase, host: str | None = None, port: int | None = None, **kw: Any) -> None:
        if host is not None and "://" in host:  # a connection URL: its scheme says TLS
            url = urllib.parse.urlsplit(host)
            if (url.hostname or "").endswith("example.test"):
                if server is None:
                    pytest.fail(f"the example connects to {host}: mark it with a server")
                user = url.netloc.rpartition("@")[0]
                where = f"{server.host}:{server.port}"
                host = url._replace(netloc=f"{user}@{where}" if user else where).geturl()
                if kw.get("ssl_context") is None:
                    kw["ssl_context"] = ca.client_context()
        elif host is not None and host.endswith("example.test"):
            if server is None:
                pytest.fail(
                    f"the example connects to {host}: mark it <!-- docs-test: server=... -->"
                )
            if kw.get("tls") is None and kw.get("sock") is None:
                # Keep the mode the example's port means (465: implicit TLS).
                kw["tls"] = smtpbee.resolve_tls_mode(None, 25 if port is None else port)
            if kw.get("ssl_context") is None:
                kw["ssl_context"] = ca.client_context()
            if str(kw.get("server_hostname", "")).endswith("example.test"):
                kw["server_hostname"] = "localhost"
            host, port = server.host, server.port
        original(self, host, port, **kw)

    monkeypatch.setattr(ClientBase, "__init__", init)

    connect = socket.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kw: Any) -> socket.socket:
        if str(address[0]).endswith("example.test"):
            if server is None:
                pytest.fail(f"the example connects to {address[0]}: mark it with a server")
            address = (server.host, server.port)
        return connect(address, *args, **kw)

    monkeypatch.setattr(socket, "create_connection", create_connection)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_the_example_runs(
    block: Block,
    aiosmtpd_factory: Any,
    trust_ca: LoopbackCA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if block.include is not None:
        assert block.include in TESTED_EXAMPLES, f"{block.name}: {block.include} has no test"
        assert (ROOT / block.include).is_file()
        return
    _write_files(tmp_path, trust_ca)
    monkeypatch.chdir(tmp_path)
    server: AiosmtpdServer | None = None
    if block.server is not None:
        tls_mode = "none" if block.server == "plain" else block.server
        server = aiosmtpd_factory(tls_mode=tls_mode, auth_users=USERS)
        server.reject_recipients = set(block.reject)
    _point_clients_at(monkeypatch, server, trust_ca)
    code = compile(block.code, block.name, "exec")
    exec(code, {"__name__": "__main__", "__file__": block.name})
    if server is not None:
        received = len(server.messages)
        if block.messages is None:
            assert received >= 1, f"{block.name}: the server received no message"
        else:
            assert received == block.messages, f"{block.name}: {received} messages arrived"


def test_the_pages_have_examples_and_the_conventions_hold() -> None:
    # A page renamed or a marker misspelt would silently run nothing.
    names = {block.path.relative_to(DOCS).as_posix() for block in BLOCKS if block.path != README}
    for name in (
        "index.md",
        "guides/sending.md",
        "guides/tls-and-auth.md",
        "guides/bulk.md",
        "guides/errors.md",
        "guides/embedding.md",
        "guides/migration.md",
        "guides/testing.md",
        "learn/index.md",
    ):
        assert name in names, f"docs/{name} has no python example"
    for page in DOC_PAGES:
        # Every marker sits right above a python block (a marker anywhere else is lost).
        markers = len(re.findall(r"<!--\s*docs-test:", page.read_text(encoding="utf-8")))
        marked = [block for block in BLOCKS if block.path == page and block.marked]
        assert markers == len(marked), f"{page}: a docs-test marker is not above a block"
    assert any(block.server == "implicit" for block in BLOCKS)
    assert any(block.server == "starttls" for block in BLOCKS)
    assert len([b for b in BLOCKS if b.path == README]) >= 2


# --------------------------------------------------------------------------------------
# The selectors example of docs/guides/embedding.md


def _run_selectors_example(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "selectors_client.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
def test_the_selectors_example_delivers_over_a_real_socket(tls: str, aiosmtpd_factory: Any) -> None:
    server = aiosmtpd_factory(tls_mode=tls)
    tls_args: list[str] = ["--tls", tls]
    if isinstance(server, TLSAiosmtpdServer):
        tls_args += ["--cafile", server.cafile]
    run = _run_selectors_example(
        server.host,
        str(server.port),
        *tls_args,
        "--from",
        "me@example.test",
        "--to",
        "you@example.test",
        "--to",
        "friend@example.test",
        "--sessions",
        "2",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(server.messages) == 2
    subjects = set()
    for message in server.messages:
        assert message.mail_from == "me@example.test"
        assert message.rcpt_tos == ["you@example.test", "friend@example.test"]
        assert message.tls is (tls != "none")
        match = re.search(rb"^Subject: (.*)\r$", message.content, re.MULTILINE)
        assert match is not None
        subjects.add(match.group(1))
    assert subjects == {
        b"selectors example, session 1 of 2",
        b"selectors example, session 2 of 2",
    }
    out = run.stdout.splitlines()
    assert "session 1 C: QUIT" in out and "session 2 C: QUIT" in out
    if tls == "starttls":
        assert "session 1 C: STARTTLS" in out
    if tls != "none":
        assert "session 1 C: <TLS handshake done>" in out
    assert out[-2].startswith("session 1: delivered to you@example.test, friend@example.test")
    assert out[-1].startswith("session 2: delivered to you@example.test, friend@example.test")


def test_the_selectors_example_throws_a_refused_certificate_in(
    aiosmtpd_starttls_server: TLSAiosmtpdServer,
) -> None:
    # No --cafile: the system's roots do not know the test CA, the handshake fails,
    # and TLSVerificationError reaches the procedure, which ends the session.
    server = aiosmtpd_starttls_server
    run = _run_selectors_example(
        server.host, str(server.port), "--from", "me@example.test", "--to", "you@example.test"
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1].startswith("session 1: TLSVerificationError: ")
    assert server.messages == []


def test_the_selectors_example_times_out_on_a_silent_server() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never greets
        port = silent.getsockname()[1]
        run = _run_selectors_example(
            "127.0.0.1",
            str(port),
            "--tls",
            "none",
            "--timeout",
            "0.5",
            "--from",
            "me@example.test",
            "--to",
            "you@example.test",
        )
    assert run.returncode == 1, run.stdout + run.stderr
    last = run.stdout.splitlines()[-1]
    assert last.startswith("session 1: SMTPTimeoutError: ")
    assert "the 220 greeting" in last


# --------------------------------------------------------------------------------------
# What the reference must say


def _args_section(doc: str | None) -> set[str]:
    """The names an ``Args:`` section of a Google-style docstring documents."""
    assert doc is not None
    section = re.search(r"^\s*Args:\n(.*?)(?:^\s*\w[\w ]*:\n|\Z)", doc, re.MULTILINE | re.DOTALL)
    assert section is not None, "no Args section"
    names = re.findall(r"^\s{4,8}\**(\w+)(?: \([^)]*\))?:", section.group(1), re.MULTILINE)
    return set(names)


def test_every_client_constructor_argument_is_documented() -> None:
    parameters = set(inspect.signature(ClientBase.__init__).parameters) - {"self"}
    assert parameters <= _args_section(ClientBase.__doc__)


def _pool_parameters(transport: str) -> set[str]:
    pool = importlib.import_module(f"smtpbee.transports.{transport}").SMTPPool
    return set(inspect.signature(pool.__init__).parameters) - {"self"}


@pytest.mark.parametrize("transport", ["sync", "asyncio", "trio"])
def test_every_pool_argument_is_documented(transport: str) -> None:
    pool = importlib.import_module(f"smtpbee.transports.{transport}").SMTPPool
    defining = next(cls for cls in pool.__mro__ if "__init__" in vars(cls))  # AsyncPool ...
    assert _pool_parameters(transport) <= _args_section(defining.__doc__)
    bulk = (DOCS / "guides" / "bulk.md").read_text(encoding="utf-8")
    for name in _pool_parameters(transport):  # the guide's summary keeps up with the pool
        assert re.search(rf"\b{name}\b", bulk), f"guides/bulk.md does not mention {name}"


def test_every_mail_and_rcpt_option_is_documented() -> None:
    assert set(MAIL_OPTIONS) <= _args_section(smtpbee.Mail.__doc__)
    assert set(RCPT_OPTIONS) <= _args_section(smtpbee.Rcpt.__doc__)
    sending = (DOCS / "guides" / "sending.md").read_text(encoding="utf-8")
    for key in sorted(MAIL_OPTIONS | RCPT_OPTIONS):
        assert f"`{key}`" in sending, f"guides/sending.md does not document the key {key}"


# --------------------------------------------------------------------------------------
# The site


def _mkdocs_available() -> bool:
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built by `mkdocs build --strict` into a temporary directory."""
    if not _mkdocs_available():
        reason = "MkDocs is not installed: python -m pip install -e '.[docs]'"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    output = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return output


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text(encoding="utf-8")


def test_the_site_builds_strict(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "search" / "search_index.json").is_file()
    for page in site.rglob("*.html"):
        assert "fonts.googleapis.com" not in page.read_text(encoding="utf-8"), page


@pytest.mark.parametrize(
    ("page", "client"),
    [
        ("reference/sync", "SMTPClient"),
        ("reference/asyncio", "AsyncSMTPClient"),
        ("reference/trio", "TrioSMTPClient"),
    ],
)
def test_each_transport_page_shows_every_constructor_argument(
    site: Path, page: str, client: str
) -> None:
    html = _page(site, page)
    assert f'id="smtpbee.transports.{page.split("/")[1]}.{client}"' in html
    arguments = html[html.index('id="constructor-arguments"') :]
    for name in set(inspect.signature(ClientBase.__init__).parameters) - {"self"}:
        assert f"<code>{name}</code>" in arguments, f"{page}: {name} is not documented"
    pool = html[html.index('id="pool-arguments"') :]
    for name in _pool_parameters(page.split("/")[1]):
        shown = f"<code>{name}</code>" in pool or f"<code>**{name}</code>" in pool
        assert shown, f"{page}: the pool's {name} is not documented"


def test_the_learning_pages_render(site: Path) -> None:
    diagram = _page(site, "state-machine")
    assert '<pre class="mermaid"><code>stateDiagram-v2' in diagram
    assert "GREETING_ACCEPTED" in _page(site, "reply-codes")
    tour = _page(site, "learn/tour")
    assert "smtpbee tour: one real SMTP session, line by line" in tour
    assert "readme: smtpbee tour output" not in tour
    # The page shows the example program itself, whole: the tested code.
    embedding = html.unescape(re.sub(r"<[^>]+>", "", _page(site, "guides/embedding")))
    assert (EXAMPLES / "selectors_client.py").read_text(encoding="utf-8").strip() in embedding


def test_the_tour_hook_finds_the_readme_block() -> None:
    if importlib.util.find_spec("mkdocs") is None and os.environ.get("CI") != "true":
        pytest.skip("MkDocs is not installed: python -m pip install -e '.[docs]'")
    spec = importlib.util.spec_from_file_location("readme_tour", DOCS / "_hooks" / "readme_tour.py")
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    block: str = hook.tour_block(README.read_text(encoding="utf-8"))
    assert block.startswith("```console\n$ smtpbee tour\n")
    assert block.endswith("```")
    assert "--- 5. Goodbye ---" in block
