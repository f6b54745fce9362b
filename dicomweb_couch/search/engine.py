"""The search engine behind QIDO-RS (PS3.18 10.6) and C-FIND (PS3.4 C.4.1): one per process.

It knows nothing of HTTP or DIMSE: a caller gives the level, the query parameters in QIDO form
(``{"PatientName": "Doe*", "includefield": "00081030", "limit": "10"}``, keywords or tags) and
an optional scope, and gets DICOM JSON data sets back. Web links (RetrieveURL) are made by a
callable the caller passes, so the engine never builds a URL itself.

Every filter is sorted by the level its attribute belongs to (``dicom/levels.py``):

- **study filters** are checked on the study catalog (``search/catalog.py``: one summary per
  study, kept current from the ``studies`` view); those its index can answer (StudyInstanceUID,
  PatientID, PatientName/ReferringPhysicianName without a leading wildcard, AccessionNumber,
  StudyID, StudyDate, Modality/ModalitiesInStudy) first narrow the candidates, so the cost
  follows the answer. Substring filters (``*TERM*``) scan the catalog, one row per study.
- **series filters** are checked on the ``series`` view rows of the studies in scope;
- **instance filters** on the ``instances`` view rows of the series in scope (with the documents
  when a filter or includefield asks for an attribute the view does not carry).

A search at a level keeps the rows that match its own filters and have a match below for the
lower-level filters (e.g. studies with a series whose SeriesDescription matches). Results are
in UID order, so pages are stable: no duplicates and no gaps.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dicomweb_couch.dicom.dicomjson import element
from dicomweb_couch.dicom.legacy import normalize_stored
from dicomweb_couch.dicom.levels import INSTANCE, level_of
from dicomweb_couch.search.catalog import (
    DDOC,
    EXACT_TAGS,
    HIGH,
    StudyCatalog,
    StudyIndex,
    StudySummary,
)
from dicomweb_couch.search.matching import Matcher, normalize_index_text, wildcard_prefix
from dicomweb_couch.search.query import COMPUTED, INSTANCE_FIELDS, SERIES_FIELDS, STUDY_FIELDS, Query, parse_query
from dicomweb_couch.store.couch import Couch

MAX_PARALLEL = 8
SCAN_SLICE = 1000  # studies checked between two turns of the event loop
LEVELS = ("study", "series", "instance")

UrlFor = Callable[..., str]
"""``url_for(study, series=None, instance=None)``: the RetrieveURL (0008,1190) of a result."""


@dataclass(frozen=True)
class SearchResult:
    """One page of results. ``more``: the page was cut by ``limit``; ``stale``: the catalog could
    not be brought up to date within the patience, so recent changes may be missing."""

    records: list[dict[str, Any]]
    more: bool
    stale: bool
    query: Query


class SearchEngine:
    """Searches over one database: its study catalog for study-level work, its views below.

    :meth:`search` raises :class:`~dicomweb_couch.search.matching.QueryError` for a bad query,
    :class:`~dicomweb_couch.search.catalog.CatalogNotReady` before the catalog's first state and
    :class:`~dicomweb_couch.store.couch.CouchUnavailable` when the store does not answer.
    """

    def __init__(self, couch: Couch, catalog: StudyCatalog, *, default_limit: int = 1000, max_limit: int = 1000,
                 patience: float = 10.0):
        self.couch = couch
        self.catalog = catalog
        self.default_limit = default_limit
        self.max_limit = max_limit
        self.patience = patience

    async def search(self, level: str, params: Mapping[str, str], *, study: str | None = None,
                     series: str | None = None, url_for: UrlFor | None = None) -> SearchResult:
        """Search ``level`` (study, series or instance) with QIDO-form ``params`` (a multi-mapping
        is fine: repeated keys come one by one), within ``study``/``series`` when given."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
        query = parse_query(params, level, self.default_limit, self.max_limit)
        run = _Search(self, query, url_for)
        if level == "study":
            return await run.studies()
        if level == "series":
            return await run.series(study)
        return await run.instances(study, series)


