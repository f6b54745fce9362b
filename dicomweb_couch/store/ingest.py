"""Storing one Part 10 file: the path every way in shares (STOW-RS, C-STORE, the importer).

A file is parsed (:mod:`dicomweb_couch.dicom.dicomjson`), checked against what the caller
expects, turned into the instance document (dcmjs-org/dicomweb-server's layout plus the transfer
syntax) and written with the file beside it. The result is an :class:`Outcome` that carries the
PS3.4 failure reason a store response (PS3.18 10.5.3) or a C-STORE status (PS3.4 B.2.3) needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from typing import IO

from dicomweb_couch.dicom.dicomjson import (
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    InvalidInstance,
    ParsedInstance,
    parse_part10,
)
from dicomweb_couch.store.couch import Conflict, Couch, CouchRefused, CouchUnavailable
from dicomweb_couch.store.upgrade import SYNTAX_FIELD, repair

log = logging.getLogger(__name__)

# FailureReason (PS3.18 10.5.3, PS3.4 Annex GG / B.2.3) beside the two parsing gives
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700  # "Refused: Out of Resources": larger than accepted, or busy with other versions
__all__ = ["CANNOT_UNDERSTAND", "OUT_OF_RESOURCES", "PROCESSING_FAILURE", "Outcome", "document", "md5_of", "store_file"]

_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Outcome:
    """What became of one file: stored (instance set, reason None) or failed (reason set).

    ``written`` is False for a stored instance whose very file was already there.
    """

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_uid: str | None = None
    series_uid: str | None = None
    failure_reason: int | None = None
    message: str = ""
    written: bool = True


def md5_of(fp: IO[bytes]) -> tuple[str, int]:
    """MD5 (the predecessor's ``md5hash``) and size of a whole file, read from its start."""
    fp.seek(0)
    md5, size = hashlib.md5(), 0
    while chunk := fp.read(_CHUNK):
        md5.update(chunk)
        size += len(chunk)
    return md5.hexdigest(), size


async def store_file(couch: Couch, fp: IO[bytes], md5: str, size: int, expected_study: str | None = None) -> Outcome:
    """Parse, check and store one Part 10 file held in ``fp`` (any position; it is rewound).

    ``md5`` and ``size`` describe the whole file (computed while it was received, or by
    :func:`md5_of`). Parsing runs in a thread: it is CPU work that must not hold the event loop.
    """
    try:
        parsed = await asyncio.to_thread(parse_part10, fp)
    except InvalidInstance as exc:
        return Outcome(exc.sop_class_uid, exc.sop_instance_uid, failure_reason=exc.failure_reason, message=exc.message)
    if expected_study and parsed.study_uid != expected_study:
        return Outcome(parsed.sop_class_uid, parsed.sop_instance_uid, failure_reason=DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                       message=f"StudyInstanceUID (0020,000D) {parsed.study_uid} does not match the study "
                               f"{expected_study} in the request URL")
    try:
        written = await couch.store_instance(document(parsed, md5), fp, size)
    except CouchUnavailable as exc:
        log.error("storing %s failed: %s", parsed.sop_instance_uid, exc)
        return Outcome(parsed.sop_class_uid, parsed.sop_instance_uid, failure_reason=PROCESSING_FAILURE,
                       message="the database did not accept the instance; try again")
    except Conflict:
        log.warning("storing %s gave up: other versions of it kept arriving at the same moment", parsed.sop_instance_uid)
        return Outcome(parsed.sop_class_uid, parsed.sop_instance_uid, failure_reason=OUT_OF_RESOURCES,
                       message="other versions of this SOP Instance UID kept being stored at the same moment: "
                               "this one was not; try again")
    except CouchRefused as exc:  # e.g. 413: larger than the store's max_document_size/max_attachment_size
        log.warning("storing %s refused: %s", parsed.sop_instance_uid, exc)
        return Outcome(parsed.sop_class_uid, parsed.sop_instance_uid, failure_reason=OUT_OF_RESOURCES,
                       message="the database refused the instance (too large for it?)")
    if not written:  # the same file again: a document the predecessor wrote may lack what ours hold
        try:
            if changes := await repair(couch, document(parsed, md5)):
                log.info("repaired the document of %s: %s", parsed.sop_instance_uid, ", ".join(changes))
        except CouchUnavailable as exc:
            log.warning("could not repair the document of %s: %s", parsed.sop_instance_uid, exc)
    log.info("%s instance %s (%d bytes)", "stored" if written else "already had", parsed.sop_instance_uid, size)
    return Outcome(parsed.sop_class_uid, parsed.sop_instance_uid, parsed.study_uid, parsed.series_uid, written=written)


def document(parsed: ParsedInstance, md5: str) -> dict:
    """The instance document in dcmjs-org/dicomweb-server's layout, plus the transfer syntax."""
    doc = {"_id": parsed.sop_instance_uid, "dataset": parsed.dataset, "md5hash": md5}
    if parsed.transfer_syntax_uid:
        doc[SYNTAX_FIELD] = parsed.transfer_syntax_uid
    return doc
