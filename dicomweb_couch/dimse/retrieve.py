"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): the matching instances sent by C-STORE sub-operations.

The instances are found with the C-FIND search (same levels, same keys: usually the UIDs of the
level and those above it), then each stored file is read from the database and sent as it was
stored: its own transfer syntax, proposed to a C-MOVE destination beside the uncompressed ones
(PS3.5 10.1), so a peer that accepts it gets the data set unchanged. pynetdicom counts the
sub-operations from the peer's C-STORE answers, so Completed/Failed/Warning tell the truth; an
instance whose file cannot be read counts as failed. C-MOVE sends only to the AE titles of
``dimse_remote_aes`` (PS3.4 C.4.2.1.4: an unknown destination is refused with 0xA801).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from typing import IO, Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.presentation import PresentationContext

from dicomweb_couch.dimse.query import (
    CANCEL,
    PENDING,
    Cancellation,
    Refused,
    find,
    query_level,
    refusal,
    status,
)
from dicomweb_couch.dimse.services import Services
from dicomweb_couch.search.catalog import CatalogNotReady
from dicomweb_couch.search.matching import QueryError
from dicomweb_couch.store.couch import CouchUnavailable
from dicomweb_couch.store.files import Part10Store

log = logging.getLogger(__name__)

MOVE_DESTINATION_UNKNOWN = 0xA801
_UNIQUE_KEYS = {"PATIENT": ("PatientID",), "STUDY": ("PatientID", "StudyInstanceUID"),
                "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
                "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
_MAX_CONTEXTS = 128  # presentation contexts one association can propose (PS3.8 9.3.2.2: odd IDs 1-255)
_SPOOL_IN_MEMORY = 8 * 1024 * 1024
_EXPECTED = (Refused, QueryError, CatalogNotReady, CouchUnavailable, FutureTimeout)


def matching_instances(services: Services, identifier: Dataset) -> list[dict[str, Any]]:
    """The instances a retrieve identifier names: SOP Class, SOP Instance UID, stored syntax."""
    level = query_level(identifier)
    keys = Dataset()
    keys.QueryRetrieveLevel = "IMAGE"
    for keyword in _UNIQUE_KEYS[level]:
        if identifier.get(keyword):
            setattr(keys, keyword, identifier.get(keyword))
    if len(keys) == 1:
        raise Refused(0xA900, f"a {level} retrieve names none of {', '.join(_UNIQUE_KEYS[level])}")
    keys.SOPClassUID = ""
    keys.add_new(0x00083002, "UI", None)  # Available Transfer Syntax UID: the stored one
    if "SOPInstanceUID" not in keys:
        keys.SOPInstanceUID = ""
    return list(find(services, keys, "IMAGE"))


def _uid(record: dict[str, Any], tag: str) -> str:
    return (record.get(tag, {}).get("Value") or [""])[0]


def contexts_for(instances: list[dict[str, Any]]) -> list[PresentationContext]:
    """Storage contexts for a C-MOVE destination: one per SOP class and stored syntax, so the
    destination accepts or refuses each syntax on its own and an accepted one carries the data set
    unchanged, then one per SOP class with the uncompressed syntaxes every storage SCP takes."""
    syntaxes: dict[str, list[str]] = {}
    for record in instances:
        wanted = syntaxes.setdefault(_uid(record, "00080016"), [])
        stored = _uid(record, "00083002")
        if stored and stored not in wanted:
            wanted.append(stored)
    contexts = [build_context(sop_class, [ts]) for sop_class, stored in syntaxes.items() for ts in stored]
    contexts += [build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for sop_class in syntaxes]
    return contexts[:_MAX_CONTEXTS]


async def _read_file(files: Part10Store, sop_instance_uid: str) -> IO[bytes] | None:
    """The stored Part 10 file, spooled (in memory while small), or None if it is missing."""
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115 -- handed to the caller
    async with files.open(sop_instance_uid) as found:
        if found is None:
            spool.close()
            return None
        if found.path is not None:  # the file store: a local file
            with found.path.open("rb") as local:
                await asyncio.to_thread(shutil.copyfileobj, local, spool)
        elif found.chunks is not None:
            async for chunk in found.chunks:
                spool.write(chunk)
    spool.seek(0)
    return spool


def _datasets(services: Services, instances: list[dict[str, Any]], event: evt.Event,
              ) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """Each instance read and decoded for pynetdicom to send; a cancel ends it (PS3.4 C.4.2.3.1)."""
    cancelled = Cancellation(event)
    for record in instances:
        if cancelled():
            yield CANCEL, None
            return
        uid = _uid(record, "00080018")
        try:
            fp = services.bridge.run(_read_file(services.files, uid))
        except (CouchUnavailable, FutureTimeout) as exc:
            log.warning("retrieve: cannot read %s: %s", uid, exc)
            fp = None
        if fp is None:
            unreadable = Dataset()  # pynetdicom counts a data set it cannot send as a failed sub-operation
            unreadable.SOPInstanceUID = uid
            yield PENDING, unreadable
            continue
        with fp:
            yield PENDING, dcmread(fp)


def on_c_move(event: evt.Event, services: Services) -> Iterator[Any]:
    """First the destination's address (None: unknown), then the count, then the instances.

    pynetdicom reports a handler's failure before the count only as a generic failure (0xC514), so
    a bad identifier or an unavailable database is logged here with its reason.
    """
    destination = services.remote_aes.get((event.move_destination or "").strip())
    if destination is None:
        log.warning("C-MOVE to unknown destination %r refused (dimse_remote_aes)", event.move_destination)
        yield None, None
        return
    try:
        instances = matching_instances(services, event.identifier)
    except _EXPECTED as exc:
        refused = refusal(exc)
        log.warning("C-MOVE refused (0x%04X): %s", refused.status, refused.comment)
        raise
    yield destination.host, destination.port, {"contexts": contexts_for(instances)}
    yield len(instances)
    yield from _datasets(services, instances, event)


def on_c_get(event: evt.Event, services: Services) -> Iterator[Any]:
    """First the count, then the instances, sent back on the requestor's own association."""
    try:
        instances = matching_instances(services, event.identifier)
    except _EXPECTED as exc:
        refused = refusal(exc)
        log.warning("C-GET refused (0x%04X): %s", refused.status, refused.comment)
        yield 1  # a count of 0 would answer Success at once, without the failure status
        yield status(refused.status, refused.comment), None
        return
    yield len(instances)
    yield from _datasets(services, instances, event)
