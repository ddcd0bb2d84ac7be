# smtpbee/transports/_writes
#
# How a Write's buffers reach a stream that takes one buffer at a time: a TLS
# socket (ssl.SSLSocket has no sendmsg), an asyncio transport, a trio stream.
#
# The buffers of a Write are command lines and content as the caller handed
# it over (see Connection.send_buffers). Joining them would copy the body
# once more; sending each as it is would put every command line in a TLS
# record (and a TCP segment) of its own. So runs of small pieces are joined,
# which copies little, and a large piece goes as views of the caller's bytes,
# in slices: a stream that buffers what it cannot send at once (asyncio's
# transport, trio's SSLStream) then holds a slice at a time, never the body.
from __future__ import annotations

from collections.abc import Iterator, Sequence

from smtpbee._requests import Buffer

__all__ = ["SLICE", "pieces_to_send", "unsent"]

# Pieces up to this size together are joined into one write.
_SMALL = 64 * 1024
# A large piece is written in views of this size.
SLICE = 256 * 1024


def pieces_to_send(buffers: Sequence[Buffer]) -> Iterator[Buffer]:
    """The buffers, in order, as writes: small runs joined, large pieces sliced."""
    run: list[Buffer] = []
    run_size = 0
    for buffer in buffers:
        size = len(buffer)
        if run_size + size <= _SMALL:
            run.append(buffer)
            run_size += size
            continue
        if run:
            yield run[0] if len(run) == 1 else b"".join(run)
            run, run_size = [], 0
        if size <= _SMALL:
            run, run_size = [buffer], size
            continue
        view = memoryview(buffer)
        for start in range(0, size, SLICE):
            yield view[start : start + SLICE]
    if run:
        yield run[0] if len(run) == 1 else b"".join(run)


def unsent(buffers: Sequence[Buffer], sent: int) -> list[Buffer]:
    """What is left of buffers once their first ``sent`` octets went out.

    A buffer written in part goes on as a view of its rest: nothing is copied.
    """
    done = 0
    while done < len(buffers) and sent >= len(buffers[done]):
        sent -= len(buffers[done])
        done += 1
    rest = list(buffers[done:])
    if sent:
        rest[0] = memoryview(rest[0])[sent:]
    return rest
