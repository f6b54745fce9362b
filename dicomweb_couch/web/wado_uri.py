"""WADO-URI (PS3.18 9): ``?requestType=WADO&studyUID=&seriesUID=&objectUID=`` returns the Part 10 file.

The file is streamed from its CouchDB attachment to the client chunk by chunk: memory stays
constant whatever the file's size, and Content-Length and ETag are passed on (a client's
If-None-Match gets a 304). The Accept header is ignored, as PS3.18 9.1 makes ``contentType`` the
parameter that selects the media type; OHIF sends a multipart Accept header that must not matter.
"""

from __future__ import annotations

from aiohttp import web

from dicomweb_couch.appkeys import COUCH
from dicomweb_couch.dicom.dicomjson import is_valid_uid
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.search.catalog import DDOC
from dicomweb_couch.store.upgrade import learn_transfer_syntax

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
    couch = request.app[COUCH]
    rows = await couch.view(DDOC, "instances", key=[uids["studyUID"], uids["seriesUID"], uids["objectUID"]])
    if not rows:
        raise DicomwebError(404, f"no instance {uids['objectUID']} in series {uids['seriesUID']} of study {uids['studyUID']}")
    wanted_syntax = q.get("transferSyntax", "*").strip()
    stored_syntax = ((rows[0]["value"].get("00083002") or {}).get("Value") or [None])[0]
    if stored_syntax is None and wanted_syntax != "*":  # a predecessor's document: ask the file
        stored_syntax = await learn_transfer_syntax(couch, rows[0]["id"])
    if wanted_syntax not in ("*", stored_syntax):
        raise DicomwebError(406, f"transferSyntax={wanted_syntax} is not available: the instance is stored as {stored_syntax}")
    async with couch.attachment(rows[0]["id"], if_none_match=request.headers.get("If-None-Match")) as attachment:
        if attachment is None:
            raise DicomwebError(404, f"instance {uids['objectUID']} has no stored file")
        headers = {"Content-Type": _DICOM}
        if attachment.etag:
            headers["ETag"] = attachment.etag
        if attachment.status == 304:
            return web.Response(status=304, headers={"ETag": attachment.etag or ""})
        response = web.StreamResponse(headers=headers)
        if attachment.length is not None:
            response.content_length = attachment.length
        await response.prepare(request)
        async for chunk in attachment.chunks:
            await response.write(chunk)
        await response.write_eof()
        return response
