"""A QIDO query (PS3.18 8.3.4) parsed and checked, its filters sorted by level (PS3.4 C.2.2.2).

Used by every way a search comes in: QIDO-RS (``web/qido.py``) and, through the same parameters,
C-FIND. Every mistake is a :class:`~dicomweb_couch.search.matching.QueryError` naming the
parameter, which the web layer answers with 400.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dicomweb_couch.dicom.levels import level_of
from dicomweb_couch.errors import quoted
from dicomweb_couch.search.matching import Matcher, QueryError, combine_datetime, parse_matcher, resolve_key

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

_CONTROL = {"limit", "offset", "includefield", "fuzzymatching", "orderby"}
_IGNORED = {"emptyvaluematching", "multiplevaluematching"}  # accepted, said in a Warning


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
    order: tuple[tuple[str, str, bool], ...] = ()  # orderby: (tag, VR, descending), most significant first

    def at(self, level: str) -> tuple[Matcher, ...]:
        return self.matchers.get(level, ())

    def match(self, level: str, record: Mapping[str, Any]) -> bool:
        return all(m.matches(record, self.fuzzy) for m in self.at(level))

    def returned(self, defaults: Iterable[str], record: Mapping[str, Any]) -> dict[str, Any]:
        """The attributes of ``record`` to return: defaults, included fields and matching keys."""
        if self.include_all:
            return dict(record)
        keys = {m.path.split(".")[0] for ms in self.matchers.values() for m in ms} | {t for t, _, _ in self.order}
        wanted = set(defaults) | self.include | COMPUTED | keys
        return {tag: value for tag, value in record.items() if tag in wanted}


def parse_query(params: Mapping[str, str], level: str, default_limit: int, max_limit: int) -> Query:
    """Validate the query parameters of a search at ``level``; every mistake is a QueryError naming
    the parameter (a 400). ``params`` may be a multi-mapping: repeated keys come one by one."""
    matchers: dict[str, Matcher] = {}
    include: set[str] = set()
    include_all = False
    ignored = []
    order: list[tuple[str, str, bool]] = []
    for key, value in params.items():
        if key == "orderby":
            order += _order(value, level)
        elif key == "includefield":
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
    limit = _integer(params, "limit", default_limit)
    offset = _integer(params, "offset", 0)
    fuzzy = params.get("fuzzymatching", "false").lower()
    if fuzzy not in ("true", "false"):
        raise QueryError(f"fuzzymatching: must be true or false, not {params['fuzzymatching']!r}")
    by_level: dict[str, list[Matcher]] = {}
    for m in matchers.values():
        by_level.setdefault(_filter_level(m.path, level), []).append(m)
    return Query({k: tuple(v) for k, v in by_level.items()}, include_all, frozenset(include),
                 min(limit, max_limit), offset, fuzzy == "true", limit > max_limit, tuple(ignored), tuple(order))


def _order(value: str, level: str) -> list[tuple[str, str, bool]]:
    """``orderby=-StudyDate,PatientName`` (as dcm4chee takes it): keywords or tags, comma-separated
    or repeated, ``-`` for descending. At the study level only study attributes can order."""
    order = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        descending = item.startswith("-")
        path, vr = resolve_key(item.lstrip("+-"))
        if "." in path or vr == "SQ":
            raise QueryError(f"orderby: {item!r} is a sequence; results can only be ordered by plain attributes")
        if level == "study" and level_of(path) not in ("study", "any"):
            raise QueryError(f"orderby: {item!r} is not a study-level attribute (PS3.4 C.6.1.1.3)")
        order.append((path, vr, descending))
    return order


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
