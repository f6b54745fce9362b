"""Several server processes on one port (``--workers N``), supervised by the one that was started.

Each worker is a whole server (its own CouchDB connection, study catalog file and metrics) listening on
the same address with ``SO_REUSEPORT``, so the kernel spreads new connections over them and a
request never depends on which worker answers (README "Several workers"). The supervisor forwards
SIGTERM/SIGINT to every worker, each of which then finishes its requests in flight within
``shutdown_timeout`` (see ``web/health.py``), and restarts a worker that died on its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.process import BaseProcess
from types import FrameType

from dicomweb_couch.settings import Settings

log = logging.getLogger(__name__)

_RESTART_PAUSE = 1.0


def supervise(settings: Settings, serve: Callable[[Settings, bool], None]) -> int:
    """Run ``serve(settings, reuse_port=True)`` in ``settings.workers`` processes until told to stop."""
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start(index: int) -> BaseProcess:
        # The DIMSE gateway's port is not shared (pynetdicom binds it alone): worker 0 serves it;
        # every worker keeps a study catalog file of its own.
        own = replace(settings, catalog_path=str(settings.catalog_file.with_suffix(f".worker{index}.sqlite3")),
                      dimse_port=settings.dimse_port if index == 0 else 0)
        process = context.Process(target=serve, args=(own, True), name=f"dicomweb_couch worker {index}")
        process.start()
        log.info("started worker %d (pid %s)", index, process.pid)
        return process

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        log.info("stopping %d workers (signal %d); requests in flight get %.0f s", len(workers), signum,
                 settings.shutdown_timeout)
        for process in workers:
            if process.is_alive() and process.pid:
                process.terminate()  # SIGTERM: the worker's graceful shutdown

    workers = [start(i) for i in range(settings.workers)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        for index, process in enumerate(workers):
            if not process.is_alive() and not stopping:
                log.error("worker %d (pid %s) exited with %s; starting another", index, process.pid, process.exitcode)
                time.sleep(_RESTART_PAUSE)
                workers[index] = start(index)
        time.sleep(0.2)
    deadline = time.monotonic() + settings.shutdown_timeout + 10
    for process in workers:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    return max((p.exitcode or 0) for p in workers)
