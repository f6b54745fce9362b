"""WADO-URI (PS3.18 9): ``?requestType=WADO&studyUID=&seriesUID=&objectUID=`` returns the Part 10 file.

The document id of an instance is its SOP Instance UID, so its file is asked for at once; where
a document and its file are written in one step (Apache CouchDB), the three UIDs of the request
are checked against the file's own header in its first chunk (``dicom.identity``): one store
request per WADO-URI request. Otherwise (pouchdb-server, which gets the file before the document's
dataset), and when the header cannot tell, they are checked against the document or, for a
predecessor's document under another id, the ``instances`` view (``_find``). The file is streamed from its CouchDB attachment to the client chunk by chunk: memory
stays constant whatever the file's size, and Content-Length and ETag are passed on (a client's
If-None-Match gets a 304). From the file store the kernel sends the file (sendfile), and Range
requests are answered with 206. The Accept header is ignored, as PS3.18 9.1 makes ``contentType`` the
parameter that selects the media type; OHIF sends a multipart Accept header that must not matter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from dicomweb_couch.appkeys import COUCH, FILES
from dicomweb_couch.dicom.dicomjson import is_valid_uid
from dicomweb_couch.dicom.identity import identify
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.search.catalog import DDOC
from dicomweb_couch.store.couch import Couch
from dicomweb_couch.store.files import CHUNK, Part10File, chunks
from dicomweb_couch.store.upgrade import learn_transfer_syntax
from dicomweb_couch.web.instances import first_value

_DICOM = "application/dicom"
_HEADER = 64 * 1024  # read this much of the file, at least, to find its UIDs before the pixel data


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
    study, series, sop = uids["studyUID"], uids["seriesUID"], uids["objectUID"]
    wanted = q.get("transferSyntax", "*").strip()
    couch, files, etag = request.app[COUCH], request.app[FILES], request.headers.get("If-None-Match")
    instance, looked = None, False
    async with files.open(sop, if_none_match=etag) as found:  # the document id is the SOP Instance UID
        if found is not None:
            prefix, named = b"", None
            # The file's own header may vouch for the request only where a document and its file
            # are written in one step. pouchdb-server gets the file before the document's dataset
            # (store/couch.py, attachment-first): there the document must confirm the instance, or a
            # store cut off between the two writes would serve a file no search shows.
            if found.chunks is not None and found.status == 200 and not couch.attachment_first:
                prefix = await _prefix(found.chunks)
                named = identify(prefix)
                if named is not None and (named.study, named.series, named.sop) == (study, series, sop):
                    _check_syntax(wanted, named.transfer_syntax)
                    return await _send(request, found, prefix)
            instance, looked = await _find(couch, study, series, sop, found.doc), True
            if instance is not None and instance[0] == sop:
                known = instance[2] or (named.transfer_syntax if named else None)
                _check_syntax(wanted, await _syntax(couch, sop, known, wanted))
                return await _send(request, found, prefix)
    if not looked:
        instance = await _find(couch, study, series, sop, None)
    if instance is None:
        raise DicomwebError(404, f"no instance {sop} in series {series} of study {study}")
    doc_id, doc, stored_syntax = instance
    _check_syntax(wanted, await _syntax(couch, doc_id, stored_syntax, wanted))
    async with files.open(doc_id, doc, if_none_match=etag) as found:
        if found is None:
            raise DicomwebError(404, f"instance {sop} has no stored file")
        return await _send(request, found, b"")


async def _syntax(couch: Couch, doc_id: str, known: str | None, wanted: str) -> str | None:
    """The stored transfer syntax, when a specific one is asked for: a predecessor's document
    records none, so the file's File Meta is asked (and the answer kept in the document)."""
    if known is None and wanted != "*":
        return await learn_transfer_syntax(couch, doc_id)
    return known


def _check_syntax(wanted: str, stored: str | None) -> None:
    if wanted not in ("*", stored):
        raise DicomwebError(406, f"transferSyntax={wanted} is not available: the instance is stored as {stored}")


async def _prefix(chunks: AsyncIterator[bytes]) -> bytes:
    """The first ``_HEADER`` bytes or more of a stream (fewer if it is shorter)."""
    got: list[bytes] = []
    size = 0
    async for chunk in chunks:
        got.append(chunk)
        size += len(chunk)
        if size >= _HEADER:
            break
    return got[0] if len(got) == 1 else b"".join(got)


async def _send(request: web.Request, found: Part10File, prefix: bytes) -> web.StreamResponse:
    """The file: by sendfile from the file store (Range and ETag handled by aiohttp), or streamed on
    from CouchDB after the ``prefix`` already read from it."""
    if found.path is not None:
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
    if request.method == "HEAD":  # the headers only: a body would be read as the next response
        await response.write_eof()
        return response
    if prefix:
        await response.write(prefix)
    async for chunk in chunks(found):
        await response.write(chunk)
    await response.write_eof()
    return response


async def _find(couch: Couch, study: str, series: str, sop: str,
                doc: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None, str | None] | None:
    """(document id, the document if read, stored transfer syntax) of the instance; None if there is none.

    The document id of an instance is its SOP Instance UID, so one document GET finds it, and its
    StudyInstanceUID and SeriesInstanceUID are checked against the request (PS3.18 9.1.2: all three
    identify the object). Documents the direct read does not find or confirm (a predecessor's
    document under another id) are looked up in the ``instances`` view, as before.
    """
    doc = doc if doc is not None else await couch.get_doc(sop)
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
