"""QIDO-RS: search for studies, series and instances (PS3.18 10.6), from the design views.

Every filter is sorted by the level its attribute belongs to (``levels.py``):

- **study filters** are checked on the study catalog (``catalog.py``: one summary per study,
  kept current from the ``studies`` view); those an index can answer (StudyInstanceUID,
  PatientID, PatientName/ReferringPhysicianName without a leading wildcard, AccessionNumber,
  StudyID, StudyDate, Modality/ModalitiesInStudy) first narrow the candidates through the
  ``index`` view, so the cost follows the answer. Substring filters (``*TERM*``) scan the
  catalog, one row per study, never the instances.
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
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from dicomweb_couch.appkeys import CATALOG, COUCH, SETTINGS
from dicomweb_couch.dicom.legacy import normalize_stored
from dicomweb_couch.dicom.levels import INSTANCE, SERIES, level_of
from dicomweb_couch.errors import DicomwebError, quoted
from dicomweb_couch.search.catalog import DDOC, EXACT_TAGS, HIGH, CatalogNotReady, StudyIndex, StudySummary
from dicomweb_couch.search.matching import (
    Matcher,
    QueryError,
    combine_datetime,
    normalize_index_text,
    parse_matcher,
    resolve_key,
    wildcard_prefix,
)
from dicomweb_couch.settings import Settings
from dicomweb_couch.store.couch import Couch
from dicomweb_couch.web.responses import dicom_json, element, study_url

MAX_PARALLEL = 8
SCAN_SLICE = 1000  # studies checked between two turns of the event loop

# Default return attributes (PS3.18 tables 10.6.3-3, -4, -5), besides the computed ones.
STUDY_FIELDS = ("00080005", "00080020", "00080030", "00080050", "00080090", "00080201",
                "00100010", "00100020", "00100030", "00100040", "0020000D", "00200010")
SERIES_FIELDS = ("00080005", "00080060", "00080201", "0008103E", "0020000D", "0020000E",
                 "00200011", "00400244", "00400245", "00400275")
INSTANCE_FIELDS = ("00080005", "00080016", "00080018", "00080201", "0020000D", "0020000E",
                   "00200013", "00280008", "00280010", "00280011", "00280100")
COMPUTED = {"00080056", "00080061", "00080062", "00081190", "00201206", "00201208", "00201209"}
DATE_TIME_PAIRS = (("00080020", "00080030"), ("00080021", "00080031"), ("00080022", "00080032"),
                   ("00080023", "00080033"), ("00400244", "00400245"))

_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
_IGNORED = {"orderby", "emptyvaluematching", "multiplevaluematching"}  # accepted, said in a Warning


@dataclass(frozen=True)
class Query:
    """A parsed QIDO-RS request (PS3.18 8.3.4), its filters sorted by level."""

    matchers: Mapping[str, tuple[Matcher, ...]]  # level -> filters
    include_all: bool
    include: frozenset[str]
    limit: int
    offset: int
    fuzzy: bool
    limit_cut: bool  # the client asked for more than the server's maximum
    ignored: tuple[str, ...]  # parameters accepted but not applied

    def at(self, level: str) -> tuple[Matcher, ...]:
        return self.matchers.get(level, ())

    def match(self, level: str, record: Mapping[str, Any]) -> bool:
        return all(m.matches(record, self.fuzzy) for m in self.at(level))

    def returned(self, defaults: Iterable[str], record: Mapping[str, Any]) -> dict[str, Any]:
        """The attributes of ``record`` to return: defaults, included fields and matching keys."""
        if self.include_all:
            return dict(record)
        keys = {m.path.split(".")[0] for ms in self.matchers.values() for m in ms}
        wanted = set(defaults) | self.include | COMPUTED | keys
        return {tag: value for tag, value in record.items() if tag in wanted}


def parse_query(params: Mapping[str, str], settings: Settings, level: str) -> Query:
    """Validate the query parameters; every mistake is a QueryError naming the parameter (a 400)."""
    matchers: dict[str, Matcher] = {}
    include: set[str] = set()
    include_all = False
    ignored = []
    for key, value in params.items():  # a MultiDict: repeated keys come one by one
        if key == "includefield":
            for name in filter(None, (v.strip() for v in value.split(","))):
                if name == "all":
                    include_all = True
                else:
                    include.add(resolve_key(name)[0].split(".")[0])
        elif key in _IGNORED:
            ignored.append(key)
        elif key not in _CONTROL:
            matcher = parse_matcher(key, value)
            if matcher.path in matchers:
                raise QueryError(f"{key}: the attribute is given more than once")
            if matcher.kind != "universal":
                matchers[matcher.path] = matcher
            else:
                include.add(matcher.path.split(".")[0])  # universal matching: just return it
    _combine_date_time(matchers)
    if level == "study":  # a study matches Modality/SOPClassUID through what its instances have
        for tag, computed in (("00080060", "00080061"), ("00080016", "00080062")):
            if tag in matchers and computed not in matchers:
                matchers[computed] = replace(matchers.pop(tag), path=computed)
    limit = _integer(params, "limit", settings.qido_default_limit)
    offset = _integer(params, "offset", 0)
    fuzzy = params.get("fuzzymatching", "false").lower()
    if fuzzy not in ("true", "false"):
        raise QueryError(f"fuzzymatching: must be true or false, not {params['fuzzymatching']!r}")
    by_level: dict[str, list[Matcher]] = {}
    for m in matchers.values():
        by_level.setdefault(_filter_level(m.path, level), []).append(m)
    return Query({k: tuple(v) for k, v in by_level.items()}, include_all, frozenset(include),
                 min(limit, settings.qido_max_limit), offset, fuzzy == "true",
                 limit > settings.qido_max_limit, tuple(ignored))


def _filter_level(path: str, searched: str) -> str:
    """The level a filter is checked at; attributes on every level count at the searched one."""
    level = level_of(path.split(".")[0])
    return searched if level == "any" else level


def _combine_date_time(matchers: dict[str, Matcher]) -> None:
    """Date and time ranges together are one date-time range (PS3.4 C.2.2.2.5.1)."""
    for date_tag, time_tag in DATE_TIME_PAIRS:
        date, time = matchers.get(date_tag), matchers.get(time_tag)
        if date and time and "range" in (date.kind, time.kind):
            del matchers[time_tag]  # the date stays: its index narrows, the combination decides
            combined = combine_datetime(date, time)
            matchers[combined.path + "+" + time_tag] = combined


def _integer(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
        raise QueryError(f"{name}: must be a whole number from 0 to 999999999, not {quoted(raw)}")
    return int(raw)


# -- records as returned -----------------------------------------------------------------------


def study_record(request: web.Request, study: StudySummary) -> dict[str, Any]:
    return dict(study.dataset, **{"00081190": element("UR", study_url(request, study.uid))})


def _with_study(record: dict[str, Any], request: web.Request, study: StudySummary | None, query: Query) -> None:
    """Top-level series/instance results also carry the study attributes they were matched on."""
    if study is not None:
        attrs = study_record(request, study)
        record.update({tag: attrs[tag] for tag in query.returned((), attrs) if tag not in record
                       and tag not in COMPUTED})


async def series_records(request: web.Request, couch: Couch, study: str) -> list[dict[str, Any]]:
    """The series of a study, one record each, from the ``series`` view grouped per series."""
    rows = await couch.view(DDOC, "series", group_level=3, startkey=[study], endkey=[study, HIGH])
    grouped: dict[str, Counter[str]] = {}
    for row in rows:
        grouped.setdefault(row["key"][1], Counter())[row["key"][2]] += row["value"]
    records = []
    for series, variants in grouped.items():
        attrs = normalize_stored(json.loads(variants.most_common(1)[0][0]))
        attrs.update({
            "0020000D": element("UI", study),
            "0020000E": element("UI", series),
            "00081190": element("UR", study_url(request, study, series)),
            "00201209": element("IS", sum(variants.values())),
        })
        records.append(dict(sorted(attrs.items())))
    return records


async def instance_records(request: web.Request, couch: Couch, study: str, series: str | None,
                           with_docs: bool) -> list[dict[str, Any]]:
    """The instances of a study or series from the ``instances`` view (whole data sets if asked)."""
    prefix = [study, series] if series else [study]
    rows = await couch.view(DDOC, "instances", startkey=prefix, endkey=prefix + [HIGH], include_docs=with_docs)
    records = []
    for row in rows:
        doc = row.get("doc") or {}
        attrs = normalize_stored((doc.get("dataset") or row["value"]) if with_docs else row["value"])
        attrs.update({
            "0020000D": element("UI", study),
            "0020000E": element("UI", row["key"][1]),
            "00080056": element("CS", "ONLINE"),
            "00081190": element("UR", study_url(request, study, row["key"][1], row["key"][2])),
        })
        if "00083002" in row["value"]:
            attrs["00083002"] = row["value"]["00083002"]
        records.append(dict(sorted(attrs.items())))
    return records


def _needs_docs(query: Query) -> bool:
    """Whether instance rows must come with their documents: a filter or included attribute
    that the ``instances`` view does not carry."""
    wanted = {m.path.split(".")[0] for m in query.at("instance")}
    if query.include_all:
        return True
    wanted |= {t for t in query.include if level_of(t) == "instance"}
    return bool(wanted - set(INSTANCE) - COMPUTED - {"00083002"})


# -- the studies in scope -------------------------------------------------------------------


async def _catalog(request: web.Request) -> tuple[list[StudySummary], bool]:
    """All studies, up to date; a stale state is noted so the answer can say so."""
    try:
        studies, stale = await request.app[CATALOG].current(request.app[SETTINGS].index_patience)
    except CatalogNotReady:
        raise DicomwebError(503, "the study index is being built (first start, or a large import); "
                                 "try again in a few seconds", {"Retry-After": "10"}) from None
    return studies, stale


async def _studies(request: web.Request, query: Query) -> tuple[list[StudySummary], bool]:
    """Studies that pass the study-level filters, in UID order, and whether the catalog is stale."""
    catalog = request.app[CATALOG]
    every, stale = await _catalog(request)
    plans = [plan for m in query.at("study") if (plan := _index_plan(catalog.index, m, query.fuzzy)) is not None]
    pool = every if not plans else [s for uid in sorted(set.intersection(*plans)) if (s := catalog.get(uid))]
    return [s async for s in _taking_turns(pool) if query.match("study", s.dataset)], stale


async def _taking_turns(items: list[StudySummary]) -> AsyncIterator[StudySummary]:
    """The items, letting other requests run every ``SCAN_SLICE`` of them: a scan of a large
    catalog (a substring filter on 100,000 studies) must not hold the event loop."""
    for start in range(0, len(items), SCAN_SLICE):
        if start:
            await asyncio.sleep(0)
        for item in items[start:start + SCAN_SLICE]:
            yield item


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


async def _has_match_below(request: web.Request, query: Query, study: str, series: str | None = None) -> bool:
    """Whether the study (or series) has a series and instance matching the lower-level filters."""
    couch = request.app[COUCH]
    if query.at("series") and series is None:
        matching = [r for r in await series_records(request, couch, study) if query.match("series", r)]
        if not matching:
            return False
        if not query.at("instance"):
            return True
        for record in matching:
            if await _has_match_below(request, query, study, record["0020000E"]["Value"][0]):
                return True
        return False
    if query.at("instance"):
        records = await instance_records(request, couch, study, series, _needs_docs(query))
        return any(query.match("instance", r) for r in records)
    return True


async def _filter_concurrently(items: list[Any], keep: Any) -> AsyncIterator[Any]:
    """Yield the items for which ``await keep(item)`` holds, in order, checking a few at a time."""
    for start in range(0, len(items), MAX_PARALLEL):
        batch = items[start:start + MAX_PARALLEL]
        for item, ok in zip(batch, await asyncio.gather(*(keep(i) for i in batch))):
            if ok:
                yield item


# -- the handlers ----------------------------------------------------------------------------


async def search_studies(request: web.Request) -> web.Response:
    query = parse_query(request.query, request.app[SETTINGS], "study")
    studies, stale = await _studies(request, query)
    if query.at("series") or query.at("instance"):
        studies = [s async for s in _filter_concurrently(
            studies, lambda s: _has_match_below(request, query, s.uid))]
    page = studies[query.offset:query.offset + query.limit]
    records = [query.returned(STUDY_FIELDS, study_record(request, s)) for s in page]
    return _answer(request, records, query, len(studies) > query.offset + query.limit, stale)


async def search_series(request: web.Request) -> web.Response:
    """``/series`` and ``/studies/{study}/series``."""
    query = parse_query(request.query, request.app[SETTINGS], "series")
    couch = request.app[COUCH]
    scope = request.match_info.get("study")
    studies, stale = await _scoped_studies(request, query, scope)
    found: list[dict[str, Any]] = []
    wanted = query.offset + query.limit + 1
    skipped = 0
    for study in studies:
        if (not found and not query.at("series") and not query.at("instance")
                and skipped + len(study.series) <= query.offset):
            skipped += len(study.series)  # a whole study before the page: counted, not read
            continue
        for record in await series_records(request, couch, study.uid):
            if query.match("series", record) and (
                    not query.at("instance")
                    or await _has_match_below(request, query, study.uid, record["0020000E"]["Value"][0])):
                _with_study(record, request, study if not scope else None, query)
                found.append(record)
        if skipped + len(found) >= wanted:
            break
    return _page_from(request, query, found, skipped, SERIES_FIELDS, stale)


async def search_instances(request: web.Request) -> web.Response:
    """``/instances``, ``/studies/{study}/instances`` and ``/studies/{study}/series/{series}/instances``."""
    query = parse_query(request.query, request.app[SETTINGS], "instance")
    couch = request.app[COUCH]
    scope, series = request.match_info.get("study"), request.match_info.get("series")
    studies, stale = await _scoped_studies(request, query, scope)
    with_docs = _needs_docs(query)
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
            series_ok = {r["0020000E"]["Value"][0] for r in await series_records(request, couch, study.uid)
                         if query.match("series", r)}
        for record in await instance_records(request, couch, study.uid, series, with_docs):
            if (series_ok is None or record["0020000E"]["Value"][0] in series_ok) and query.match("instance", record):
                _with_study(record, request, study if not scope else None, query)
                found.append(record)
        if skipped + len(found) >= wanted:
            break
    return _page_from(request, query, found, skipped, INSTANCE_FIELDS, stale)


async def _scoped_studies(request: web.Request, query: Query, scope: str | None) -> tuple[list[StudySummary], bool]:
    """The study of the URL, or every study passing the study-level filters."""
    if scope is None:
        return await _studies(request, query)
    _, stale = await _catalog(request)
    study = request.app[CATALOG].get(scope)
    return ([study] if study is not None else []), stale


def _page_from(request: web.Request, query: Query, found: list[dict[str, Any]], skipped: int,
               defaults: Iterable[str], stale: bool) -> web.Response:
    start = query.offset - skipped
    page = found[start:start + query.limit]
    more = len(found) > start + query.limit
    return _answer(request, [query.returned(defaults, r) for r in page], query, more, stale)


def _answer(request: web.Request, records: list[dict[str, Any]], query: Query, more: bool,
            stale: bool) -> web.Response:
    """The result array, with Warning headers (PS3.18 8.3.4.4) for a cut result or ignored parameters."""
    warnings = []
    if more and (query.limit_cut or "limit" not in request.query):
        warnings.append(f'299 {request.host} "The number of results exceeded the maximum supported by '
                        f'the server ({query.limit}). Additional results can be requested with offset."')
    if stale:
        warnings.append(f'299 {request.host} "The study index is being updated after a large change; '
                        f'results may be incomplete for a few moments."')
    for name in query.ignored:
        warnings.append(f'299 {request.host} "The {name} parameter is not supported and was ignored; '
                        f'results are in UID order."')
    headers = {"Warning": ", ".join(warnings)} if warnings else None
    return dicom_json(records, headers=headers)
