"""The study catalog: one summary per study, kept current from CouchDB's changes feed.

Each server process keeps its own catalog in a SQLite file (``catalog_store.py``), checkpointed
at the CouchDB sequence it has applied: a restart replays only what changed since, and a new or
unreadable file is rebuilt from the changes feed (the documents are the source of truth; the
catalog derives from them what the design views derive, with the same attribute lists). Before
each search the catalog applies the changes made until then, so a STOW or DELETE through any
process is seen by the next search through every process, at the cost of one ``_changes``
request when nothing changed.

All SQLite work runs in threads, never on the event loop: one writer (changes are applied in
order), and readers that see the last committed state meanwhile. A first start on a large
database catches up in the background, logging its progress; until it has caught up searches
are refused with :class:`CatalogNotReady` (the web layer answers 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from dicomweb_couch.search.catalog_store import (
    CatalogStore,
    Condition,
    CorruptCatalog,
    StudySummary,
)
from dicomweb_couch.store.couch import Couch, IndexNotReady

log = logging.getLogger(__name__)

DDOC = "qido"
HIGH: dict[str, Any] = {}  # collates after every string in a view key: the open end of a range
# Documents per _changes request. The body is parsed in the writer thread, but json.loads holds
# the GIL for the whole parse, i.e. blocks the event loop too: 100 documents (~1.2 MB with the
# ~12 KB documents of a CT header) keep that to ~10 ms.
CHANGES_BATCH = 100
PROGRESS_EVERY = 5.0  # seconds between progress lines while catching up
VIEWS = ("studies", "series", "instances", "membership")  # kept warm
SEARCH_VIEWS = ("series", "instances")  # what searches read (study searches read the catalog)
READERS = 2

__all__ = ["DDOC", "HIGH", "CatalogNotReady", "StudyCatalog", "StudySummary"]

T = TypeVar("T")


class CatalogNotReady(Exception):
    """The catalog is being filled for the first time (a new server on an existing database)."""


class StudyCatalog:
    def __init__(self, couch: Couch, path: Path | str):
        self._couch = couch
        self.path = Path(path)
        self._store: CatalogStore | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="catalog-writer")
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="catalog-reader")
        self._seq: Any = None
        self._ready = False
        self._lock = asyncio.Lock()
        self._opening = asyncio.Lock()
        self._queued: asyncio.Future[int] | None = None

    # -- threads -----------------------------------------------------------------------------

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def _in_reader(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    async def open(self) -> CatalogStore:
        """Open the file (in the writer thread), or start a new one if it is unreadable or mirrors
        another database; its checkpoint says where to resume."""
        async with self._opening:
            if self._store is None:
                await self._open_file()
        assert self._store is not None
        return self._store

    async def _open_file(self) -> None:
        source = f"{self._couch.url}/{self._couch.database}"
        try:
            self._store = await self._in_writer(CatalogStore, self.path, source)
        except CorruptCatalog as exc:
            log.warning("study catalog %s cannot be used (%s): rebuilding it from CouchDB", self.path, exc)
            await self._in_writer(_remove, self.path)
            self._store = await self._in_writer(CatalogStore, self.path, source)
        self._seq = await self._in_writer(self._store.checkpoint)
        self._ready = self._seq is not None
        if self._ready:
            log.info("study catalog %s: resuming from its checkpoint", self.path)

    # -- what searches use ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the catalog has caught up with CouchDB at least once (it can answer searches)."""
        return self._ready

    async def current(self, patience: float = 10.0) -> bool:
        """Bring the catalog up to date with every change made before this call and return False;
        or, when that takes longer than ``patience`` seconds (a large import), return True (the
        last state, stale) while the update goes on. Before the catalog has ever caught up, raise
        CatalogNotReady at once: the client is told to come back, not kept waiting."""
        update = asyncio.ensure_future(self.refresh())
        update.add_done_callback(lambda t: t.cancelled() or t.exception())  # reported by the shared refresh
        try:
            await asyncio.wait_for(asyncio.shield(update), patience if self._ready else min(patience, 0.5))
            return False
        except asyncio.TimeoutError:
            if not self._ready:
                raise CatalogNotReady() from None
            return True

    async def find(self, conditions: list[Condition], order: list[tuple[str, bool]],
                   check: Callable[[dict[str, Any]], bool] | None, offset: int, limit: int
                   ) -> tuple[list[StudySummary], bool]:
        """A page of studies (see ``CatalogStore.find``), read in a thread."""
        store = await self.open()
        return await self._in_reader(store.find, conditions, order, check, offset, limit)

    async def get(self, uid: str) -> StudySummary | None:
        store = await self.open()
        return await self._in_reader(store.get, uid)

    async def totals(self) -> tuple[int, int]:
        """How many studies and instances the catalog holds."""
        store = await self.open()
        return await self._in_reader(store.totals)

    # -- following CouchDB -------------------------------------------------------------------

    async def keep_warm(self, interval: float) -> None:
        """Apply changes every ``interval`` seconds (so a first start catches up without waiting for
        a search), and have CouchDB index them in every view, so that after a bulk import the
        indexes are built in the background, not by a user's query."""
        failing = False
        while True:
            try:
                if await self.refresh() or failing:
                    for view in VIEWS:
                        await self._couch.view(DDOC, view, limit=0, reduce=False)
                if failing:
                    log.info("background index update: the views are current again")
                failing = False
            except asyncio.CancelledError:
                raise
            except IndexNotReady as exc:  # CouchDB goes on indexing: nothing is wrong (said once)
                log.log(logging.DEBUG if failing else logging.INFO, "indexes still being built: %s", exc)
                failing = True
            except Exception as exc:  # noqa: BLE001 - the warmer must outlive any one failure
                # CouchDB down for a while, or (CouchDB 3) a view still building after a large
                # import, which it answers with 500 after 60 s: said once, not every interval
                log.log(logging.DEBUG if failing else logging.WARNING,
                        "background index update: %s (trying again every %.0f s)", exc, interval)
                failing = True
            await asyncio.sleep(interval)

    async def refresh(self) -> int:
        """Apply the changes made before this call; return how many there were (0 for the first
        reading of a new catalog).

        Callers that arrive while no refresh has started reading share the next one, so a burst
        of searches costs one ``_changes`` request, not one each.
        """
        if self._queued is None:
            self._queued = asyncio.ensure_future(self._refresh())
            self._queued.add_done_callback(_log_failure)
        return await asyncio.shield(self._queued)

    async def close(self) -> None:
        """Stop a refresh nobody waits for any more, and the threads (at shutdown)."""
        if self._queued is not None:
            self._queued.cancel()
            await asyncio.gather(self._queued, return_exceptions=True)
        await asyncio.to_thread(self._readers.shutdown, True)
        if self._store is not None:
            await self._in_writer(self._store.close_all)
        self._writer.shutdown(wait=False)

    async def _refresh(self) -> int:
        async with self._lock:
            self._queued = None  # from here on, newcomers need a later refresh
            store = await self.open()
            catching_up = not self._ready
            progress = _Progress(await self._couch.database_info()) if catching_up else None
            total = 0
            while True:
                body = await self._couch.changes_with_docs(self._seq if self._seq is not None else 0, CHANGES_BATCH)
                count, self._seq = await self._in_writer(store.apply_feed, body)
                total += count
                if progress is not None:
                    progress.report(total, store.path)
                if count < CHANGES_BATCH:
                    break
            if catching_up:
                self._ready = True
                studies, instances = await self._in_reader(store.totals)
                log.info("study catalog ready: %d studies, %d instances, %d changes read%s", studies, instances,
                         total, progress.took() if progress else "")
                return 0  # a first reading is not news: the views are brought up to date by later changes
            return total


class _Progress:
    """Progress lines while a new catalog catches up with a large database."""

    def __init__(self, info: dict[str, Any]):
        self.expected = int(info.get("doc_count", 0)) + int(info.get("doc_del_count", 0))
        self.started = self.last = time.monotonic()
        log.info("study catalog: reading %d documents from CouchDB's changes feed (first start on this "
                 "database); searches answer 503 until it is done", self.expected)

    def report(self, done: int, path: Path) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            share = f" ({100 * done / self.expected:.0f}%)" if self.expected else ""
            log.info("study catalog %s: %d of about %d documents%s, %.0f documents/s", path.name, done,
                     self.expected, share, done / (now - self.started))

    def took(self) -> str:
        return f" in {time.monotonic() - self.started:.1f} s"


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def _log_failure(task: asyncio.Future[Any]) -> None:
    """A refresh nobody waited for any more still reports its failure (and so is not reported
    by asyncio as an exception never retrieved)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("study catalog update failed: %s", task.exception())
