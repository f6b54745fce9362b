"""STOW-RS: ``POST /studies[/{study}]`` with ``multipart/related; type="application/dicom"`` (PS3.18 10.5).

The body is read part by part (:mod:`dicomweb_couch.web.multipart_reader`): each part is spooled
to a temporary file (in memory while small) while its MD5 is computed, parsed there, and streamed
from there into CouchDB, so memory does not grow with the size of the request or of an instance.
Each part succeeds or fails on its own; a part is stored only once the delimiter after it has
arrived, so a cut-off upload never leaves a truncated file behind. The parts before a break in
the body (a cut-off, a silent client, a syntax error) keep their outcome, and the response says
where the body broke (a FailureReason for the unfinished part and a ``Warning`` header).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from typing import IO

from aiohttp import web
from multidict import CIMultiDict

from dicomweb_couch.appkeys import COUCH, SETTINGS
from dicomweb_couch.dicom.dicomjson import element
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.store.ingest import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, PROCESSING_FAILURE, Outcome, store_file
from dicomweb_couch.web.multipart_reader import ClientGone, ClientSilent, MultipartError, RelatedReader
from dicomweb_couch.web.responses import dicom_json, study_url

log = logging.getLogger(__name__)

_SPOOL_IN_MEMORY = 8 * 1024 * 1024


async def store(request: web.Request) -> web.Response:
    expected_study = request.match_info.get("study")
    settings = request.app[SETTINGS]
    reader = _open_multipart(request, settings.client_timeout)
    outcomes: list[Outcome] = []
    broken: MultipartError | None = None
    try:
        while (headers := await reader.next_part()) is not None:
            outcomes.append(await _store_part(request, reader, headers, expected_study, settings.max_instance_size))
    except MultipartError as exc:
        broken = exc
        if isinstance(exc, (ClientGone, ClientSilent)):
            log.warning("STOW-RS from %s stopped: %s; %d part(s) before were handled, nothing of the unfinished "
                        "one was stored", request.remote, exc.message, len(outcomes))
    if broken and not outcomes:
        raise DicomwebError(broken.status, f"{broken.message}: nothing was stored", {"Connection": "close"})
    if not outcomes:
        raise DicomwebError(400, "the multipart body holds no parts: nothing to store")
    if all(o.failure_reason == PROCESSING_FAILURE for o in outcomes):
        raise DicomwebError(503, "the database is unavailable: nothing was stored; try again later")
    if broken and reader.parts > len(outcomes):  # the part the body broke off in
        outcomes.append(Outcome(None, None, failure_reason=PROCESSING_FAILURE,
                                message=f"{broken.message}: nothing of this part was stored"))
    return _response(request, outcomes, expected_study, broken.message if broken else None)


def _open_multipart(request: web.Request, timeout: float) -> RelatedReader:
    """Check the media type (415) and boundary (400) before reading anything."""
    if request.content_type != "multipart/related":
        raise DicomwebError(415, f"STOW-RS takes multipart/related; type=\"application/dicom\", not {request.content_type!r}")
    header = request.headers.get("Content-Type", "")
    type_param = _param(header, "type")
    if type_param not in (None, "application/dicom"):
        raise DicomwebError(415, f"multipart/related type={type_param!r} is not supported: only application/dicom parts (Part 10 files)")
    boundary = _param(header, "boundary")
    if not boundary:
        raise DicomwebError(400, "the multipart/related Content-Type has no boundary parameter")
    try:
        return RelatedReader(request.content.readany, boundary, timeout)
    except MultipartError as exc:
        raise DicomwebError(exc.status, exc.message) from None


def _param(content_type: str, name: str) -> str | None:
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None


async def _store_part(request: web.Request, reader: RelatedReader, headers: CIMultiDict[str],
                      expected_study: str | None, max_size: int) -> Outcome:
    """Spool, check and store one part; what is not stored is skipped by the reader's next_part()."""
    kind = headers.get("Content-Type", "application/dicom").split(";")[0].strip().lower()
    if kind != "application/dicom":
        return Outcome(None, None, failure_reason=CANNOT_UNDERSTAND,
                       message=f"part of type {kind!r} is not application/dicom")
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as fp:
        md5, size = await _spool(reader, fp, max_size)
        if size > max_size:
            return Outcome(None, None, failure_reason=OUT_OF_RESOURCES,
                           message=f"the part is larger than {max_size} bytes, the largest instance this archive "
                                   "accepts (setting max_instance_size): it was not stored")
        return await store_file(request.app[COUCH], fp, md5, size, expected_study)


async def _spool(reader: RelatedReader, fp: IO[bytes], max_size: int) -> tuple[str, int]:
    """Copy the part into ``fp`` while hashing it, up to its delimiter or just past ``max_size``."""
    md5, size = hashlib.md5(), 0
    while size <= max_size and (chunk := await reader.read_chunk()):
        md5.update(chunk)
        fp.write(chunk)
        size += len(chunk)
    return md5.hexdigest(), size


def _response(request: web.Request, outcomes: list[Outcome], expected_study: str | None,
              broken: str | None) -> web.Response:
    """The store response (PS3.18 10.5.3): 200 all stored, 202 some failed, 409 none stored."""
    stored = [o for o in outcomes if o.failure_reason is None]
    failed = [o for o in outcomes if o.failure_reason is not None]
    body: dict = {}
    studies = {o.study_uid for o in stored}
    if expected_study or len(studies) == 1:
        body["00081190"] = element("UR", study_url(request, expected_study or studies.pop()))
    if failed:
        body["00081198"] = element("SQ", *[{
            "00081150": element("UI", *filter(None, [o.sop_class_uid])),
            "00081155": element("UI", *filter(None, [o.sop_instance_uid])),
            "00081197": element("US", o.failure_reason),
            "00000902": element("LO", o.message),  # ErrorComment, as dcm4chee gives it: why, in words
        } for o in failed])
    if stored:
        body["00081199"] = element("SQ", *[{
            "00081150": element("UI", o.sop_class_uid),
            "00081155": element("UI", o.sop_instance_uid),
            "00081190": element("UR", study_url(request, o.study_uid, o.series_uid, o.sop_instance_uid)),
        } for o in stored])
    status = 200 if not failed and not broken else 202 if stored else 409
    headers = {"Warning": f'299 dicomweb_couch "{broken}"'} if broken else None
    return dicom_json(body, status=status, headers=headers)
