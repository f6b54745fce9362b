"""STOW-RS: ``POST /studies[/{study}]`` with ``multipart/related; type="application/dicom"`` (PS3.18 10.5).

The body is read part by part: each part is spooled to a temporary file (in memory while small)
while its MD5 is computed, parsed there, and streamed from there into CouchDB, so memory does not
grow with the size of the request or of an instance. Each part succeeds or fails on its own.
"""

from __future__ import annotations

import hashlib
import tempfile
from typing import IO

from aiohttp import BodyPartReader, MultipartReader, web

from dicomweb_couch.appkeys import COUCH, FILES
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.store.ingest import CANNOT_UNDERSTAND, PROCESSING_FAILURE, Outcome, store_file
from dicomweb_couch.web.responses import dicom_json, element, study_url

_SPOOL_IN_MEMORY = 8 * 1024 * 1024
_CHUNK = 256 * 1024


async def store(request: web.Request) -> web.Response:
    expected_study = request.match_info.get("study")
    reader = _open_multipart(request)
    outcomes: list[Outcome] = []
    broken: str | None = None
    try:
        while (part := await reader.next()) is not None:
            if isinstance(part, MultipartReader):
                outcomes.append(Outcome(None, None, failure_reason=CANNOT_UNDERSTAND,
                                        message="nested multipart parts are not supported"))
                await part.release()
                continue
            outcomes.append(await _store_part(request, part, expected_study))
    except (ValueError, AssertionError, RuntimeError) as exc:  # aiohttp's words for a malformed body
        broken = f"malformed multipart body after {len(outcomes)} part(s): {exc}"
    if broken and not outcomes:
        raise DicomwebError(400, broken)
    if not outcomes:
        raise DicomwebError(400, "the multipart body holds no parts: nothing to store")
    if all(o.failure_reason == PROCESSING_FAILURE for o in outcomes):
        raise DicomwebError(503, "the database is unavailable: nothing was stored; try again later")
    return _response(request, outcomes, expected_study, broken)


def _open_multipart(request: web.Request) -> MultipartReader:
    """Check the media type (415) and boundary (400) before reading anything."""
    if request.content_type != "multipart/related":
        raise DicomwebError(415, f"STOW-RS takes multipart/related; type=\"application/dicom\", not {request.content_type!r}")
    header = request.headers.get("Content-Type", "")
    type_param = _param(header, "type")
    if type_param not in (None, "application/dicom"):
        raise DicomwebError(415, f"multipart/related type={type_param!r} is not supported: only application/dicom parts (Part 10 files)")
    if not _param(header, "boundary"):
        raise DicomwebError(400, "the multipart/related Content-Type has no boundary parameter")
    return MultipartReader(request.headers, request.content)


def _param(content_type: str, name: str) -> str | None:
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None


async def _store_part(request: web.Request, part: BodyPartReader, expected_study: str | None) -> Outcome:
    kind = part.headers.get("Content-Type", "application/dicom").split(";")[0].strip().lower()
    if kind != "application/dicom":
        await part.release()
        return Outcome(None, None, failure_reason=CANNOT_UNDERSTAND,
                       message=f"part of type {kind!r} is not application/dicom")
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as fp:
        md5, size = await _spool(part, fp)
        return await store_file(request.app[COUCH], fp, md5, size, expected_study, request.app[FILES])


async def _spool(part: BodyPartReader, fp: IO[bytes]) -> tuple[str, int]:
    md5, size = hashlib.md5(), 0
    while chunk := await part.read_chunk(_CHUNK):
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
