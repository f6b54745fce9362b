"""WADO-URI (PS3.18 9): ``?requestType=WADO&studyUID=&seriesUID=&objectUID=`` returns the Part 10 file.

The instance is found by one document read (its id is the SOP Instance UID; see ``_find``), and
its file streamed from its CouchDB attachment to the client chunk by chunk: memory stays
constant whatever the file's size, and Content-Length and ETag are passed on (a client's
If-None-Match gets a 304). From the file store the kernel sends the file (sendfile), and Range
requests are answered with 206. The Accept header is ignored, as PS3.18 9.1 makes ``contentType`` the
parameter that selects the media type; OHIF sends a multipart Accept header that must not matter.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dicomweb_couch.appkeys import COUCH, FILES
from dicomweb_couch.dicom.dicomjson import is_valid_uid
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.search.catalog import DDOC
from dicomweb_couch.store.couch import Couch
from dicomweb_couch.store.files import CHUNK, chunks
from dicomweb_couch.web.instances import first_value

_DICOM = "application/dicom"


async def retrieve(request: web.Request) -> web.StreamResponse:
    q = request.query
    if q.get("requestType") != "WADO":
        raise DicomwebError(400, f"requestType must be WADO (PS3.18 9.1), not {q.get('requestType')!r}")
    uids = {}
    for name in ("studyUID", "seriesUID", "objectUID"):
        value = q.get(name, "").strip()
        if not value:
            raise DicomwebError(400, f"the {name} parameter is required")
        if not is_valid_uid(value):
            raise DicomwebError(400, f"{name}={value!r} is not a valid UID (digits and dots, at most 64 characters)")
        uids[name] = value
    content_type = q.get("contentType", _DICOM).split(";")[0].strip().lower()
    if content_type not in (_DICOM, "*/*"):
        raise DicomwebError(406, f"contentType={content_type!r} is not available: this server returns {_DICOM}")
    instance = await _find(request.app[COUCH], uids["studyUID"], uids["seriesUID"], uids["objectUID"])
    if instance is None:
        raise DicomwebError(404, f"no instance {uids['objectUID']} in series {uids['seriesUID']} of study {uids['studyUID']}")
    doc_id, doc, stored_syntax = instance
    wanted_syntax = q.get("transferSyntax", "*").strip()
    if wanted_syntax not in ("*", stored_syntax):
        raise DicomwebError(406, f"transferSyntax={wanted_syntax} is not available: the instance is stored as {stored_syntax}")
    async with request.app[FILES].open(doc_id, doc, if_none_match=request.headers.get("If-None-Match")) as found:
        if found is None:
            raise DicomwebError(404, f"instance {uids['objectUID']} has no stored file")
        if found.path is not None:  # the file store: sendfile, with Range and ETag handled by aiohttp
            return web.FileResponse(found.path, chunk_size=CHUNK, headers={"Content-Type": _DICOM})
        if found.status == 304:
            return web.Response(status=304, headers={"ETag": found.etag or ""})
        headers = {"Content-Type": _DICOM}
        if found.etag:
            headers["ETag"] = found.etag
        response = web.StreamResponse(headers=headers)
        if found.size is not None:
            response.content_length = found.size
        await response.prepare(request)
        async for chunk in chunks(found):
            await response.write(chunk)
        await response.write_eof()
        return response


async def _find(couch: Couch, study: str, series: str, sop: str) -> tuple[str, dict[str, Any] | None, str | None] | None:
    """(document id, the document if read, stored transfer syntax) of the instance; None if there is none.

    The document id of an instance is its SOP Instance UID, so one document GET finds it, and its
    StudyInstanceUID and SeriesInstanceUID are checked against the request (PS3.18 9.1.2: all three
    identify the object). Documents the direct read does not find or confirm (a predecessor's
    document under another id) are looked up in the ``instances`` view, as before.
    """
    doc = await couch.get_doc(sop)
    if doc is not None:
        dataset = doc.get("dataset") or {}
        if (first_value(dataset, "0020000D"), first_value(dataset, "0020000E"),
                first_value(dataset, "00080018") or doc["_id"]) == (study, series, sop):
            syntax = doc.get("transferSyntaxUID")
            return doc["_id"], doc, syntax if isinstance(syntax, str) else None
    rows = await couch.view(DDOC, "instances", key=[study, series, sop])
    if not rows:
        return None
    return rows[0]["id"], None, first_value(rows[0]["value"], "00083002")
