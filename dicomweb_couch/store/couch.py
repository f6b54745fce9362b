"""The only module that speaks to CouchDB.

Everything above this module deals in DICOM; everything here deals in CouchDB's HTTP API.
It must behave the same on Apache CouchDB 3.x (production) and pouchdb-server 4.2.0 (tests and
local runs); each workaround below names the server it is for.

aiocouch owns the connection (its session carries the credentials) and the database life cycle.
Two kinds of request go through that session directly instead of aiocouch's objects:
grouped view queries (aiocouch's ``ViewResponse`` insists on ``offset``/``total_rows``, which a
reduce answer lacks) and anything that streams (attachments in and out, which aiocouch reads
whole into memory).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote

import aiocouch
import aiohttp

log = logging.getLogger(__name__)

ATTACHMENT = "object.dcm"
"""Attachment name of the Part 10 file, as dcmjs-org/dicomweb-server stored it."""

_CHUNK = 256 * 1024
# A view query answers only once the index has caught up with the database, which after a large
# import takes many minutes (pouchdb-server: over 5 for 100,000 documents); searches do not wait
# for it (catalog.py), the background update does.
_VIEW_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=3600)
_DELETE_BATCH = 500
_JSON_HEADERS = {
    # pouchdb-server answers text/plain unless asked for JSON, which aiocouch cannot decode.
    "Accept": "application/json",
}


class CouchUnavailable(Exception):
    """CouchDB could not be reached or failed; the web layer answers 503 with this message."""


class Conflict(Exception):
    """A write lost a race with another write of the same document."""


@dataclass(frozen=True)
class Attachment:
    """An attachment being streamed from CouchDB."""

    status: int  # 200, or 304 when the client's ETag still matches
    length: int | None
    etag: str | None
    content_type: str
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class AttachmentStream:
    """An attachment being read from some offset on; ``size`` is the whole attachment's length."""

    size: int
    _content: aiohttp.StreamReader

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" at the end."""
        return await self._content.read(n)


