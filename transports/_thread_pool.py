# smtpbee/transports/_thread_pool
#
# The blocking transport's pool: SyncPool (generated from _async/pool.py)
# with threads. Its jobs run in a ThreadPoolExecutor of at most ``size``
# workers, made for each batch; the slots are a BoundedSemaphore; the clock is
# time.monotonic.
#
# Invariant: send_batch() returns (or raises) only once every job of the batch
# has ended: on an error, the jobs not started are cancelled and the running
# ones (a thread cannot be interrupted) finish their message first.
from __future__ import annotations

import threading
import time
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

    def _run_all(self, jobs: list[SyncJob]) -> None:
        if not jobs:
            return
        workers = min(self.size, len(jobs))
        executor = ThreadPoolExecutor(workers, thread_name_prefix="smtpbee-pool")
        futures: list[Future[None]] = []
        try:
            futures = [executor.submit(job) for job in jobs]
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            # Cancels what has not started (after an error, or an interrupt
            # here) and waits for what has.
            executor.shutdown(wait=True, cancel_futures=True)
        errors = [
            error
            for future in futures
            if not future.cancelled() and (error := future.exception()) is not None
        ]
        if errors:
            raise BaseExceptionGroup("errors in the jobs of send_batch", errors)
