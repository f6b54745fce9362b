"""QIDO-RS attribute matching (PS3.18 8.3.4, PS3.4 C.2.2.2) on DICOM JSON datasets (PS3.18 F.2).

Pure functions only: the web layer turns query parameters into `Matcher`s with `parse_matcher`,
the storage layer may use `wildcard_prefix`/`normalize_index_text` to narrow a CouchDB view scan,
and `Matcher.matches` gives the final answer per dataset.

Conformance choices (PS3.4 leaves them to the implementation):
- Values are split on `\\` (Multiple Value Matching, PS3.4 C.2.2.2.8); a comma also separates values
  for VRs whose repertoire cannot contain one (AS, AT, CS, DA, DT, TM, UI and numbers, PS3.5 6.2),
  as PS3.18 8.3.4.1 allows for UID lists. In PN and free text (LO, SH, ...) a comma is data.
- PN (PS3.4 C.2.2.2.1/C.2.2.2.4): the whole name, case-insensitive but accent-sensitive, against each
  component group; trailing '^' is padding. Fuzzy matching (PS3.18 8.3.4.2) also folds accents and
  lets every query word be a prefix of any name component.
- `*` alone is universal matching for every VR; any other `*`/`?` in a VR that has no Wild Card
  Matching (PS3.4 C.2.2.2.4) is a `QueryError`, not a literal.
- A single DA/TM/DT value matches the whole period it denotes (TM `10` = 10:00:00-10:59:59.999999);
  DT UTC offsets are validated but ignored, because stored values without an offset are in an
  unknown local time and cannot be normalised consistently.
- Private and unknown tags resolve to VR UN and are matched as text (string values only).
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicomweb_couch.dicom.dicomjson import is_valid_uid

Bound = tuple[str | None, str | None]

_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "UN"})
_TEMPORAL_VRS = frozenset({"DA", "TM", "DT"})
_NUMERIC_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"})
_COMMA_VRS = _TEMPORAL_VRS | _NUMERIC_VRS | {"AS", "AT", "CS", "UI"}
_UNMATCHABLE_VRS = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW"})
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")

_TAG_RE = re.compile(r"[0-9A-Fa-f]{8}")
_KEYWORD_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_TEMPORAL_RE = {  # PS3.5 6.2; legacy `YYYY.MM.DD` and `HH:MM:SS` are accepted too
    "DA": re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})"),
    "TM": re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?"),
    "DT": re.compile(
        r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?"
        r"(?P<offset>[+-]\d{4})?"
    ),
}
_FIELDS = {"DA": "YMD", "TM": "hmsf", "DT": "YMDhmsf"}
_LOW_FILL = {"M": "01", "D": "01", "h": "00", "m": "00", "s": "00", "f": "0"}
_HIGH_FILL = {"M": "12", "D": "31", "h": "23", "m": "59", "s": "59", "f": "9"}
_TEMPORAL_NAMES = {"DA": "date", "TM": "time", "DT": "date-time"}
_MIDNIGHT, _END_OF_DAY = "000000.000000", "235959.999999"


class QueryError(ValueError):
    """A client error in the query: the message names the parameter and what is wrong (becomes a 400)."""


@dataclass(frozen=True)
class Matcher:
    """One matching key (PS3.4 C.2.2.2): `kind` is universal, single, wildcard, range or list.

    `values` holds the query terms of text, UID and numeric keys (wildcards kept as typed);
    `ranges` holds DA/TM/DT terms as inclusive bounds in sortable form (None = open end).
    `time_path` is set only by `combine_datetime`.
    """

    path: str
    vr: str
    kind: str
    values: tuple[str, ...] = ()
    ranges: tuple[Bound, ...] = ()
    time_path: str | None = None

    @property
    def low(self) -> str | None:
        """Lower bound of a single/range DA/TM/DT key (DA: YYYYMMDD, as stored), None if open."""
        return self.ranges[0][0] if len(self.ranges) == 1 else None

    @property
    def high(self) -> str | None:
        """Upper bound, inclusive, of a single/range DA/TM/DT key, None if open."""
        return self.ranges[0][1] if len(self.ranges) == 1 else None

    def matches(self, dataset: Mapping[str, Any], fuzzy: bool = False) -> bool:
        """True if any stored value (in any sequence item, PS3.4 C.2.2.2.6) matches any term."""
        if self.kind == "universal":
            return True
        *parents, leaf = self.path.split(".")
        values = (value for item in _items(dataset, parents) for value in self._stored(item, leaf))
        return any(self._value_matches(value, fuzzy) for value in values)

    def _stored(self, item: Mapping[str, Any], leaf: str) -> list[Any]:
        """The values to test; a combined key joins date and time into one DT (C.2.2.2.5.1)."""
        values = _values(item.get(leaf))
        if self.time_path is None:
            return values
        times = _values(item.get(self.time_path.rsplit(".", 1)[-1]))
        return [_date_time(date, times[0] if times else None) for date in values]

    def _value_matches(self, value: Any, fuzzy: bool) -> bool:
        if self.vr in _TEMPORAL_VRS:
            key = _stored_key(self.vr, value)
            return key is not None and any(
                (low is None or low <= key) and (high is None or key <= high) for low, high in self.ranges
            )
        if self.vr in _NUMERIC_VRS:
            number = _number(value)
            return number is not None and any(number == float(term) for term in self.values)
        if self.vr == "PN":
            return any(_pn_matches(term, value, fuzzy) for term in self.values)
        text = value.strip(" \x00") if isinstance(value, str) else None
        return text is not None and any(wildcard_match(term, text) for term in self.values)


def resolve_key(key: str) -> tuple[str, str]:
    """Resolve a query key (PS3.18 8.3.4.1: keyword, 8-hex tag or dotted sequence path).

    Returns the path as uppercase tags joined by '.' and the VR of the last element;
    private and unknown tags get VR UN.
    """
    tags: list[str] = []
    for part in key.split("."):
        if _TAG_RE.fullmatch(part):
            tags.append(part.upper())
        elif _KEYWORD_RE.fullmatch(part) and (tag := tag_for_keyword(part)) is not None:
            tags.append(f"{tag:08X}")
        else:
            raise QueryError(f"{key}: unknown attribute keyword or malformed tag '{part}'")
    vrs = [_dictionary_vr(tag) for tag in tags]
    if any(vr not in ("SQ", "UN") for vr in vrs[:-1]):
        raise QueryError(f"{key}: only sequence attributes may be followed by '.'")
    return ".".join(tags), vrs[-1]


def parse_matcher(key: str, raw_value: str) -> Matcher:
    """Build the matcher for one query parameter (value already percent-decoded)."""
    path, vr = resolve_key(key)
    value = raw_value.strip()
    if value in ("", "*"):  # PS3.4 C.2.2.2.3, and C.2.2.2.4: `*` is universal
        return Matcher(path, vr, "universal")
    if vr in _UNMATCHABLE_VRS:
        raise QueryError(f"{key}: attributes of VR {vr} only support universal matching")
    terms = tuple(t.strip() for t in re.split(r"[\\,]" if vr in _COMMA_VRS else r"\\", value))
    if not all(terms):
        raise QueryError(f"{key}: empty value in list '{raw_value}'")
    if vr not in _WILDCARD_VRS and any("*" in t or "?" in t for t in terms):
        raise QueryError(f"{key}: wildcards are not allowed for VR {vr}")
    kind = "list" if len(terms) > 1 else "wildcard" if "*" in value or "?" in value else "single"
    if vr in _TEMPORAL_VRS:
        ranges = tuple(_parse_temporal(key, vr, term) for term in terms)
        if kind == "single" and _bounds(vr, value) is None:
            kind = "range"
        return Matcher(path, vr, kind, ranges=ranges)
    if vr == "UI" and not all(is_valid_uid(t) for t in terms):
        raise QueryError(f"{key}: malformed UID in '{raw_value}'")
    if vr in _NUMERIC_VRS and not all(_NUMBER_RE.fullmatch(t) for t in terms):
        raise QueryError(f"{key}: '{raw_value}' is not a number")
    return Matcher(path, vr, kind, values=terms)


def combine_datetime(date: Matcher, time: Matcher) -> Matcher:
    """Merge a DA and a TM key into one DT range (PS3.4 C.2.2.2.5.1), e.g. StudyDate+StudyTime.

    `20200101-20200102` with `2300-0100` means 2020-01-01 23:00 to 2020-01-02 01:00.
    Only the caller knows whether combined matching was asked for, so it decides when to call this.
    """
    same_level = date.path.rpartition(".")[0] == time.path.rpartition(".")[0]
    if (date.vr, time.vr, len(date.ranges), len(time.ranges), same_level) != ("DA", "TM", 1, 1, True):
        raise ValueError("combine_datetime needs a DA and a TM single/range matcher on one level")
    (date_low, date_high), (time_low, time_high) = date.ranges[0], time.ranges[0]
    low = None if date_low is None else date_low + (time_low or _MIDNIGHT)
    high = None if date_high is None else date_high + (time_high or _END_OF_DAY)
    return Matcher(date.path, "DT", "range", ranges=((low, high),), time_path=time.path)


def normalize_index_text(text: str) -> str:
    """Key a database index emits for PN values so prefix scans are case-insensitive.

    Uppercase only: accent folding is left to `Matcher.matches` (fuzzy), so an index scan never
    misses a case-insensitive match and fuzzy queries must not use the index.
    """
    return text.upper()


def wildcard_prefix(matcher: Matcher) -> str | None:
    """Literal text before the first wildcard of a single/wildcard text key, for index range scans.

    None if there is no usable prefix. PN prefixes still need `normalize_index_text`, only hold for
    the first component group, and are not valid for fuzzy matching.
    """
    if matcher.kind not in ("single", "wildcard") or matcher.vr not in _WILDCARD_VRS:
        return None
    prefix = re.split(r"[*?]", matcher.values[0], maxsplit=1)[0]
    if matcher.vr == "PN":
        prefix = prefix.split("=", 1)[0]
    return prefix or None


def _dictionary_vr(tag: str) -> str:
    """Data dictionary VR (first of 'US or SS'); UN for private and unknown tags."""
    try:
        return dictionary_VR(int(tag, 16)).split(" or ")[0]
    except KeyError:
        return "UN"


def _values(element: Any) -> list[Any]:
    """The "Value" array of a DICOM JSON element, [] for anything else (missing, binary, odd)."""
    value = element.get("Value") if isinstance(element, Mapping) else None
    return value if isinstance(value, list) else []


def _items(dataset: Any, sequence_path: Sequence[str]) -> Iterator[Mapping[str, Any]]:
    """Every (nested) item reached by following the sequence tags."""
    if isinstance(dataset, Mapping) and not sequence_path:
        yield dataset
    elif isinstance(dataset, Mapping):
        for item in _values(dataset.get(sequence_path[0])):
            yield from _items(item, sequence_path[1:])


def wildcard_match(term: str, text: str, prefix: bool = False) -> bool:
    """Whether ``text`` matches ``term``, where `*` is any run and `?` one character (PS3.4 C.2.2.2.4);
    with ``prefix``, whether it starts with a match.

    The term is cut at its `*`s into pieces without one; the first piece must match at the start,
    the last at the end, and each one between at its leftmost place after the previous piece
    (leftmost is always best: it leaves the most room for what follows). Each piece is a
    fixed-length regex, so no search backtracks beyond one piece: the cost is at most
    len(text) x len(term), whatever the number of wildcards. A backtracking regex of the whole
    term (`.*Z` with many stars) took exponential time: one query froze the server.
    """
    pieces = _pieces(term + "*" if prefix else term)
    if len(pieces) == 1:
        return pieces[0][0].fullmatch(text) is not None
    (first, position), *middle, (last, last_length) = pieces
    if first.match(text) is None:
        return False
    for piece, _ in middle:
        found = piece.search(text, position)
        if found is None:
            return False
        position = found.end()
    end = len(text) - last_length
    return end >= position and last.fullmatch(text, end) is not None


@lru_cache(maxsize=1024)
def _pieces(term: str) -> tuple[tuple[re.Pattern[str], int], ...]:
    """The parts of a term between its `*`s, each as a regex (`?` is any one character) and the
    number of characters it matches; runs of `*` count as one."""
    first, *rest = term.split("*")
    parts = [first, *(p for p in rest[:-1] if p), *rest[-1:]]
    return tuple((re.compile("".join("." if c == "?" else re.escape(c) for c in p), re.DOTALL), len(p))
                 for p in parts)


def _fold(text: str) -> str:
    """Case- and accent-insensitive form for fuzzy matching (PS3.18 8.3.4.2)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _pn_groups(value: Any) -> list[str]:
    """Alphabetic, Ideographic, Phonetic groups of a PN value; legacy plain strings use '='."""
    if isinstance(value, str):
        return value.split("=")
    if isinstance(value, Mapping):
        return [g if isinstance(g := value.get(name), str) else "" for name in _PN_GROUPS]
    return []


