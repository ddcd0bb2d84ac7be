# tests/conftest: fixtures for the SMTP test servers: the real ones of tests/servers.py
# (aiosmtpd, Postfix) and the scripted ones of smtpbee.testing.
#
# Function-scoped servers (each test gets fresh records and flags); one session-scoped
# test CA, because generating keys is the slow part. Every server is stopped in teardown,
# and what a scripted server's handler raised (if the test did not collect it) is raised
# there.
"""Pytest fixtures: aiosmtpd servers, scripted servers, the test CA and Postfix."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest
from hypothesis import HealthCheck, settings

# CI machines are slower and busier than a laptop: no per-example deadline there,
# and the failing example is printed so it can be replayed.
settings.register_profile(
    "ci",
    max_examples=1000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# Locally a quick pass; .ci/run sets HYPOTHESIS_PROFILE=ci for the thorough one.
settings.register_profile("default", max_examples=30)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# tests/ is not a package; make `from servers import ...` work under any import mode.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from flavours import FLAVOURS, Flavour  # noqa: E402
from servers import (  # noqa: E402
    DEFAULT_TIMEOUT,
    AiosmtpdServer,
    LoopbackCA,
    PostfixServer,
    TLSAiosmtpdServer,
    start_aiosmtpd,
)
from smtpbee.testing import Handler, ScriptedServer, ThreadedServer  # noqa: E402

__all__ = [
    "aiosmtpd_factory",
    "aiosmtpd_implicit_tls_server",
    "aiosmtpd_server",
    "aiosmtpd_starttls_server",
    "anyio_backend",
    "flavour",
    "postfix",
    "scripted_server",
    "trust_ca",
]

AUTH_USERS = {"alice": "wonderland", "bob": "b\u00f6b-secret"}
"""The logins every aiosmtpd fixture accepts (AUTH PLAIN and LOGIN)."""

POSTFIX_ENV = Path(os.environ.get("SMTPBEE_POSTFIX_ENV", "/tmp/smtpbee-postfix/env"))

AiosmtpdFactory = Callable[..., AiosmtpdServer]
ScriptedFactory = Callable[..., ThreadedServer]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Any test that uses Postfix carries the marker, so `-m "not postfix"` works.
    for item in items:
        if "postfix" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postfix)


@pytest.fixture(scope="session")
def trust_ca(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCA:
    """The test CA: ``.server_context()``, ``.client_context()``, ``.cafile``, ``.ca``."""
    return LoopbackCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def aiosmtpd_factory(trust_ca: LoopbackCA) -> Iterator[AiosmtpdFactory]:
    """Start aiosmtpd servers with chosen options; all are stopped after the test.

    Call it as ``aiosmtpd_factory(tls_mode="starttls", require_starttls=True)``; the
    keywords are those of `servers.AiosmtpdServer` (``auth_users`` defaults to
    `AUTH_USERS`). A TLS server is a `servers.TLSAiosmtpdServer`.
    """
    started: list[AiosmtpdServer] = []

    def factory(**options: Any) -> AiosmtpdServer:
        options.setdefault("auth_users", AUTH_USERS)
        server = start_aiosmtpd(trust_ca, **options)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def aiosmtpd_server(aiosmtpd_factory: AiosmtpdFactory) -> AiosmtpdServer:
    """A plain aiosmtpd server; AUTH is offered without TLS."""
    return aiosmtpd_factory()


@pytest.fixture
def aiosmtpd_starttls_server(aiosmtpd_factory: AiosmtpdFactory) -> TLSAiosmtpdServer:
    """An aiosmtpd server offering STARTTLS (not required); AUTH only after it."""
    server = aiosmtpd_factory(tls_mode="starttls")
    assert isinstance(server, TLSAiosmtpdServer)
    return server


@pytest.fixture
def aiosmtpd_implicit_tls_server(aiosmtpd_factory: AiosmtpdFactory) -> TLSAiosmtpdServer:
    """An aiosmtpd server that speaks TLS from the first byte."""
    server = aiosmtpd_factory(tls_mode="implicit")
    assert isinstance(server, TLSAiosmtpdServer)
    return server


@pytest.fixture
def scripted_server() -> Iterator[ScriptedFactory]:
    """Start smtpbee.testing servers in threads: ``scripted_server(handlers, **options)``.

    The arguments are those of `smtpbee.testing.ScriptedServer` (its ``timeout``
    defaults to `servers.DEFAULT_TIMEOUT`); the result is the started
    `smtpbee.testing.ThreadedServer`. Teardown stops each one (open connections get a
    moment to end) and raises what a handler raised, if the test did not collect it.
    """
    started: list[ThreadedServer] = []

    def factory(handlers: Mapping[str, Handler] | None = None, **options: Any) -> ThreadedServer:
        options.setdefault("timeout", DEFAULT_TIMEOUT)
        running = ScriptedServer(handlers, **options).serve_in_thread()
        started.append(running)
        return running.start()

    yield factory
    failures: list[BaseException] = []
    for running in started:
        try:
            running.stop()
        except BaseException as error:  # every server must be stopped, whatever fails
            failures.append(error)
    if failures:
        raise failures[0]


@pytest.fixture(scope="session")
def postfix() -> PostfixServer:
    """The Postfix instance of .ci/postfix-start (skips locally, fails in CI, if absent)."""
    in_ci = os.environ.get("CI") == "true"

    def unavailable(reason: str) -> NoReturn:
        reason += "; start it with `sudo bash .ci/postfix-start`"
        if in_ci:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)

    if not POSTFIX_ENV.is_file():
        return unavailable(f"Postfix is not running ({POSTFIX_ENV} is missing)")
    server = PostfixServer.from_env_file(POSTFIX_ENV)
    try:
        greeting = server.greeting()
    except OSError as error:
        return unavailable(f"Postfix at {server.host}:{server.port} does not answer: {error}")
    if not greeting.startswith(b"220"):
        return unavailable(f"Postfix at {server.host}:{server.port} greeted {greeting!r}")
    return server


@pytest.fixture(params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    """Each transport in turn: sync, asyncio (under asyncio) and trio (under trio)."""
    return Flavour(request.param)


@pytest.fixture
def anyio_backend(flavour: Flavour) -> str:
    """The event loop the flavour's client needs (the blocking one runs under asyncio)."""
    return "trio" if flavour.name == "trio" else "asyncio"
