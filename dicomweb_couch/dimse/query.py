"""C-FIND SCP (PS3.4 C.4.1): Patient Root and Study Root, PATIENT/STUDY/SERIES/IMAGE levels.

An identifier is turned into the parameters of a QIDO-RS search and answered by the same search
engine (:mod:`dicomweb_couch.search.engine`), so both ways match alike: wildcards, ranges, UID
lists, case-insensitive person names, sequence items. Every key of the identifier is matched
(a value) or returned (empty); each response carries exactly the requested keys, empty where the
archive has no value (PS3.4 C.4.1.1.3.2). Matches go out as Pending responses a page at a time,
and a C-CANCEL is honoured between two of them. Queries are relational: a SERIES-level query
need not name its study (PS3.4 C.4.1.2.2).

PATIENT level has no search of its own in QIDO-RS: the studies matching the patient keys are
grouped by Patient ID, with the patient's study, series and instance counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom import evt

from dicomweb_couch.dimse.services import Services
from dicomweb_couch.search.catalog import CatalogNotReady
from dicomweb_couch.search.matching import QueryError
from dicomweb_couch.store.couch import CouchUnavailable

log = logging.getLogger(__name__)

PENDING, CANCEL, SUCCESS = 0xFF00, 0xFE00, 0x0000
OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources (PS3.4 C.4.1.1.4)
IDENTIFIER_DOES_NOT_MATCH = 0xA900  # Error: Identifier does not match SOP Class
LEVELS = {"PATIENT": "study", "STUDY": "study", "SERIES": "series", "IMAGE": "instance"}
"""Query/Retrieve Level (0008,0052) -> the engine's level."""

_QUERY_RETRIEVE_LEVEL = 0x00080052
_SPECIFIC_CHARACTER_SET = 0x00080005
_RETRIEVE_AE_TITLE = 0x00080054
_NOT_MATCHED = {_QUERY_RETRIEVE_LEVEL, _SPECIFIC_CHARACTER_SET, _RETRIEVE_AE_TITLE}
_PATIENT_COUNTS = {"00201200": None, "00201202": "00201206", "00201204": "00201208"}
"""Number of Patient Related Studies/Series/Instances, and the study attribute each sums."""


class Refused(Exception):
    """A request the archive answers with a failure status and an Error Comment."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status, self.comment = status, comment


def query_level(identifier: Dataset) -> str:
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS:
        raise Refused(IDENTIFIER_DOES_NOT_MATCH, f"QueryRetrieveLevel (0008,0052) {level!r} is not "
                                                 "PATIENT, STUDY, SERIES or IMAGE")
    return level


def search_params(identifier: Dataset) -> dict[str, str]:
    """QIDO-RS parameters for the keys of an identifier: ``tag=value`` to match, ``tag=`` to return
    (universal matching), and sequence items' keys as ``sequence.tag`` (PS3.18 8.3.4.1)."""
    params: dict[str, str] = {}
    for elem in identifier:
        if elem.tag in _NOT_MATCHED or elem.tag.group in (0x0000, 0x0002):
            continue
        tag = f"{elem.tag:08X}"
        if elem.VR == "SQ":
            params[tag] = ""
            for item in elem.value[:1]:
                for key, value in search_params(item).items():
                    if value:
                        params[f"{tag}.{key}"] = value
        else:
            params[tag] = _text(elem.value)
    return params


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(_text(v) for v in value)
    if isinstance(value, bytes):
        return ""
    return str(value)


def response(identifier: Dataset, record: dict[str, Any], ae_title: str) -> Dataset:
    """The requested keys of ``identifier`` with the values of ``record`` (DICOM JSON)."""
    found = Dataset.from_json({tag: value for tag, value in record.items()
                               if int(tag, 16) in identifier and "Value" in value})
    answer = Dataset()
    for elem in identifier:
        if elem.tag.group in (0x0000, 0x0002):
            continue
        if elem.tag in found:
            answer[elem.tag] = found[elem.tag]
        else:
            answer.add_new(elem.tag, elem.VR, [] if elem.VR == "SQ" else None)
    answer.QueryRetrieveLevel = identifier.QueryRetrieveLevel
    answer.RetrieveAETitle = ae_title
    if any(not str(e.value).isascii() for e in answer if e.VR in ("PN", "LO", "SH", "LT", "ST", "UT", "UC")):
        answer.SpecificCharacterSet = "ISO_IR 192"
    elif "SpecificCharacterSet" in answer:
        del answer.SpecificCharacterSet
    return answer