def _pn_matches(term: str, value: Any, fuzzy: bool) -> bool:
    """A query without '=' may match any group; with '=' its groups match positionally."""
    groups = _pn_groups(value)
    if "=" not in term:
        return any(g.strip() and _name_matches(term, g, fuzzy) for g in groups)
    wanted = [(q, groups[i] if i < len(groups) else "") for i, q in enumerate(term.split("="))]
    present = any(g.strip() for g in groups)
    return present and all(not q.strip() or _name_matches(q, g, fuzzy) for q, g in wanted)


def _name_matches(term: str, name: str, fuzzy: bool) -> bool:
    """Whole-name match ignoring case (and accents if fuzzy); fuzzy also lets every query word be
    a prefix of some name component, in any order."""
    fold = _fold if fuzzy else normalize_index_text
    if wildcard_match(_query_name(term, fuzzy), _trim_name(fold(name))):
        return True
    if not fuzzy:
        return False
    words = _words(name)
    return all(any(wildcard_match(q, w, prefix=True) for w in words) for q in _query_words(term))


@lru_cache(maxsize=256)
def _query_name(term: str, fuzzy: bool) -> str:
    """A query name as it is compared: worked out once per query, not once per stored name."""
    return _trim_name(_fold(term) if fuzzy else normalize_index_text(term))