class _Search:
    """One search: the query, where links point, and the steps shared by the three levels."""

    def __init__(self, engine: SearchEngine, query: Query, url_for: UrlFor | None):
        self.engine, self.couch, self.catalog = engine, engine.couch, engine.catalog
        self.query = query
        self.url_for = url_for

    def _link(self, record: dict[str, Any], *uids: str) -> None:
        if self.url_for is not None:
            record["00081190"] = element("UR", self.url_for(*uids))

    # -- records as returned -----------------------------------------------------------------

    def study_record(self, study: StudySummary) -> dict[str, Any]:
        record = dict(study.dataset)
        self._link(record, study.uid)
        return record

    def _with_study(self, record: dict[str, Any], study: StudySummary | None) -> None:
        """Top-level series/instance results also carry the study attributes they were matched on."""
        if study is not None:
            attrs = self.study_record(study)
            record.update({tag: attrs[tag] for tag in self.query.returned((), attrs) if tag not in record
                           and tag not in COMPUTED})

    async def series_records(self, study: str) -> list[dict[str, Any]]:
        """The series of a study, one record each, from the ``series`` view grouped per series."""
        rows = await self.couch.view(DDOC, "series", group_level=3, startkey=[study], endkey=[study, HIGH])
        grouped: dict[str, Counter[str]] = {}
        for row in rows:
            grouped.setdefault(row["key"][1], Counter())[row["key"][2]] += row["value"]
        records = []
        for series, variants in grouped.items():
            attrs = normalize_stored(json.loads(variants.most_common(1)[0][0]))
            attrs.update({"0020000D": element("UI", study), "0020000E": element("UI", series),
                          "00201209": element("IS", sum(variants.values()))})
            self._link(attrs, study, series)
            records.append(dict(sorted(attrs.items())))
        return records

    async def instance_records(self, study: str, series: str | None, with_docs: bool) -> list[dict[str, Any]]:
        """The instances of a study or series from the ``instances`` view (whole data sets if asked)."""
        prefix = [study, series] if series else [study]
        rows = await self.couch.view(DDOC, "instances", startkey=prefix, endkey=prefix + [HIGH],
                                     include_docs=with_docs)
        records = []
        for row in rows:
            doc = row.get("doc") or {}
            attrs = normalize_stored((doc.get("dataset") or row["value"]) if with_docs else row["value"])
            attrs.update({"0020000D": element("UI", study), "0020000E": element("UI", row["key"][1]),
                          "00080056": element("CS", "ONLINE")})
            self._link(attrs, study, row["key"][1], row["key"][2])
            if "00083002" in row["value"]:
                attrs["00083002"] = row["value"]["00083002"]
            records.append(dict(sorted(attrs.items())))
        return records

    def _needs_docs(self) -> bool:
        """Whether instance rows must come with their documents: a filter or included attribute
        that the ``instances`` view does not carry."""
        query = self.query
        wanted = {m.path.split(".")[0] for m in query.at("instance")}
        if query.include_all:
            return True
        wanted |= {t for t in query.include if level_of(t) == "instance"}
        return bool(wanted - set(INSTANCE) - COMPUTED - {"00083002"})

    # -- the studies in scope ---------------------------------------------------------------

    async def _every_study(self) -> tuple[list[StudySummary], bool]:
        """All studies, up to date; a stale state is noted so the answer can say so."""
        return await self.catalog.current(self.engine.patience)

    async def _studies(self) -> tuple[list[StudySummary], bool]:
        """Studies that pass the study-level filters, in UID order, and whether the catalog is stale."""
        every, stale = await self._every_study()
        query = self.query
        plans = [plan for m in query.at("study")
                 if (plan := _index_plan(self.catalog.index, m, query.fuzzy)) is not None]
        pool = every if not plans else [s for uid in sorted(set.intersection(*plans))
                                        if (s := self.catalog.get(uid))]
        return [s async for s in _taking_turns(pool) if query.match("study", s.dataset)], stale

    async def _scoped_studies(self, scope: str | None) -> tuple[list[StudySummary], bool]:
        """The study of the URL, or every study passing the study-level filters."""
        if scope is None:
            return await self._studies()
        _, stale = await self._every_study()
        study = self.catalog.get(scope)
        return ([study] if study is not None else []), stale

    async def _has_match_below(self, study: str, series: str | None = None) -> bool:
        """Whether the study (or series) has a series and instance matching the lower-level filters."""
        query = self.query
        if query.at("series") and series is None:
            matching = [r for r in await self.series_records(study) if query.match("series", r)]
            if not matching:
                return False
            if not query.at("instance"):
                return True
            for record in matching:
                if await self._has_match_below(study, record["0020000E"]["Value"][0]):
                    return True
            return False
        if query.at("instance"):
            records = await self.instance_records(study, series, self._needs_docs())
            return any(query.match("instance", r) for r in records)
        return True

    # -- the three levels -------------------------------------------------------------------

    async def studies(self) -> SearchResult:
        query = self.query
        studies, stale = await self._studies()
        if query.at("series") or query.at("instance"):
            studies = [s async for s in _filter_concurrently(studies, lambda s: self._has_match_below(s.uid))]
        page = studies[query.offset:query.offset + query.limit]
        records = [query.returned(STUDY_FIELDS, self.study_record(s)) for s in page]
        return SearchResult(records, len(studies) > query.offset + query.limit, stale, query)

    async def series(self, scope: str | None) -> SearchResult:
        query = self.query
        studies, stale = await self._scoped_studies(scope)
        found: list[dict[str, Any]] = []
        wanted = query.offset + query.limit + 1
        skipped = 0
        for study in studies:
            if (not found and not query.at("series") and not query.at("instance")
                    and skipped + len(study.series) <= query.offset):
                skipped += len(study.series)  # a whole study before the page: counted, not read
                continue
            for record in await self.series_records(study.uid):
                if query.match("series", record) and (
                        not query.at("instance")
                        or await self._has_match_below(study.uid, record["0020000E"]["Value"][0])):
                    self._with_study(record, study if not scope else None)
                    found.append(record)
            if skipped + len(found) >= wanted:
                break
        return self._page(found, skipped, SERIES_FIELDS, stale)

    async def instances(self, scope: str | None, series: str | None) -> SearchResult:
        query = self.query
        studies, stale = await self._scoped_studies(scope)
        with_docs = self._needs_docs()
        found: list[dict[str, Any]] = []
        wanted = query.offset + query.limit + 1
        skipped = 0
        for study in studies:
            unfiltered = not query.at("series") and not query.at("instance")
            if not found and series is None and unfiltered and skipped + study.instances <= query.offset:
                skipped += study.instances
                continue
            series_ok: set[str] | None = None
            if query.at("series"):
                series_ok = {r["0020000E"]["Value"][0] for r in await self.series_records(study.uid)
                             if query.match("series", r)}
            for record in await self.instance_records(study.uid, series, with_docs):
                if ((series_ok is None or record["0020000E"]["Value"][0] in series_ok)
                        and query.match("instance", record)):
                    self._with_study(record, study if not scope else None)
                    found.append(record)
            if skipped + len(found) >= wanted:
                break
        return self._page(found, skipped, INSTANCE_FIELDS, stale)

    def _page(self, found: list[dict[str, Any]], skipped: int, defaults: Iterable[str], stale: bool) -> SearchResult:
        query = self.query
        start = query.offset - skipped
        page = found[start:start + query.limit]
        more = len(found) > start + query.limit
        return SearchResult([query.returned(defaults, r) for r in page], more, stale, query)


