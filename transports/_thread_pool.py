# smtpbee/transports/_thread_pool
#
# The blocking transport's pool: SyncPool (generated from _async/pool.py)
# with threads. A batch's workers (at most ``size``) run in a
# ThreadPoolExecutor made for that batch; the slots are a BoundedSemaphore;
# the clock is time.monotonic.
#
# Invariant: send_batch() returns (or raises) only once every worker of the
# batch has ended: on an error in a worker, or an interrupt of the caller,
# the batch's queue is emptied and the running workers (a thread cannot be
# interrupted) finish the message they are sending first.
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from smtpbee.transports._pool import SyncJob
from smtpbee.transports._socket import SMTPClient
from smtpbee.transports._sync.pool import SyncPool

__all__ = ["SMTPPool"]


class SMTPPool(SyncPool):
    """Up to ``size`` SMTPClient connections to one server, for many threads; see SyncPool.

    Use it as a context manager (close on exit) or call close().
    """

    _client_class = SMTPClient

    def _new_slots(self, size: int) -> threading.BoundedSemaphore:
        return threading.BoundedSemaphore(size)

    def _now(self) -> float:
        return time.monotonic()

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def _run_all(self, workers: list[SyncJob], stop: Callable[[], None]) -> None:
        if not workers:
            return
        executor = ThreadPoolExecutor(len(workers), thread_name_prefix="smtpbee-pool")
        futures: list[Future[None]] = []
        try:
            futures = [executor.submit(worker) for worker in workers]
            wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:
            stop()  # interrupted here: the workers start no other message
            raise
        finally:
            # Cancels what has not started and waits for what has.
            executor.shutdown(wait=True, cancel_futures=True)
        errors = [
            error
            for future in futures
            if not future.cancelled() and (error := future.exception()) is not None
        ]
        if errors:
            raise BaseExceptionGroup("errors in the workers of send_batch", errors)