@lru_cache(maxsize=256)
def _query_words(term: str) -> tuple[str, ...]:
    return tuple(_words(term))


def _trim_name(name: str) -> str:
    """Drop padding and trailing empty components: 'Doe^John^^' equals 'Doe^John' (PS3.5 6.2)."""
    return name.strip().rstrip("^ ")


def _words(name: str) -> list[str]:
    """Folded name components and the words inside them, for fuzzy prefix matching."""
    return [w for w in re.split(r"[\^\s]+", _fold(name)) if w]


def _number(value: Any) -> float | None:
    """Stored numeric value as float; tolerates numbers stored as strings."""
    if isinstance(value, str) and _NUMBER_RE.fullmatch(value.strip()):
        return float(value)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _bounds(vr: str, text: str) -> tuple[str, str] | None:
    """Earliest and latest instant a (possibly partial) DA/TM/DT value denotes, as sortable
    strings (YYYYMMDD, HHMMSS.FFFFFF, YYYYMMDDHHMMSS.FFFFFF); None if it is not a valid value."""
    match = _TEMPORAL_RE[vr].fullmatch(text)
    if match is None:
        return None
    fields = dict(zip(_FIELDS[vr], match.groups()))
    offset = match.groupdict().get("offset") or "+0000"
    if not _valid_fields(fields) or offset[1:3] > "14" or offset[3:] > "59":
        return None
    return _fill(fields, _LOW_FILL), _fill(fields, _HIGH_FILL)


