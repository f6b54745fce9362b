"""Content negotiation for WADO-RS (PS3.18 8.7): which media type and transfer syntax to answer with.

The Acceptable Media Types come from the ``accept`` query parameter when the request has one
(PS3.18 8.3.3.1, meant for hyperlinks), else from the Accept header fields; a request without
either accepts anything (the standard would answer 406, which only breaks ``curl``). Each media
range carries a quality value (RFC 9110 12.5.1): the ranges are tried from the most to the least
preferred, ``q=0`` excludes, and the first one the server can satisfy wins. A range
``multipart/related; type="X"`` stands for parts of type X; its ``transfer-syntax`` parameter
(PS3.18 8.7.3.5.2) is a UID or ``*``, "whatever the server has" (as stored).

A resource offers what it can produce as :class:`Offer` s, each a media type and transfer syntax;
:func:`negotiate` picks one or raises 406 saying what was asked for and what could be had.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from dicomweb_couch.errors import DicomwebError, quoted


@dataclass(frozen=True)
class MediaRange:
    """One element of an Accept list."""

    media_type: str  # lower case, e.g. "multipart/related", "image/*", "*/*"
    params: Mapping[str, str]  # names lower case, values unquoted
    q: float

    @property
    def part_type(self) -> str:
        """The media type asked for: the ``type`` of a multipart range (any, if it names none)."""
        if self.media_type == "multipart/related":
            return self.params.get("type", "*/*").lower()
        return self.media_type

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def __str__(self) -> str:
        return "; ".join([self.media_type] + [f"{k}={v}" for k, v in self.params.items()])


@dataclass(frozen=True)
class Offer:
    """A representation the server can produce: its media type and transfer syntax.

    ``stored`` marks the bytes as kept in the archive (what ``transfer-syntax=*`` gets);
    ``default`` marks what a range without a transfer-syntax parameter gets for this media type.
    """

    media_type: str
    transfer_syntax: str | None = None
    stored: bool = False
    default: bool = True


def parse_accept(values: Iterable[str]) -> list[MediaRange]:
    """The media ranges of Accept header values, most preferred first (stable for equal q)."""
    ranges: list[MediaRange] = []
    for value in values:
        current: list[str] = []
        for token, separator in _tokens(value):
            current.append(token.strip())
            if separator != ";":
                if parsed := _media_range(current):
                    ranges.append(parsed)
                current = []
    ranges = [r for r in ranges if r.q > 0]
    ranges.sort(key=lambda r: -r.q)
    return ranges


def _tokens(value: str) -> Iterator[tuple[str, str]]:
    """The pieces of an Accept value and the ``,`` or ``;`` after each ("" at the end); separators
    inside quoted strings (RFC 9110 5.6.4) are text. One pass over the value: the regular
    expression this replaces backtracked without end on 200 spaces and a lone quote."""
    token: list[str] = []
    quoted = escaped = False
    for c in value:
        if quoted:
            quoted = escaped or c != '"'
            escaped = not escaped and c == "\\"
        elif c in ",;":
            yield "".join(token), c
            token = []
            continue
        else:
            quoted = c == '"'
        token.append(c)
    yield "".join(token), ""


def _media_range(tokens: list[str]) -> MediaRange | None:
    media_type, *rest = tokens
    if "/" not in media_type:
        return None
    params: dict[str, str] = {}
    q = 1.0
    for piece in rest:
        key, _, value = piece.partition("=")
        key, value = key.strip().lower(), value.strip().strip('"')
        if key == "q":
            try:
                q = min(max(float(value), 0.0), 1.0)
            except ValueError:
                pass  # an invalid weight is ignored, as PS3.18 8.4.3 says of invalid values
        elif key:
            params[key] = value
    return MediaRange(media_type.lower(), params, q)


def acceptable(headers: Sequence[str], query: Mapping[str, str]) -> list[MediaRange]:
    """The request's Acceptable Media Types (see the module doc)."""
    if query.get("accept"):
        return parse_accept([query["accept"]])
    return parse_accept(headers) if any(h.strip() for h in headers) else parse_accept(["*/*"])


def matches(media_range: str, media_type: str) -> bool:
    """Whether a media range (``*/*``, ``image/*`` or a type) covers ``media_type``."""
    kind, _, sub = media_range.partition("/")
    offered_kind, _, offered_sub = media_type.lower().partition("/")
    return kind == "*" or (kind == offered_kind and sub in ("*", offered_sub))


def _any_bulk_data(media_range: MediaRange, offer: Offer) -> bool:
    """``application/octet-stream; transfer-syntax=*`` takes stored bulk data of any media type.

    That is how OHIF and the Cornerstone loader ask for frames: "the bytes, in whatever syntax
    you have"; the part's Content-Type then names the syntax (PS3.18 8.7.3.5.2)."""
    return media_range.part_type == "application/octet-stream" and not offer.media_type.startswith("application/dicom")


def negotiate(ranges: Sequence[MediaRange], offers: Sequence[Offer], what: str) -> Offer:
    """The offer the most preferred satisfiable range selects; 406 naming ``what`` if none does."""
    for media_range in ranges:
        syntax = media_range.transfer_syntax
        candidates = [o for o in offers if matches(media_range.part_type, o.media_type)
                      or (syntax == "*" and o.stored and _any_bulk_data(media_range, o))]
        if syntax == "*":
            chosen = next((o for o in candidates if o.stored), candidates[0] if candidates else None)
        elif syntax:
            chosen = next((o for o in candidates if o.transfer_syntax == syntax), None)
        else:
            chosen = next((o for o in candidates if o.default), None)
        if chosen is not None:
            return chosen
    asked = quoted(", ".join(map(str, ranges)) or "nothing", 200)
    available = ", ".join(f"{o.media_type}" + (f"; transfer-syntax={o.transfer_syntax}" if o.transfer_syntax else "")
                          for o in offers) or "nothing"
    raise DicomwebError(406, f"{what} is not available as {asked}; this server can provide {available}")
