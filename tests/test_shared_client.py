"""One client shared by several tasks (or threads): their transactions take turns."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from flavours import Flavour
from servers import AiosmtpdServer
from smtpbee import SendResult

BODY = b"Subject: shared\r\n\r\nbody %d\r\n"


@pytest.mark.anyio
@pytest.mark.parametrize("flavour", ["asyncio", "trio"], indirect=True)
async def test_tasks_sharing_a_client_take_turns(
    flavour: Flavour, aiosmtpd_server: AiosmtpdServer
) -> None:
    results: list[SendResult] = []

    async def one(client: Any, number: int) -> None:
        results.append(await client.sendmail("a@x.test", [f"r{number}@x.test"], BODY % number))

    async with flavour.client(aiosmtpd_server) as client:
        async with anyio.create_task_group() as group:
            for number in range(5):
                group.start_soon(one, client, number)
        assert client.usable
    assert len(results) == 5
    assert sorted(m.content for m in aiosmtpd_server.messages) == sorted(BODY % n for n in range(5))


def test_threads_sharing_a_blocking_client_take_turns(aiosmtpd_server: AiosmtpdServer) -> None:
    from smtpbee.transports.sync import SMTPClient

    errors: list[BaseException] = []
    with SMTPClient(aiosmtpd_server.host, aiosmtpd_server.port, tls="none", timeout=10) as client:

        def one(number: int) -> None:
            try:
                client.sendmail("a@x.test", [f"r{number}@x.test"], BODY % number)
            except BaseException as exc:  # collected: a thread's failure must fail the test
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert len(aiosmtpd_server.messages) == 5
