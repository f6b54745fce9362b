"""The study catalog: one summary per study, from the ``studies`` view, kept current in memory.

Study searches need a row per study (attributes, counts, modalities, SOP classes). The
``studies`` view grouped per study gives exactly that, but a grouped reduce over the whole view
costs what the archive costs on pouchdb-server, which reduces in JavaScript over every row of
the range (pouchdb-abstract-mapreduce ``queryViewInQueue``), and every query would pay for it.
So the per-study rows are read once, kept here, and brought up to date before each study
search from CouchDB's changes feed: a query then costs one ``_changes`` request plus, for each
study that changed since the last query, one grouped read of that study's rows. The view stays
the single source of truth (a rebuild is a full re-read), and every server process in front of
the same database keeps its own catalog, so a STOW on one is seen by the next search on any.

Which study changed comes from the ``membership`` view (document id -> study) for live
documents, and from the tombstone for deleted ones (this server deletes with the study UID kept
in the tombstone); a deletion the catalog cannot place triggers a rebuild.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from dicomweb_couch.dicom.legacy import normalize_stored
from dicomweb_couch.search.matching import normalize_index_text
from dicomweb_couch.store.couch import Couch, IndexNotReady

log = logging.getLogger(__name__)

DDOC = "qido"
HIGH: dict[str, Any] = {}  # collates after every string in a view key: the open end of a range
CHANGES_BATCH = 1000
REBUILD_AFTER = 20_000  # a backlog of changes larger than this is cheaper to rebuild than to replay
MAX_PARALLEL = 8
VIEWS = ("studies", "series", "instances", "membership")


@dataclass
class StudySummary:
    """One study as the ``studies`` view groups it."""

    uid: str
    variants: Counter[str] = field(default_factory=Counter)  # study attributes (JSON) -> instances
    series: set[str] = field(default_factory=set)
    modalities: set[str] = field(default_factory=set)
    sop_classes: set[str] = field(default_factory=set)

    @property
    def instances(self) -> int:
        return sum(self.variants.values())

    @cached_property
    def dataset(self) -> dict[str, Any]:
        """Study-level attributes as most of the study's instances carry them, and the computed
        ones (PS3.18 10.6.3.3) but RetrieveURL, which depends on the request. Computed once:
        a changed study gets a new summary."""
        attrs = normalize_stored(json.loads(self.variants.most_common(1)[0][0]))
        attrs.update({
            "00080056": {"vr": "CS", "Value": ["ONLINE"]},
            "00080061": {"vr": "CS", "Value": sorted(self.modalities)},
            "00080062": {"vr": "UI", "Value": sorted(self.sop_classes)},
            "00201206": {"vr": "IS", "Value": [len(self.series)]},
            "00201208": {"vr": "IS", "Value": [self.instances]},
        })
        return dict(sorted(attrs.items()))


EXACT_TAGS = ("00080050", "00080061", "00080062", "00100020", "00200010")
SORTED_TAGS = ("00080020", "00080090", "00100010")  # dates; person names, upper-cased, whole and by component


class StudyIndex:
    """Look-ups over the catalog whose cost follows the answer: exact values, and ranges or
    prefixes over sorted values. Person names are indexed upper-cased (PN matching ignores case),
    whole and by name component, in every representation; the caller still checks each match."""

    def __init__(self, studies: Iterable[StudySummary]):
        exact: dict[str, defaultdict[str, set[str]]] = {t: defaultdict(set) for t in EXACT_TAGS}
        ordered: dict[str, list[tuple[str, str]]] = {t: [] for t in SORTED_TAGS}
        for study in studies:
            for tag in EXACT_TAGS:
                for value in _strings(study.dataset.get(tag)):
                    exact[tag][value].add(study.uid)
            for value in _strings(study.dataset.get("00080020")):
                ordered["00080020"].append((value, study.uid))
            for tag in ("00080090", "00100010"):
                for name in _names(study.dataset.get(tag)):
                    ordered[tag] += [(key, study.uid) for key in {name, *name.split("^")} if key]
        self._exact = exact
        self._ordered = {tag: sorted(rows) for tag, rows in ordered.items()}

    def exact(self, tag: str, value: str) -> set[str]:
        return set(self._exact[tag].get(value, ()))

    def between(self, tag: str, low: str, high: str | None) -> set[str]:
        """Studies with a value in [low, high]; high None is open."""
        rows = self._ordered[tag]
        start = bisect.bisect_left(rows, (low, ""))
        end = len(rows) if high is None else bisect.bisect_right(rows, (high, "\uffff"))
        return {uid for _, uid in rows[start:end]}


def _strings(element: dict[str, Any] | None) -> list[str]:
    return [v for v in (element or {}).get("Value", []) if isinstance(v, str) and v]


def _names(element: dict[str, Any] | None) -> list[str]:
    names = []
    for value in (element or {}).get("Value", []):
        if isinstance(value, dict):
            names += [normalize_index_text(v) for v in value.values() if isinstance(v, str)]
    return names


def summaries(rows: Iterable[dict[str, Any]]) -> dict[str, StudySummary]:
    """Fold ``studies`` rows at group_level 5 into one summary per study."""
    studies: dict[str, StudySummary] = {}
    for row in rows:
        uid, attrs, series, modality, sop_class = row["key"]
        summary = studies.setdefault(uid, StudySummary(uid))
        summary.variants[attrs] += row["value"]
        summary.series.add(series)
        if modality:
            summary.modalities.add(modality)
        if sop_class:
            summary.sop_classes.add(sop_class)
    return studies


async def study_rows(couch: Couch, uid: str | None = None) -> dict[str, StudySummary]:
    """The summary of one study, or of every study (no key range: nothing depends on how the
    server collates strings), read from the view."""
    key_range = {"startkey": [uid], "endkey": [uid, HIGH]} if uid is not None else {}
    rows = await couch.view(DDOC, "studies", group_level=5, **key_range)
    return summaries(rows)


class CatalogNotReady(Exception):
    """The catalog is being read for the first time and took longer than a client should wait."""


class StudyCatalog:
    def __init__(self, couch: Couch):
        self._couch = couch
        self._studies: dict[str, StudySummary] = {}
        self._ordered: list[StudySummary] | None = None
        self._index: StudyIndex | None = None
        self._seq: Any = None
        self._lock = asyncio.Lock()
        self._queued: asyncio.Future[int] | None = None

    async def current(self, patience: float = 10.0) -> tuple[list[StudySummary], bool]:
        """Every study in UID order, including every change made before this call, and False;
        or, when bringing it up to date takes longer than ``patience`` seconds (a large import
        being indexed), the last state and True, while the update goes on in the background."""
        update = asyncio.ensure_future(self.refresh())
        update.add_done_callback(lambda t: t.cancelled() or t.exception())  # reported by the shared refresh
        try:
            await asyncio.wait_for(asyncio.shield(update), patience)
            stale = False
        except asyncio.TimeoutError:
            if self._seq is None:
                raise CatalogNotReady() from None
            stale = True
        if self._ordered is None:
            self._ordered = [self._studies[uid] for uid in sorted(self._studies)]
            self._index = StudyIndex(self._ordered)
        return self._ordered, stale

    @property
    def index(self) -> StudyIndex:
        """Look-ups as of the last ``current()``."""
        assert self._index is not None, "current() first"
        return self._index

    async def keep_warm(self, interval: float) -> None:
        """Apply changes every ``interval`` seconds, and have CouchDB index them in every view, so
        that after a bulk import the indexes are built in the background, not by a user's query."""
        while True:
            try:
                if await self.refresh():
                    for view in VIEWS:
                        await self._couch.view(DDOC, view, limit=0, reduce=False)
            except asyncio.CancelledError:
                raise
            except IndexNotReady as exc:  # CouchDB goes on indexing: nothing is wrong
                log.info("indexes still being built: %s", exc)
            except Exception as exc:  # the database may be down for a while: try again later
                log.warning("background index update failed: %s", exc)
            await asyncio.sleep(interval)

    def get(self, uid: str) -> StudySummary | None:
        """A study as of the last ``current()``."""
        return self._studies.get(uid)

    async def refresh(self) -> int:
        """Apply the changes made before this call; return how many there were.

        Callers that arrive while no refresh has started reading share the next one, so a burst
        of searches costs one ``_changes`` request, not one each.
        """
        if self._queued is None:
            self._queued = asyncio.ensure_future(self._refresh())
            self._queued.add_done_callback(_log_failure)
        return await asyncio.shield(self._queued)

    async def close(self) -> None:
        """Stop a refresh nobody waits for any more (at shutdown, before the connection closes)."""
        if self._queued is not None:
            self._queued.cancel()
            await asyncio.gather(self._queued, return_exceptions=True)

    async def _refresh(self) -> int:
        async with self._lock:
            self._queued = None  # from here on, newcomers need a later refresh
            if self._seq is None:
                await self._rebuild()
                return 0
            total = 0
            while True:
                results, last_seq = await self._couch.changes(self._seq, CHANGES_BATCH)
                total += len(results)
                if total > REBUILD_AFTER:
                    await self._rebuild()
                    return total
                if results and not await self._apply(results):
                    await self._rebuild()
                    return total
                self._seq = last_seq
                if len(results) < CHANGES_BATCH:
                    return total

    async def _rebuild(self) -> None:
        seq = await self._couch.update_seq()  # before the read: later changes get replayed
        log.info("reading the study catalog from the studies view (database at sequence %s; "
                 "CouchDB first indexes what is new, which takes a while after a large import)", seq)
        started = asyncio.get_running_loop().time()
        self._studies = await study_rows(self._couch)
        self._ordered, self._seq = None, seq
        log.info("study catalog: %d studies, read in %.1f s", len(self._studies),
                 asyncio.get_running_loop().time() - started)

    async def _apply(self, results: list[dict[str, Any]]) -> bool:
        """Re-read the studies these changes touched; False if a deletion cannot be placed."""
        ids = [r["id"] for r in results if not r["id"].startswith(("_design/", "_local/"))]
        deleted = {r["id"] for r in results if r.get("deleted")}
        live = [i for i in ids if i not in deleted]
        touched: set[str] = set()
        if live:
            touched |= {row["value"] for row in await self._couch.view_keys(DDOC, "membership", live)}
        if deleted:
            for doc in await self._couch.latest_revisions(sorted(deleted)):
                study = ((doc.get("dataset") or {}).get("0020000D") or {}).get("Value") or [None]
                if isinstance(study[0], str):
                    touched.add(study[0])
                elif doc.get("_deleted"):
                    return False
        gate = asyncio.Semaphore(MAX_PARALLEL)

        async def reread(uid: str) -> None:
            async with gate:
                found = await study_rows(self._couch, uid)
            if uid in found:
                self._studies[uid] = found[uid]
            else:
                self._studies.pop(uid, None)

        await asyncio.gather(*(reread(uid) for uid in touched))
        if touched:
            self._ordered = None
        return True


def _log_failure(task: asyncio.Future[Any]) -> None:
    """A refresh nobody waited for any more still reports its failure (and so is not reported
    by asyncio as an exception never retrieved)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("study catalog update failed: %s", task.exception())
