"""The search engine behind QIDO-RS (PS3.18 10.6) and C-FIND (PS3.4 C.4.1): one per process.

It knows nothing of HTTP or DIMSE: a caller gives the level, the query parameters in QIDO form
(``{"PatientName": "Doe*", "includefield": "00081030", "limit": "10"}``, keywords or tags) and
an optional scope, and gets DICOM JSON data sets back. Web links (RetrieveURL) are made by a
callable the caller passes, so the engine never builds a URL itself.

Every filter is sorted by the level its attribute belongs to (``dicom/levels.py``):

- **study filters** are checked on the study catalog (``search/catalog.py``: one summary per
  study in a SQLite file per process, kept current from the changes feed); those its indexes
  can answer (StudyInstanceUID, PatientID, AccessionNumber, StudyID, Modality/ModalitiesInStudy,
  SOPClassUID/SOPClassesInStudy exactly; StudyDate ranges; PatientName/ReferringPhysicianName
  prefixes; ``*TERM*`` and fuzzy names and StudyDescription through a trigram index) first
  narrow the candidates in SQLite, so the cost follows the answer; every candidate is then
  checked by the matching rules (``matching.py``).
- **series filters** are checked on the ``series`` view rows of the studies in scope;
- **instance filters** on the ``instances`` view rows of the series in scope (with the documents
  when a filter or includefield asks for an attribute the view does not carry).

A search at a level keeps the rows that match its own filters and have a match below for the
lower-level filters (e.g. studies with a series whose SeriesDescription matches). Studies come
in ``orderby`` order (ties and no ``orderby``: the order they entered the catalog, so studies
stored meanwhile come after every page already read); series and instances in UID order within
their study, or in ``orderby`` order.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dicomweb_couch.dicom.dicomjson import element
from dicomweb_couch.dicom.legacy import normalize_stored
from dicomweb_couch.dicom.levels import INSTANCE, level_of
from dicomweb_couch.search import catalog_store
from dicomweb_couch.search.catalog import DDOC, HIGH, StudyCatalog, StudySummary
from dicomweb_couch.search.catalog_store import (
    EXACT_TAGS,
    NAME_TAGS,
    TEXT_TAGS,
    Condition,
    literal_runs,
)
from dicomweb_couch.search.matching import (
    Matcher,
    fold_text,
    normalize_index_text,
    wildcard_prefix,
)
from dicomweb_couch.search.query import (
    COMPUTED,
    INSTANCE_FIELDS,
    SERIES_FIELDS,
    STUDY_FIELDS,
    Query,
    parse_query,
)
from dicomweb_couch.store.couch import Couch

MAX_PARALLEL = 8
CHUNK = 64  # studies read from the catalog at a time when a search goes on below the study level
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
        run = _Search(self, query, url_for, level)
        if level == "study":
            return await run.studies()
        if level == "series":
            return await run.series(study)
        return await run.instances(study, series)


class _Search:
    """One search: the query, where links point, and the steps shared by the three levels."""

    def __init__(self, engine: SearchEngine, query: Query, url_for: UrlFor | None, level: str):
        self.engine, self.couch, self.catalog = engine, engine.couch, engine.catalog
        self.level = level
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

    async def _up_to_date(self) -> bool:
        """Bring the catalog up to date; True if it could not be within the patience (stale)."""
        return await self.catalog.current(self.engine.patience)

    def _check(self) -> Callable[[dict[str, Any]], bool] | None:
        query = self.query
        return (lambda dataset: query.match("study", dataset)) if query.at("study") else None

    async def _study_page(self, offset: int, limit: int) -> tuple[list[StudySummary], bool]:
        """Studies passing the study-level filters, in order, ``limit`` of them from ``offset``."""
        query = self.query
        conditions = [c for m in query.at("study") if (c := _index_plan(m, query.fuzzy)) is not None]
        order = [(catalog_store.sort_path(tag, vr), desc) for tag, vr, desc in query.order] if self.level == "study" else []
        return await self.catalog.find(conditions, order, self._check(), offset, limit)

    async def _each_study(self, scope: str | None) -> AsyncIterator[StudySummary]:
        """The study of the URL, or every study passing the study-level filters, in order; read
        from the catalog a chunk at a time (growing), so a search that stops early reads little."""
        if scope is not None:
            study = await self.catalog.get(scope)
            if study is not None:
                yield study
            return
        offset, chunk = 0, CHUNK
        while True:
            studies, more = await self._study_page(offset, chunk)
            for study in studies:
                yield study
            if not more:
                return
            offset, chunk = offset + len(studies), chunk * 2

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
        stale = await self._up_to_date()
        if not (query.at("series") or query.at("instance")):
            page, more = await self._study_page(query.offset, query.limit)
        else:
            wanted = query.offset + query.limit + 1
            found: list[StudySummary] = []
            batch: list[StudySummary] = []
            async for study in self._each_study(None):
                batch.append(study)
                if len(batch) == MAX_PARALLEL:
                    found += [s async for s in _filter_concurrently(batch, lambda s: self._has_match_below(s.uid))]
                    batch = []
                    if len(found) >= wanted:
                        break
            found += [s async for s in _filter_concurrently(batch, lambda s: self._has_match_below(s.uid))]
            page, more = found[query.offset:query.offset + query.limit], len(found) > query.offset + query.limit
        records = [query.returned(STUDY_FIELDS, self.study_record(s)) for s in page]
        return SearchResult(records, more, stale, query)

    async def series(self, scope: str | None) -> SearchResult:
        query = self.query
        stale = await self._up_to_date()
        found: list[dict[str, Any]] = []
        wanted = query.offset + query.limit + 1
        skipped = 0
        async for study in self._each_study(scope):
            if (not found and not query.order and not query.at("series") and not query.at("instance")
                    and skipped + study.series <= query.offset):
                skipped += study.series  # a whole study before the page: counted, not read
                continue
            for record in await self.series_records(study.uid):
                if query.match("series", record) and (
                        not query.at("instance")
                        or await self._has_match_below(study.uid, record["0020000E"]["Value"][0])):
                    self._with_study(record, study if not scope else None)
                    found.append(record)
            if skipped + len(found) >= wanted and not query.order:
                break
        return self._page(found, skipped, SERIES_FIELDS, stale)

    async def instances(self, scope: str | None, series: str | None) -> SearchResult:
        query = self.query
        stale = await self._up_to_date()
        with_docs = self._needs_docs()
        found: list[dict[str, Any]] = []
        wanted = query.offset + query.limit + 1
        skipped = 0
        async for study in self._each_study(scope):
            unfiltered = not query.at("series") and not query.at("instance") and not query.order
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
            if skipped + len(found) >= wanted and not query.order:
                break
        return self._page(found, skipped, INSTANCE_FIELDS, stale)

    def _page(self, found: list[dict[str, Any]], skipped: int, defaults: Iterable[str], stale: bool) -> SearchResult:
        query = self.query
        for tag, vr, descending in reversed(query.order):  # stable sorts, least significant first
            found.sort(key=lambda r: _sort_key(r, tag, vr), reverse=descending)
        start = query.offset - skipped
        page = found[start:start + query.limit]
        more = len(found) > start + query.limit
        return SearchResult([query.returned(defaults, r) for r in page], more, stale, query)


def _index_plan(m: Matcher, fuzzy: bool) -> Condition | None:
    """What the catalog's indexes can say about this filter (a superset of the studies that
    match it), or None if they cannot say."""
    tag = m.path
    if tag == "0020000D" and m.kind in ("single", "list"):
        return catalog_store.exact(tag, m.values)
    if tag == "00080020" and m.vr == "DA" and m.kind in ("single", "range"):
        return catalog_store.between(tag, m.low or "", m.high)
    if tag in EXACT_TAGS and m.kind in ("single", "list"):
        return catalog_store.exact(tag, m.values)
    if tag in NAME_TAGS and fuzzy and m.kind in ("single", "wildcard"):
        runs = [r for part in re.split(r"[\^\s=]+", fold_text(m.values[0])) for r in literal_runs(part)]
        return catalog_store.containing(f"f{tag}", runs) if runs else None
    if tag in NAME_TAGS and m.kind in ("single", "wildcard") and (prefix := wildcard_prefix(m)):
        # a prefix range even without wildcard: stored names may have trailing '^'
        prefix = normalize_index_text(prefix)
        return catalog_store.between(tag, prefix, prefix + "\uffff")
    if tag in TEXT_TAGS and m.kind in ("single", "wildcard"):
        runs = [r for part in m.values[0].split("=") for r in literal_runs(part)]
        return catalog_store.containing(f"t{tag}", runs) if runs else None
    return None


def _sort_key(record: Mapping[str, Any], tag: str, vr: str) -> tuple[int, Any]:
    """A series or instance record's place for ``orderby``: missing values first, numbers as numbers."""
    element = record.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    value = values[0] if isinstance(values, list) and values else None
    if isinstance(value, dict):
        value = value.get("Alphabetic")
    if value is None:
        return (0, "")
    return (1, value) if isinstance(value, (int, float)) else (2, str(value))


async def _filter_concurrently(items: list[Any], keep: Any) -> AsyncIterator[Any]:
    """Yield the items for which ``await keep(item)`` holds, in order, checking a few at a time."""
    for start in range(0, len(items), MAX_PARALLEL):
        batch = items[start:start + MAX_PARALLEL]
        for item, ok in zip(batch, await asyncio.gather(*(keep(i) for i in batch))):
            if ok:
                yield item