def _fill(fields: dict[str, str | None], fill: dict[str, str]) -> str:
    return "".join(
        "." + (v or "").ljust(6, fill["f"]) if k == "f" else v or fill[k] for k, v in fields.items()
    )


def _valid_fields(fields: dict[str, str | None]) -> bool:
    """Calendar and clock limits of PS3.5 6.2 (leap years, leap second)."""
    year, month, day = (int(fields.get(k) or 0) for k in "YMD")
    if fields.get("M") and not 1 <= month <= 12:
        return False
    if fields.get("D") and not 1 <= day <= calendar.monthrange(year, month)[1]:
        return False
    return all(int(fields.get(k) or 0) <= top for k, top in (("h", 23), ("m", 59), ("s", 60)))


def _parse_temporal(key: str, vr: str, term: str) -> Bound:
    """A single value or `a-b`, `a-`, `-b` range (PS3.4 C.2.2.2.5), inclusive.

    A DT value with a negative UTC offset also contains '-', so the whole term is tried as one
    value first and then every '-' as the range separator.
    """
    if (single := _bounds(vr, term)) is not None:
        return single
    for i in (i for i, c in enumerate(term) if c == "-"):
        low, high = term[:i], term[i + 1 :]
        low_bounds = _bounds(vr, low) if low else (None, None)
        high_bounds = _bounds(vr, high) if high else (None, None)
        if (low or high) and low_bounds is not None and high_bounds is not None:
            return low_bounds[0], high_bounds[1]
    raise QueryError(f"{key}: invalid {_TEMPORAL_NAMES[vr]} or range '{term}'")


def _stored_key(vr: str, value: Any) -> str | None:
    """Sortable key of a stored DA/TM/DT value (partial values count from their start)."""
    bounds = _bounds(vr, value.strip(" \x00")) if isinstance(value, str) else None
    return bounds[0] if bounds else None


def _date_time(date: Any, time: Any) -> str | None:
    """Stored DA + TM as one sortable DT key; a missing time counts as midnight."""
    date_key, time_key = _stored_key("DA", date), _stored_key("TM", time)
    return None if date_key is None else date_key + (time_key or _MIDNIGHT)


def fold_text(text: str) -> str:
    """The case- and accent-insensitive form fuzzy matching compares (PS3.18 8.3.4.2), for indexes
    that must agree with it (the study catalog's trigram index)."""
    return _fold(text)