def _index_plan(index: StudyIndex, m: Matcher, fuzzy: bool) -> set[str] | None:
    """The studies the catalog's index says can match this filter, or None if it cannot say."""
    if m.path == "0020000D" and m.kind in ("single", "list"):
        return set(m.values)
    if m.path == "00080020" and m.vr == "DA" and m.kind in ("single", "range"):
        return index.between(m.path, m.low or "", m.high)
    tag = m.path
    if tag in EXACT_TAGS and m.kind in ("single", "list"):
        return set().union(*(index.exact(tag, v) for v in m.values))
    if tag in ("00100010", "00080090") and not fuzzy and m.kind in ("single", "wildcard"):
        prefix = wildcard_prefix(m)
        if prefix:  # a prefix range even without wildcard: stored names may have trailing '^'
            prefix = normalize_index_text(prefix)
            return index.between(tag, prefix, prefix + "\uffff")
    return None


async def _taking_turns(items: list[StudySummary]) -> AsyncIterator[StudySummary]:
    """The items, letting other requests run every ``SCAN_SLICE`` of them: a scan of a large
    catalog (a substring filter on 100,000 studies) must not hold the event loop."""
    for start in range(0, len(items), SCAN_SLICE):
        if start:
            await asyncio.sleep(0)
        for item in items[start:start + SCAN_SLICE]:
            yield item


async def _filter_concurrently(items: list[Any], keep: Any) -> AsyncIterator[Any]:
    """Yield the items for which ``await keep(item)`` holds, in order, checking a few at a time."""
    for start in range(0, len(items), MAX_PARALLEL):
        batch = items[start:start + MAX_PARALLEL]
        for item, ok in zip(batch, await asyncio.gather(*(keep(i) for i in batch))):
            if ok:
                yield item
