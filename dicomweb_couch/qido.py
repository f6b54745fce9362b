"""QIDO-RS: search for studies, series and instances (PS3.18 10.6), answered from the design views.

How a study search runs (see ``design_docs/qido``):

1. Filters that an index can answer (StudyInstanceUID, PatientID, AccessionNumber, StudyDate,
   ModalitiesInStudy, PatientName without a leading wildcard) give candidate studies through the
   ``index`` view; several such filters intersect.
2. Each candidate's summary (study attributes, counts, modalities, SOP classes) comes from the
   ``studies`` view grouped per study, and every filter is checked on it (``matching``).
3. Without any filter, the page itself is cut from the ``studies`` view grouped per study
   (``skip``/``limit``), so the cost follows the page, not the archive.

Series and instance searches read the ``series``/``instances`` views within their study or
series. Results are ordered by UID (view order), so pages are stable: no duplicates, no gaps.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .appkeys import COUCH, SETTINGS
from .couch import Couch
from .legacy import normalize_stored
from .matching import Matcher, QueryError, parse_matcher, resolve_key, wildcard_prefix, normalize_index_text
from .responses import dicom_json, element, study_url
from .settings import Settings

DDOC = "qido"
HIGH: dict[str, Any] = {}  # collates after every string in a view key: the open end of a range
MAX_PARALLEL_LOOKUPS = 8

# Attributes returned by default (PS3.18 tables 10.6.3-3, -4, -5), besides the computed ones.
STUDY_FIELDS = ("00080005", "00080020", "00080030", "00080050", "00080090", "00080201",
                "00100010", "00100020", "00100030", "00100040", "0020000D", "00200010")
SERIES_FIELDS = ("00080005", "00080060", "00080201", "0008103E", "0020000D", "0020000E",
                 "00200011", "00400244", "00400245", "00400275")
INSTANCE_FIELDS = ("00080005", "00080016", "00080018", "00080201", "0020000D", "0020000E",
                   "00200013", "00280008", "00280010", "00280011", "00280100")
COMPUTED = {"00080056", "00080061", "00080062", "00081190", "00201206", "00201208", "00201209"}

_CONTROL = {"limit", "offset", "includefield", "fuzzymatching", "orderby"}


@dataclass(frozen=True)
class Query:
    """A parsed QIDO-RS request (PS3.18 8.3.4)."""

    matchers: tuple[Matcher, ...]
    include_all: bool
    include: frozenset[str]
    limit: int
    offset: int
    fuzzy: bool
    limit_cut: bool  # the client asked for more than the server's maximum

    def returned(self, defaults: Iterable[str], record: Mapping[str, Any]) -> dict[str, Any]:
        """The attributes of ``record`` to return: defaults, included fields and matching keys."""
        if self.include_all:
            return dict(record)
        wanted = set(defaults) | self.include | COMPUTED | {m.path.split(".")[0] for m in self.matchers}
        return {tag: value for tag, value in record.items() if tag in wanted}

    def filter(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if all(m.matches(r, self.fuzzy) for m in self.matchers)]


def parse_query(params: Mapping[str, str], settings: Settings) -> Query:
    """Validate the query parameters; every mistake is a QueryError naming the parameter (a 400)."""
    matchers: dict[str, Matcher] = {}
    include: set[str] = set()
    include_all = False
    for key, value in params.items():  # type: ignore[attr-defined]  # MultiDict: repeated keys
        if key == "includefield":
            for name in filter(None, (v.strip() for v in value.split(","))):
                if name == "all":
                    include_all = True
                else:
                    include.add(resolve_key(name)[0].split(".")[0])
        elif key not in _CONTROL:
            matcher = parse_matcher(key, value)
            if matcher.path in matchers:
                raise QueryError(f"{key}: the attribute is given more than once")
            matchers[matcher.path] = matcher
    limit = _integer(params, "limit", settings.qido_default_limit)
    offset = _integer(params, "offset", 0)
    fuzzy = params.get("fuzzymatching", "false").lower()
    if fuzzy not in ("true", "false"):
        raise QueryError(f"fuzzymatching={params['fuzzymatching']!r}: must be true or false")
    return Query(tuple(matchers.values()), include_all, frozenset(include), min(limit, settings.qido_max_limit),
                 offset, fuzzy == "true", limit > settings.qido_max_limit)


def _integer(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise QueryError(f"{name}={raw!r}: must be a whole number, 0 or more")
    return int(raw)


# -- studies ---------------------------------------------------------------------------------


@dataclass
class StudySummary:
    """One study as the ``studies`` view groups it: attributes and what is computed from its instances."""

    uid: str
    variants: Counter[str] = field(default_factory=Counter)  # study attributes (JSON) -> instances
    series: set[str] = field(default_factory=set)
    modalities: set[str] = field(default_factory=set)
    sop_classes: set[str] = field(default_factory=set)

    def record(self, request: web.Request) -> dict[str, Any]:
        """Study attributes (as most of its instances have them) and the computed attributes."""
        attrs = normalize_stored(json.loads(self.variants.most_common(1)[0][0]))
        attrs.update({
            "00080056": element("CS", "ONLINE"),
            "00080061": element("CS", *sorted(self.modalities)),
            "00080062": element("UI", *sorted(self.sop_classes)),
            "00081190": element("UR", study_url(request, self.uid)),
            "00201206": element("IS", len(self.series)),
            "00201208": element("IS", sum(self.variants.values())),
        })
        return dict(sorted(attrs.items()))


def _summaries(rows: list[dict[str, Any]]) -> dict[str, StudySummary]:
    """Fold ``studies`` rows at group_level 5 into one summary per study, in view order."""
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


async def _study_range(couch: Couch, first: str, last: str) -> dict[str, StudySummary]:
    rows = await couch.view(DDOC, "studies", group_level=5, startkey=[first], endkey=[last, HIGH])
    return _summaries(rows)


async def _index(couch: Couch, tag: str, low: str, high: str | None) -> set[str]:
    """Studies with a value of ``tag`` in [low, high] (high None: no upper bound) in the index view."""
    end = [tag, high, HIGH] if high is not None else [tag, HIGH]
    rows = await couch.view(DDOC, "index", group_level=3, startkey=[tag, low], endkey=end)
    return {row["key"][2] for row in rows}


async def _candidates(couch: Couch, query: Query) -> set[str] | None:
    """Studies that can match, from the index; None when no filter has an index.

    Each indexed filter gives a union of key ranges; the filters' study sets intersect.
    """
    plans = [plan for m in query.matchers if (plan := _index_plan(m, query.fuzzy)) is not None]
    if not plans:
        return None
    sets = []
    for plan in plans:
        if isinstance(plan, set):
            sets.append(plan)
        else:
            found = await asyncio.gather(*(_index(couch, *key_range) for key_range in plan))
            sets.append(set().union(*found))
    return set.intersection(*sets)


IndexPlan = set[str] | list[tuple[str, str, str | None]]


def _index_plan(m: Matcher, fuzzy: bool) -> IndexPlan | None:
    """How the index view narrows this filter: known studies, key ranges to unite, or None."""
    if m.path == "0020000D" and m.kind in ("single", "list"):
        return set(m.values)
    if m.path == "00080020" and m.kind in ("single", "range"):
        return [(m.path, m.low or "", m.high)]
    tag = "00080060" if m.path == "00080061" else m.path  # ModalitiesInStudy: the Modality index
    if tag in ("00080050", "00080060", "00100020", "00200010") and m.kind in ("single", "list"):
        return [(tag, v, v) for v in m.values]
    if tag in ("00100010", "00080090") and not fuzzy and m.kind in ("single", "wildcard"):
        prefix = wildcard_prefix(m)
        if prefix:
            prefix = normalize_index_text(prefix)
            # a prefix range even without wildcard: stored names may carry trailing '^' or '=' groups
            return [(tag, prefix, prefix + "\ufff0")]
    return None


async def search_studies(request: web.Request) -> web.Response:
    query = parse_query(request.query, request.app[SETTINGS])
    couch = request.app[COUCH]
    candidates = await _candidates(couch, query)
    if candidates is None and not query.matchers:
        page = await couch.view(DDOC, "studies", group_level=1, skip=query.offset, limit=query.limit + 1)
        more = len(page) > query.limit
        page = page[:query.limit]
        summaries = list((await _study_range(couch, page[0]["key"][0], page[-1]["key"][0])).values()) if page else []
    else:
        if candidates is None:
            found = await _study_range(couch, "", "\ufff0")
        else:
            found = await _lookup_studies(couch, sorted(candidates))
        matching = [s for s in found.values()
                    if all(m.matches(s.record(request), query.fuzzy) for m in query.matchers)]
        summaries = matching[query.offset:query.offset + query.limit]
        more = len(matching) > query.offset + query.limit
    records = [query.returned(STUDY_FIELDS, s.record(request)) for s in summaries]
    return _answer(request, records, query, more)


async def _lookup_studies(couch: Couch, uids: list[str]) -> dict[str, StudySummary]:
    """Summaries of the given studies, one grouped range query each, a few at a time."""
    gate = asyncio.Semaphore(MAX_PARALLEL_LOOKUPS)

    async def one(uid: str) -> dict[str, StudySummary]:
        async with gate:
            return await _study_range(couch, uid, uid)

    found: dict[str, StudySummary] = {}
    for part in await asyncio.gather(*(one(uid) for uid in uids)):
        found.update(part)
    return found


# -- series and instances ------------------------------------------------------------------


async def search_series(request: web.Request) -> web.Response:
    query = parse_query(request.query, request.app[SETTINGS])
    study = request.match_info["study"]
    rows = await request.app[COUCH].view(DDOC, "series", group_level=3, startkey=[study], endkey=[study, HIGH])
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
    return _page(request, query, query.filter(records), SERIES_FIELDS)


async def search_instances(request: web.Request) -> web.Response:
    query = parse_query(request.query, request.app[SETTINGS])
    study, series = request.match_info["study"], request.match_info["series"]
    rows = await request.app[COUCH].view(DDOC, "instances", startkey=[study, series], endkey=[study, series, HIGH])
    records = []
    for row in rows:
        attrs = normalize_stored(row["value"])
        attrs.update({
            "0020000D": element("UI", study),
            "0020000E": element("UI", series),
            "00080056": element("CS", "ONLINE"),
            "00081190": element("UR", study_url(request, study, series, row["key"][2])),
        })
        records.append(dict(sorted(attrs.items())))
    return _page(request, query, query.filter(records), INSTANCE_FIELDS)


def _page(request: web.Request, query: Query, matching: list[dict[str, Any]], defaults: Iterable[str]) -> web.Response:
    page = matching[query.offset:query.offset + query.limit]
    more = len(matching) > query.offset + query.limit
    return _answer(request, [query.returned(defaults, r) for r in page], query, more)


def _answer(request: web.Request, records: list[dict[str, Any]], query: Query, more: bool) -> web.Response:
    """The result array; a Warning header (PS3.18 8.3.4.4) when the server's limit cut it short."""
    headers = None
    if more and (query.limit_cut or "limit" not in request.query):
        headers = {"Warning": f'299 {request.host}: "The number of results exceeded the maximum supported by '
                              f'the server ({query.limit}). Additional results can be requested with offset."'}
    return dicom_json(records, headers=headers)