def find(services: Services, identifier: Dataset, level: str,
         cancelled: Callable[[], bool] = lambda: False) -> Iterator[dict[str, Any]]:
    """Every matching record (DICOM JSON) of the engine, a page at a time; stops when cancelled."""
    params = search_params(identifier)
    if level == "PATIENT":
        return _patients(services, params, cancelled)
    return _pages(services, LEVELS[level], params, cancelled)


def _pages(services: Services, level: str, params: dict[str, str],
           cancelled: Callable[[], bool]) -> Iterator[dict[str, Any]]:
    offset = 0
    while not cancelled():
        page = services.bridge.run(services.search.search(level, {**params, "offset": str(offset)}))
        yield from page.records
        if not page.more:
            return
        offset += len(page.records)


def _patients(services: Services, params: dict[str, str],
              cancelled: Callable[[], bool]) -> Iterator[dict[str, Any]]:
    """Studies matching the patient keys, grouped by Patient ID, with the patient's counts."""
    wanted = {**{k: v for k, v in params.items() if k not in _PATIENT_COUNTS},
              "00100020": params.get("00100020", ""), "00201206": "", "00201208": ""}
    patients: dict[str, dict[str, Any]] = {}
    counts: dict[str, list[int]] = {}
    for study in _pages(services, "study", wanted, cancelled):
        pid = (study.get("00100020", {}).get("Value") or [""])[0]
        if pid not in patients:
            patients[pid] = study
            counts[pid] = [0, 0, 0]
        tally = counts[pid]
        tally[0] += 1
        tally[1] += (study.get("00201206", {}).get("Value") or [0])[0]
        tally[2] += (study.get("00201208", {}).get("Value") or [0])[0]
    for pid, record in patients.items():
        record = dict(record)
        for (tag, _), number in zip(_PATIENT_COUNTS.items(), counts[pid]):
            record[tag] = {"vr": "IS", "Value": [number]}
        yield record


def refusal(exc: Exception) -> Refused:
    """The failure status of what a search can raise."""
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, QueryError):
        return Refused(IDENTIFIER_DOES_NOT_MATCH, str(exc))
    if isinstance(exc, (CatalogNotReady, CouchUnavailable, FutureTimeout)):
        return Refused(OUT_OF_RESOURCES, "the archive's index or database is not available; try again later")
    raise exc


def status(code: int, comment: str = "") -> Dataset:
    answer = Dataset()
    answer.Status = code
    if comment:
        answer.ErrorComment = comment[:64]  # LO, PS3.7 C.4.2
    return answer


class Cancellation:
    """Whether the peer sent a C-CANCEL (PS3.7 9.3.2.3); pynetdicom reports it once, so it is kept."""

    def __init__(self, event: evt.Event) -> None:
        self._event, self._cancelled = event, False

    def __call__(self) -> bool:
        self._cancelled = self._cancelled or self._event.is_cancelled
        return self._cancelled


def on_c_find(event: evt.Event, services: Services) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """Pending responses, one per match, then Success; Cancel when the peer asks (PS3.4 C.4.1.3)."""
    identifier = event.identifier
    cancelled = Cancellation(event)
    try:
        level = query_level(identifier)
        for record in find(services, identifier, level, cancelled):
            if cancelled():
                break
            yield PENDING, response(identifier, record, services.ae_title)
        if cancelled():
            yield CANCEL, None
    except (Refused, QueryError, CatalogNotReady, CouchUnavailable, FutureTimeout) as exc:
        refused = refusal(exc)
        log.warning("C-FIND refused (0x%04X): %s", refused.status, refused.comment)
        yield status(refused.status, refused.comment), None