class Couch:
    """A connection to one database on a CouchDB (or CouchDB-API) server."""

    ranges_honoured: bool | None = None
    """Whether the server answers Range requests with 206 (None until a ranged read showed it)."""

    def __init__(self, url: str, database: str, user: str | None = None, password: str | None = None):
        self.url = url.rstrip("/")
        self.database = database
        self._user, self._password = user, password
        self._server: aiocouch.CouchDB | None = None
        self._db: aiocouch.Database | None = None

    # -- life cycle ------------------------------------------------------------------------

    async def open(self, wait_seconds: float = 60.0) -> dict[str, Any]:
        """Connect, waiting for the server to come up, and create the database if missing.

        Waiting (with a log line per attempt) rather than failing lets the archive and its
        database be started together, e.g. by a process supervisor. Returns the server's
        welcome document.
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
        self._server = aiocouch.CouchDB(self.url, user=self._user, password=self._password, timeout=timeout)
        self._http.headers.update(_JSON_HEADERS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            try:
                info = await self._server.info()
                break
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                if loop.time() >= deadline:
                    await self.close()
                    raise CouchUnavailable(f"CouchDB at {self.url} did not answer within {wait_seconds:.0f} s: {exc}") from exc
                log.warning("waiting for CouchDB at %s (%s)", self.url, exc)
                await asyncio.sleep(1.0)
            except aiocouch.UnauthorizedError as exc:
                await self.close()
                raise CouchUnavailable(f"CouchDB at {self.url} refused the credentials: {exc}") from exc
        try:
            self._db = await self._server.create(self.database, exists_ok=True)
        except (aiocouch.UnauthorizedError, aiocouch.ForbiddenError) as exc:
            await self.close()
            raise CouchUnavailable(
                f"cannot create or open database {self.database!r}: {exc} (Apache CouchDB 3 needs admin credentials)"
            ) from exc
        return info

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = self._db = None

    @property
    def _http(self) -> aiohttp.ClientSession:
        assert self._server is not None, "Couch.open() first"
        return self._server._server._http_session

    def _path(self, *parts: str) -> str:
        return "/".join([self.url, quote(self.database, safe="")] + [quote(p, safe="") for p in parts])

    # -- plain JSON requests -----------------------------------------------------------------

    async def _request(self, method: str, url: str, *, ok: tuple[int, ...] = (200, 201),
                       **kwargs: Any) -> tuple[int, Any]:
        """One JSON request; statuses outside ``ok`` (and 404/409 handled by callers) raise."""
        try:
            async with self._http.request(method, url, **kwargs) as resp:
                body = await resp.read()
                data = json.loads(body) if body else None
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
            raise CouchUnavailable(f"CouchDB request {method} {url} failed: {exc!r}") from exc
        if resp.status not in ok:
            reason = data.get("reason") if isinstance(data, dict) else body[:200]
            raise CouchUnavailable(f"CouchDB answered {resp.status} to {method} {url}: {reason}")
        return resp.status, data

    async def server_info(self) -> dict[str, Any]:
        return (await self._request("GET", self.url + "/"))[1]

    async def database_info(self) -> dict[str, Any]:
        return (await self._request("GET", self._path()))[1]

    async def get_doc(self, doc_id: str) -> dict[str, Any] | None:
        """The document without attachment bodies, or None."""
        status, data = await self._request("GET", self._path(doc_id), ok=(200, 404))
        return data if status == 200 else None

    async def view(self, ddoc: str, view: str, **params: Any) -> list[dict[str, Any]]:
        """Rows of a view query; key-like parameters are JSON-encoded as CouchDB wants them."""
        query = {}
        for name, value in params.items():
            if name in ("key", "startkey", "endkey", "start_key", "end_key") or isinstance(value, bool):
                query[name] = json.dumps(value)
            else:
                query[name] = str(value)
        url = self._path("_design", ddoc, "_view", view)
        _, data = await self._request("GET", url, params=query, timeout=_VIEW_TIMEOUT)
        return data["rows"]

    async def view_keys(self, ddoc: str, view: str, keys: list[Any], **params: Any) -> list[dict[str, Any]]:
        """Rows of a view for many exact keys in one request (POST, as URLs have a length limit)."""
        url = self._path("_design", ddoc, "_view", view)
        query = {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in params.items()}
        _, data = await self._request("POST", url, params=query, json={"keys": keys}, timeout=_VIEW_TIMEOUT)
        return data["rows"]

    async def update_seq(self) -> Any:
        """The database's current sequence: opaque (a string on CouchDB 3, a number on pouchdb)."""
        return (await self.database_info())["update_seq"]

    async def changes(self, since: Any, limit: int) -> tuple[list[dict[str, Any]], Any]:
        """Up to ``limit`` changes after ``since``, without documents, and the sequence reached."""
        _, data = await self._request("GET", self._path("_changes"), params={"since": str(since), "limit": str(limit)})
        return data["results"], data["last_seq"]

    async def changes_with_docs(self, since: Any, limit: int) -> bytes:
        """Up to ``limit`` changes after ``since`` with their documents, as the raw JSON body
        (``{"results": [...], "last_seq": ...}``): megabytes, for the caller to parse off the
        event loop. Sequences are opaque (strings on CouchDB 3 clusters): only ever passed back."""
        url = self._path("_changes")
        params = {"since": str(since), "limit": str(limit), "include_docs": "true"}
        try:
            async with self._http.get(url, params=params) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise CouchUnavailable(f"CouchDB request GET {url} failed: {exc!r}") from exc
        if resp.status != 200:
            raise CouchUnavailable(f"CouchDB answered {resp.status} to GET {url}: {body[:200]!r}")
        return body

    async def latest_revisions(self, doc_ids: list[str]) -> list[dict[str, Any]]:
        """The current revision of each document, tombstones of deleted ones included (their
        bodies are kept by both servers), via the ``_doc_ids`` changes filter."""
        _, data = await self._request("POST", self._path("_changes"),
                                      params={"filter": "_doc_ids", "include_docs": "true"},
                                      json={"doc_ids": doc_ids})
        return [row["doc"] for row in data["results"] if row.get("doc")]

    # -- design documents ------------------------------------------------------------------

    async def install_design_doc(self, doc_id: str, content: Mapping[str, Any]) -> bool:
        """Create or upgrade a design document; return whether it was written.

        An unchanged document is left alone, because rewriting it makes CouchDB rebuild every
        index it defines. A GET (not HEAD, which pouchdb-server answers 404 for design
        documents) finds the current revision; a conflict means another server instance
        installed it at the same moment, so compare again.
        """
        url = self._path(*doc_id.split("/", 1))
        for _ in range(3):
            status, current = await self._request("GET", url, ok=(200, 404))
            if status == 200 and {k: current.get(k) for k in content} == dict(content):
                return False
            body = dict(content, _id=doc_id)
            if status == 200:
                body["_rev"] = current["_rev"]
            status, _ = await self._request("PUT", url, json=body, ok=(201, 202, 409))
            if status != 409:
                return True
        raise CouchUnavailable(f"design document {doc_id} kept conflicting")

    # -- instances -------------------------------------------------------------------------

    async def put_with_attachment(self, doc: dict[str, Any], fp: IO[bytes], size: int,
                                  content_type: str = "application/dicom") -> None:
        """Write a document and its file attachment in one request, streaming the file.

        This is CouchDB's multipart/related document PUT: a JSON part whose attachment stub says
        ``follows``, then the file. pouchdb-server accepts the same form only when the JSON part
        carries ``_id`` and the file part a Content-Disposition (without them it ignores the URL's
        id or crashes); Apache CouchDB ignores both, so one form serves both servers.
        Raises Conflict when ``doc`` lacks the current ``_rev`` of an existing document.
        """
        body = dict(doc)
        body["_attachments"] = {ATTACHMENT: {"follows": True, "content_type": content_type, "length": size}}
        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\nContent-Type: application/json\r\n\r\n".encode()
            + json.dumps(body, separators=(",", ":")).encode()
            + f"\r\n--{boundary}\r\nContent-Disposition: attachment; filename=\"{ATTACHMENT}\"\r\n"
              f"Content-Type: {content_type}\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        tail = f"\r\n--{boundary}--\r\n".encode()

        async def stream() -> AsyncIterator[bytes]:
            yield head
            fp.seek(0)
            while chunk := await asyncio.to_thread(fp.read, _CHUNK):
                yield chunk
            yield tail

        headers = {
            "Content-Type": f'multipart/related; boundary="{boundary}"',
            "Content-Length": str(len(head) + size + len(tail)),
        }
        status, _ = await self._request("PUT", self._path(doc["_id"]), data=stream(), headers=headers,
                                        ok=(201, 202, 409))
        if status == 409:
            raise Conflict(doc["_id"])

    @asynccontextmanager
    async def attachment(self, doc_id: str, name: str = ATTACHMENT,
                         if_none_match: str | None = None) -> AsyncIterator[Attachment | None]:
        """Stream an attachment (None if missing), passing the client's ETag check through.

        ``Accept-Encoding: identity`` because pouchdb-server would otherwise gzip the body and the
        Content-Length we pass on would no longer be the file's.
        """
        headers = {"Accept-Encoding": "identity", "Accept": "*/*"}
        if if_none_match:
            headers["If-None-Match"] = if_none_match
        try:
            async with self._http.get(self._path(doc_id, name), headers=headers, auto_decompress=False) as resp:
                if resp.status == 404:
                    yield None
                    return
                if resp.status not in (200, 304):
                    raise CouchUnavailable(f"CouchDB answered {resp.status} for attachment {doc_id}/{name}")
                yield Attachment(
                    status=resp.status,
                    length=resp.content_length if resp.status == 200 else None,
                    etag=resp.headers.get("ETag"),
                    content_type=resp.headers.get("Content-Type", "application/octet-stream"),
                    chunks=resp.content.iter_chunked(_CHUNK),
                )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise CouchUnavailable(f"reading attachment {doc_id}/{name} failed: {exc!r}") from exc

    @asynccontextmanager
    async def attachment_from(self, doc_id: str, offset: int = 0,
                              name: str = ATTACHMENT) -> AsyncIterator[AttachmentStream | None]:
        """Read an attachment from byte ``offset`` (less than its size) on; None if it is missing.

        A ``Range`` request where the server honours it (Apache CouchDB answers 206); pouchdb-server
        ignores Range and sends the whole attachment with 200, whose first ``offset`` bytes are
        then read and dropped here. ``ranges_honoured`` records which of the two this server does.
        """
        headers = {"Accept-Encoding": "identity", "Accept": "*/*"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            async with self._http.get(self._path(doc_id, name), headers=headers, auto_decompress=False) as resp:
                if resp.status == 404:
                    yield None
                    return
                if resp.status == 206:
                    self.ranges_honoured = True
                    size = int(resp.headers.get("Content-Range", "/0").rpartition("/")[2])
                elif resp.status == 200:
                    if offset:
                        self.ranges_honoured = False
                    size = resp.content_length or 0
                    skip = offset
                    while skip > 0 and (dropped := await resp.content.read(min(skip, _CHUNK))):
                        skip -= len(dropped)
                else:
                    raise CouchUnavailable(f"CouchDB answered {resp.status} for attachment {doc_id}/{name}")
                yield AttachmentStream(size, resp.content)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise CouchUnavailable(f"reading attachment {doc_id}/{name} failed: {exc!r}") from exc

    async def delete_instances(self, instances: Mapping[str, str]) -> int:
        """Delete instance documents (id -> StudyInstanceUID) in bulk; return how many were deleted.

        The current revisions come from ``_all_docs`` (no document bodies), the deletions go in one
        ``_bulk_docs`` request per batch. Each tombstone keeps the StudyInstanceUID, so whoever
        follows the changes feed (the study catalog) knows which study lost an instance; the
        attachment goes with the deleted revision (its space comes back at compaction). A
        document changed meanwhile (a conflict) is deleted again with its new revision.
        """
        deleted = 0
        pending = list(instances)
        for _ in range(5):
            conflicts: list[str] = []
            for start in range(0, len(pending), _DELETE_BATCH):
                batch = pending[start:start + _DELETE_BATCH]
                _, found = await self._request("POST", self._path("_all_docs"), json={"keys": batch})
                docs = [{"_id": row["id"], "_rev": row["value"]["rev"], "_deleted": True,
                         "dataset": {"0020000D": {"vr": "UI", "Value": [instances[row["id"]]]}}}
                        for row in found["rows"] if "value" in row and not row["value"].get("deleted")]
                if not docs:
                    continue
                _, results = await self._request("POST", self._path("_bulk_docs"), json={"docs": docs})
                deleted += sum(1 for r in results if "error" not in r)
                conflicts += [r["id"] for r in results if r.get("error") == "conflict"]
                failed = [r for r in results if "error" in r and r.get("error") != "conflict"]
                if failed:
                    raise CouchUnavailable(f"CouchDB refused to delete {failed[0]['id']}: {failed[0].get('reason')}")
            if not conflicts:
                return deleted
            pending = conflicts
        raise CouchUnavailable(f"instance {pending[0]} kept conflicting with concurrent writes")

    async def store_instance(self, doc: dict[str, Any], fp: IO[bytes], size: int) -> bool:
        """Store an instance document with its Part 10 file; False if that very file is already there.

        The first PUT carries no revision, so a new instance costs one write. On a conflict the
        stored ``md5hash`` (the predecessor's field) tells a repeated store, which is left alone,
        from a new version of the instance, which replaces the old one.
        """
        doc = dict(doc)
        for _ in range(5):
            try:
                await self.put_with_attachment(doc, fp, size)
                return True
            except Conflict:
                current = await self.get_doc(doc["_id"])
                if current is None:  # deleted meanwhile: write without a revision
                    doc.pop("_rev", None)
                    continue
                if current.get("md5hash") == doc.get("md5hash") and ATTACHMENT in current.get("_attachments", {}):
                    return False
                doc["_rev"] = current["_rev"]
        raise CouchUnavailable(f"instance {doc['_id']} kept conflicting with concurrent writes")
