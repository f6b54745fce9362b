"""The only module that speaks to CouchDB.

Everything above this module deals in DICOM; everything here deals in CouchDB's HTTP API.
It must behave the same on Apache CouchDB 3.x (production) and pouchdb-server 4.2.0 (tests and
local runs); each workaround below names the server it is for.

aiocouch owns the connection (its session carries the credentials) and the database life cycle.
Two kinds of request go through that session directly instead of aiocouch's objects:
grouped view queries (aiocouch's ``ViewResponse`` insists on ``offset``/``total_rows``, which a
reduce answer lacks) and anything that streams (attachments in and out, which aiocouch reads
whole into memory).

**Bounded waits.** Every request is bounded by ``timeout`` (setting ``couch_timeout``): when no
answer has come after half of it, a ``GET /`` asks whether the server still answers; if that
fails too (a stopped, frozen or unreachable store), the request is abandoned and
:class:`CouchUnavailable` raised, so the client gets a 503 within ``timeout``. A server that
answers the probe is busy, not stuck, and the request may go on: uploads for as long as the
server keeps answering (a bulk write or an upload takes what it takes), view queries up to ``view_timeout``
(setting ``couch_view_timeout``; they wait for the index to catch up), and then
:class:`IndexNotReady`. Apache CouchDB itself gives up on a view after 60 s of index building
(``fabric`` ``request_timeout``) with a 500 ``timeout``, which is the same "not ready yet".

**What an answer means.** Connection errors, timeouts and 5xx are :class:`CouchUnavailable`
(503 + Retry-After); a 4xx other than 401/403/404 (which mean the store is misconfigured) is the
request's fault, :class:`CouchRefused`, which the web layer answers with a 4xx.

**How an instance is written** depends on the server, detected from its welcome document:
Apache CouchDB takes the document and its file in one multipart/related PUT (the fastest form
there); pouchdb-server crashes, whole process, when such an upload is cut off (an archive killed
mid-STOW), so there the file goes first as a standalone attachment PUT (which it survives) and the
document follows (see :meth:`Couch.put_with_attachment`).
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO, Any, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aiocouch
import aiohttp

log = logging.getLogger(__name__)

ATTACHMENT = "object.dcm"
"""Attachment name of the Part 10 file, as dcmjs-org/dicomweb-server stored it."""

_CHUNK = 256 * 1024
T = TypeVar("T")
POUCHDB_BUSY_BYTES_PER_SECOND = 2**20 / 2
"""pouchdb-server (Node, one thread) answers nothing, not even ``GET /``, while it stores an
attachment: measured 12 s for 32 MiB on a loaded machine. So while a file goes in, unanswered
probes are forgiven for 2 s per MiB; Apache CouchDB answers probes while it writes and needs no such grace."""
POUCHDB_MAX_ATTACHMENT = 100 * 2**20
"""The largest file pouchdb-server 4.2.0 stores (measured: 100 MiB stored in ~2 min; 128 MiB
refused with 500 "Invalid array length"; 300 MiB kills the process, whatever its V8 heap). Larger
instances are refused before a byte is sent (413), so no client can take the local store down."""
_STREAM_CHUNK = 1024 * 1024  # what an attachment read hands on at most per write: fewer, larger writes
_DELETE_BATCH = 500
_JSON_HEADERS = {
    # pouchdb-server answers text/plain unless asked for JSON, which aiocouch cannot decode.
    "Accept": "application/json",
    # pouchdb-server gzips every answer unless told not to: CPU on both sides for loopback bytes.
    "Accept-Encoding": "identity",
}


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its user and password, and those two (None when absent).

    ``http://admin:SECRET@host:5984`` is how CouchDB URLs are often written; the password must
    then travel as the session's basic auth only, never inside a URL that ends up in a log line
    or an error message.
    """
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    user, password = parts.username, parts.password
    return (urlunsplit(parts._replace(netloc=netloc)), unquote(user) if user is not None else None,
            unquote(password) if password is not None else None)


REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The id of the client request being served (set by the web layer), sent to CouchDB as
``X-Request-ID`` so a request can be followed from our log into a proxy's or CouchDB's."""

StoreObserver = Callable[[str, float, "str | None"], None]
"""Told of every JSON request to CouchDB: method, seconds taken, and an error kind or None."""


def seq_number(seq: object) -> int:
    """The number in a sequence: pouchdb-server's are numbers; Apache CouchDB 3's are opaque strings
    ``"N-g1AAAA..."`` whose N grows with the changes (a sum over shards in a cluster), which is
    good enough to measure a lag with."""
    try:
        return int(str(seq).split("-", 1)[0])
    except ValueError:
        return 0


class CouchUnavailable(Exception):
    """CouchDB could not be reached or failed; the web layer answers 503 with this message."""


class IndexNotReady(CouchUnavailable):
    """A view query waited ``view_timeout`` for its index to catch up (or Apache CouchDB gave up
    after its own 60 s): the store works, the index is being built; try again later."""


class CouchRefused(Exception):
    """CouchDB refused a request as malformed or too large (a 4xx such as 400, 413, 414): the
    request's fault, not an outage."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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
    _timeout: float

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" at the end. A store that sends nothing for ``timeout`` seconds
        is unavailable (the clock runs only while we wait for it, not while a slow client reads)."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._content.read(n)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise CouchUnavailable(f"reading an attachment stalled or failed: {exc!r}") from exc


class Couch:
    """A connection to one database on a CouchDB (or CouchDB-API) server."""

    ranges_honoured: bool | None = None
    """Whether the server answers Range requests with 206 (None until a ranged read showed it)."""

    def __init__(self, url: str, database: str, user: str | None = None, password: str | None = None,
                 timeout: float = 10.0, view_timeout: float = 60.0):
        self.url, url_user, url_password = split_credentials(url.rstrip("/"))
        self.database = database
        self.timeout = timeout
        self.view_timeout = view_timeout
        self._user = user if user is not None else url_user
        self._password = password if password is not None else url_password
        self._server: aiocouch.CouchDB | None = None
        self._db: aiocouch.Database | None = None
        self.attachment_first = False
        """The write form (module docstring): set by open() from the welcome document (a benchmark may
        override it to compare the forms)."""
        self._probe: asyncio.Future[bool] | None = None
        self._answered_at = float("-inf")
        self.observer: StoreObserver | None = None

    # -- life cycle ------------------------------------------------------------------------

    async def open(self, wait_seconds: float = 60.0) -> dict[str, Any]:
        """Connect, waiting for the server to come up, and create the database if missing.

        Waiting (with a log line per attempt) rather than failing lets the archive and its
        database be started together, e.g. by a process supervisor. Returns the server's
        welcome document.
        """
        # No read timeout here: _bounded() and AttachmentStream.read() bound every wait.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
        self._server = aiocouch.CouchDB(self.url, user=self._user, password=self._password, timeout=timeout)
        self._http.headers.update(_JSON_HEADERS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            try:
                async with asyncio.timeout(self.timeout):
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
            async with asyncio.timeout(self.timeout):
                self._db = await self._server.create(self.database, exists_ok=True)
        except (aiocouch.UnauthorizedError, aiocouch.ForbiddenError) as exc:
            await self.close()
            raise CouchUnavailable(
                f"cannot create or open database {self.database!r}: {exc} (Apache CouchDB 3 needs admin credentials)"
            ) from exc
        except asyncio.TimeoutError as exc:
            await self.close()
            raise CouchUnavailable(f"CouchDB did not open database {self.database!r} within {self.timeout:g} s") from exc
        # pouchdb-server's welcome names express-pouchdb; Apache CouchDB's says "couchdb": "Welcome".
        self.attachment_first = "express-pouchdb" in info
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

    # -- bounded waits ------------------------------------------------------------------------

    async def _answers(self, since: float) -> bool:
        """Whether the server answered anything after ``since`` and within the last half timeout,
        or else answers ``GET /`` within half the timeout. Concurrent callers share one probe, so a
        slow burst costs one probe, not one each."""
        loop = asyncio.get_running_loop()
        if self._answered_at >= max(since, loop.time() - self.timeout / 2):
            return True
        if self._probe is None:
            self._probe = asyncio.ensure_future(self._ping())
        probe = self._probe
        try:
            return await asyncio.shield(probe)
        finally:
            if probe.done() and self._probe is probe:
                self._probe = None

    async def _ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout / 2):
                async with self._http.get(self.url + "/") as resp:
                    await resp.read()
                    answered = resp.status < 500
        except (aiohttp.ClientError, asyncio.TimeoutError):
            answered = False
        if answered:
            self._answered_at = asyncio.get_running_loop().time()
        return answered

    async def _bounded(self, work: Awaitable[T], what: str, patience: float | None, grace: float = 0.0) -> T:
        """Await ``work`` while the server answers probes, for at most ``patience`` seconds (None:
        as long as it answers); raise CouchUnavailable as soon as it does not (see the module
        docstring), IndexNotReady when patience runs out. Unanswered probes are forgiven for the
        first ``grace`` seconds. ``work`` is cancelled either way."""
        task = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        started = loop.time()
        forgiven_until = started + grace
        deadline = None if patience is None else loop.time() + patience
        try:
            while True:
                step = self.timeout / 2 if deadline is None else min(self.timeout / 2, deadline - loop.time())
                done, _ = await asyncio.wait({task}, timeout=max(step, 0))
                if done:
                    result = task.result()
                    self._answered_at = loop.time()
                    return result
                if deadline is not None and loop.time() >= deadline:
                    raise IndexNotReady(f"{what} did not finish within {patience:g} s")
                if not await self._answers(started) and not task.done() and loop.time() >= forgiven_until:
                    raise CouchUnavailable(f"CouchDB did not answer {what} within {self.timeout:g} s")
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # -- plain JSON requests -----------------------------------------------------------------

    async def _request(self, method: str, url: str, *, ok: tuple[int, ...] = (200, 201),
                       view: bool = False, grace: float = 0.0, **kwargs: Any) -> tuple[int, Any]:
        """One JSON request; statuses outside ``ok`` (and 404/409 handled by callers) raise.

        It may take as long as the server keeps answering probes (a bulk write, an upload whose
        time depends on its size), but a view query (``view``) only ``view_timeout``: its
        slowness means an index being built (IndexNotReady). ``grace``: see :meth:`_bounded`.
        """
        if request_id := REQUEST_ID.get():
            kwargs["headers"] = {**kwargs.get("headers", {}), "X-Request-ID": request_id}
        started = time.monotonic()

        async def call() -> tuple[int, bytes]:
            async with self._http.request(method, url, **kwargs) as resp:
                return resp.status, await resp.read()

        what = f"{method} {url}"
        try:
            status, body = await self._bounded(call(), what, self.view_timeout if view else None, grace)
            data = json.loads(body) if body else None
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
            self._observe(method, started, type(exc).__name__)
            raise CouchUnavailable(f"CouchDB request {method} {url} failed: {exc!r}") from exc
        except CouchUnavailable as exc:  # no answer within the bounds (_bounded)
            self._observe(method, started, type(exc).__name__)
            raise
        self._observe(method, started, None if status in ok else str(status))
        if status not in ok:
            raise _refusal(status, data if isinstance(data, dict) else {"reason": body[:200]}, what, view)
        return status, data

    def _observe(self, method: str, started: float, error: str | None) -> None:
        if self.observer is not None:
            self.observer(method, time.monotonic() - started, error)

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
        _, data = await self._request("GET", url, params=query, view=True)
        return data["rows"]

    async def view_keys(self, ddoc: str, view: str, keys: list[Any], **params: Any) -> list[dict[str, Any]]:
        """Rows of a view for many exact keys in one request (POST, as URLs have a length limit)."""
        url = self._path("_design", ddoc, "_view", view)
        query = {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in params.items()}
        _, data = await self._request("POST", url, params=query, json={"keys": keys}, view=True)
        return data["rows"]

    async def view_update_seq(self, ddoc: str, view: str) -> Any:
        """The database sequence a view's index has caught up with, without updating it.

        ``stale=ok`` (deprecated on CouchDB 3 but still meaning ``update=false&stable=true``) is the
        one form both servers honour; pouchdb-server ignores ``update=false``.
        """
        url = self._path("_design", ddoc, "_view", view)
        _, data = await self._request("GET", url, params={"limit": "0", "stale": "ok", "update_seq": "true"})
        return data.get("update_seq")

    async def doc_ids(self, after: str | None, limit: int) -> list[str]:
        """Up to ``limit`` document ids (design documents included) in id order, after ``after``."""
        params = {"limit": str(limit)}
        if after is not None:
            params.update(startkey=json.dumps(after), skip="1")
        _, data = await self._request("GET", self._path("_all_docs"), params=params)
        return [row["id"] for row in data["rows"]]

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

        async def call() -> tuple[int, bytes]:
            async with self._http.get(url, params=params) as resp:
                return resp.status, await resp.read()

        try:  # bounded like every other request (see _bounded): a frozen store is a 503, not a hang
            status, body = await self._bounded(call(), f"GET {url}", None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise CouchUnavailable(f"CouchDB request GET {url} failed: {exc!r}") from exc
        if status != 200:
            raise CouchUnavailable(f"CouchDB answered {status} to GET {url}: {body[:200]!r}")
        return body

    async def latest_revisions(self, doc_ids: list[str]) -> list[dict[str, Any]]:
        """The current revision of each document, tombstones of deleted ones included (their
        bodies are kept by both servers), via the ``_doc_ids`` changes filter."""
        _, data = await self._request("POST", self._path("_changes"),
                                      params={"filter": "_doc_ids", "include_docs": "true"},
                                      json={"doc_ids": doc_ids})
        return [row["doc"] for row in data["results"] if row.get("doc")]

    async def put_doc(self, doc: dict[str, Any]) -> str:
        """Write a whole document and return its new revision; attachment stubs (``"stub": true``,
        as a GET returns them) keep the attachments. Raises Conflict unless ``_rev`` is current."""
        status, data = await self._request("PUT", self._path(doc["_id"]), json=doc, ok=(201, 202, 409))
        if status == 409:
            raise Conflict(doc["_id"])
        return data["rev"]

    async def all_docs(self, after: str | None, limit: int, conflicts: bool = False) -> list[dict[str, Any]]:
        """Up to ``limit`` documents (bodies, no attachments) in id order, from the first id after ``after``;
        with ``conflicts``, each conflicted one lists its losing revisions in ``_conflicts``."""
        params = {"include_docs": "true", "limit": str(limit + 1 if after is not None else limit)}
        if conflicts:
            params["conflicts"] = "true"
        if after is not None:
            params["startkey"] = json.dumps(after)
        _, data = await self._request("GET", self._path("_all_docs"), params=params)
        docs = [row["doc"] for row in data["rows"] if row.get("doc")]
        return [d for d in docs if d["_id"] != after][:limit]

    async def get_revision(self, doc_id: str, rev: str) -> dict[str, Any] | None:
        """One revision of a document (a losing one of a conflict too), or None if it is gone."""
        status, data = await self._request("GET", self._path(doc_id), params={"rev": rev}, ok=(200, 404))
        return data if status == 200 else None

    async def get_local(self, name: str) -> dict[str, Any] | None:
        """A ``_local`` document (never replicated, not in views or ``_all_docs``), or None."""
        status, data = await self._request("GET", self._path("_local", name), ok=(200, 404))
        return data if status == 200 else None

    async def put_local(self, name: str, body: dict[str, Any]) -> None:
        """Write a ``_local`` document, over whatever revision is there."""
        current = await self.get_local(name)
        body = dict(body, _rev=current["_rev"]) if current else dict(body)
        await self._request("PUT", self._path("_local", name), json=body)

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
        """Write a document and its file attachment, streaming the file, in the form this server
        survives (module docstring). Raises Conflict when ``doc`` lacks the current ``_rev`` of an
        existing document."""
        if self.attachment_first:
            if size > POUCHDB_MAX_ATTACHMENT:
                raise CouchRefused(413, f"pouchdb-server takes files up to {POUCHDB_MAX_ATTACHMENT // 2**20} MiB, "
                                        f"this one has {size} bytes (Apache CouchDB has no such limit)")
            await self._put_attachment_first(doc, fp, size, content_type)
        else:
            await self._put_multipart(doc, fp, size, content_type)

    async def _put_multipart(self, doc: dict[str, Any], fp: IO[bytes], size: int, content_type: str) -> None:
        """Apache CouchDB: the document and its file in one request, CouchDB's multipart/related
        document PUT: a JSON part whose attachment stub says ``follows``, then the file. (The JSON
        part carries ``_id`` and the file part a Content-Disposition, which pouchdb-server needs
        for this form and Apache CouchDB ignores.)"""
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
            async for chunk in _file_chunks(fp):
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

    async def _put_attachment_first(self, doc: dict[str, Any], fp: IO[bytes], size: int, content_type: str) -> None:
        """pouchdb-server 4.2.0: the file as a standalone attachment PUT, then the document.

        An aborted multipart PUT kills pouchdb-server; an aborted attachment PUT only stores what
        arrived. So nothing readers see may carry the attachment while it is uploaded: a new
        document gets its ``dataset`` (what every view and look-up keys on) only in the second
        write, and an existing one is first emptied (its old file and dataset go, so an upload cut
        off here leaves an invisible document, never a truncated file behind a dataset). The second
        write names the attachment by its MD5 digest, which pouchdb-server checks (412
        ``missing_stub`` for anything else): a file that arrived incomplete is never acknowledged.
        """
        doc_url = self._path(doc["_id"])
        rev = doc.get("_rev")
        if rev is not None:
            rev = await self._put_empty(doc["_id"], rev)
        for _ in range(2):
            status, data = await self._request(
                "PUT", self._path(doc["_id"], ATTACHMENT), params={"rev": rev} if rev else {}, data=_file_chunks(fp),
                headers={"Content-Type": content_type, "Content-Length": str(size)}, ok=(201, 202, 404, 409),
                grace=size / POUCHDB_BUSY_BYTES_PER_SECOND)
            if status != 404 or rev is not None:
                break
            # pouchdb-server refuses an attachment PUT on a deleted document: create it anew first
            rev = await self._put_empty(doc["_id"], None)
        if status == 409:
            raise Conflict(doc["_id"])
        if status == 404:
            raise CouchUnavailable(f"CouchDB lost document {doc['_id']} while its file was written")
        md5 = doc.get("md5hash") or await asyncio.to_thread(_md5_hex, fp)
        stub = {"stub": True, "content_type": content_type, "length": size,
                "digest": "md5-" + base64.b64encode(bytes.fromhex(md5)).decode()}
        body = dict(doc, _rev=data["rev"], _attachments={ATTACHMENT: stub})
        status, _ = await self._request("PUT", doc_url, json=body, ok=(201, 202, 409, 412))
        if status == 409:
            raise Conflict(doc["_id"])
        if status == 412:
            raise CouchUnavailable(f"CouchDB kept a different file for {doc['_id']} than was sent (upload cut off?)")

    async def _put_empty(self, doc_id: str, rev: str | None) -> str:
        """Write ``doc_id`` as an empty document (no dataset, no file); its new revision."""
        body = {"_id": doc_id} if rev is None else {"_id": doc_id, "_rev": rev}
        status, data = await self._request("PUT", self._path(doc_id), json=body, ok=(201, 202, 409))
        if status == 409:
            raise Conflict(doc_id)
        return data["rev"]

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
        async with self._get_attachment(doc_id, name, headers) as resp:
            if resp.status == 404:
                yield None
                return
            if resp.status not in (200, 304):
                raise _refusal(resp.status, {}, f"GET attachment {doc_id}/{name}")
            stream = AttachmentStream(resp.content_length or 0, resp.content, self.timeout)
            yield Attachment(
                status=resp.status,
                length=resp.content_length if resp.status == 200 else None,
                etag=resp.headers.get("ETag"),
                content_type=resp.headers.get("Content-Type", "application/octet-stream"),
                chunks=_chunks(stream),
            )

    @asynccontextmanager
    async def _get_attachment(self, doc_id: str, name: str,
                              headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to an attachment GET, its headers awaited within the bounded wait (pouchdb-
        server reads a whole attachment before it answers: a large one may take a while)."""
        what = f"GET attachment {doc_id}/{name}"
        try:
            resp = await self._bounded(
                self._http.get(self._path(doc_id, name), headers=headers, auto_decompress=False,
                               read_bufsize=_STREAM_CHUNK), what, None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise CouchUnavailable(f"reading attachment {doc_id}/{name} failed: {exc!r}") from exc
        try:
            yield resp
        finally:
            resp.release()

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
        async with self._get_attachment(doc_id, name, headers) as resp:
            if resp.status == 404:
                yield None
                return
            if resp.status == 206:
                self.ranges_honoured = True
                stream = AttachmentStream(int(resp.headers.get("Content-Range", "/0").rpartition("/")[2]),
                                          resp.content, self.timeout)
            elif resp.status == 200:
                if offset:
                    self.ranges_honoured = False
                stream = AttachmentStream(resp.content_length or 0, resp.content, self.timeout)
                skip = offset
                while skip > 0 and (dropped := await stream.read(min(skip, _CHUNK))):
                    skip -= len(dropped)
            else:
                raise _refusal(resp.status, {}, f"GET attachment {doc_id}/{name}")
            yield stream

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

    async def holds_file(self, doc_id: str, md5: str) -> bool:
        """Whether the instance document exists with this very file (its ``md5hash``) attached."""
        return _holds(await self.get_doc(doc_id), md5)

    async def node_config(self) -> dict[str, Any] | None:
        """The node's configuration (``GET /_node/_local/_config``, Apache CouchDB 3 with admin
        rights); None when it cannot be read: no admin rights, or pouchdb-server, which has no such
        endpoint."""
        status, data = await self._request("GET", self.url + "/_node/_local/_config", ok=(200, 400, 401, 403, 404))
        return data if status == 200 and isinstance(data, dict) else None

    async def store_instance(self, doc: dict[str, Any], fp: IO[bytes] | None, size: int,
                             patience: float = 60.0) -> bool:
        """Store an instance document with its Part 10 file; False if that very file is already there.

        ``fp`` None: the document refers to its file in the file store (``file_store.py``) and is
        written alone.

        The first PUT carries no revision, so a new instance costs one write. On a conflict the
        stored ``md5hash`` (the predecessor's field) tells a repeated store, which is left alone,
        from a new version of the instance, which replaces the old one: last write wins, and
        True means this version was stored (a concurrent writer may replace it a moment later).

        Writers of one SOP Instance UID at the same moment conflict with each other, and of N
        of them the last needs N rounds; so a conflict is no outage and there is no fixed number
        of tries: each one re-reads the revision and tries again after a short random pause,
        for up to ``patience`` seconds. Only then :class:`Conflict` is raised: the instance was
        not stored because other versions of it kept arriving, while the database was fine.
        """
        doc = dict(doc)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        attempt = 0
        while True:
            try:
                await (self.put_doc(doc) if fp is None else self.put_with_attachment(doc, fp, size))
                return True
            except Conflict:
                current = await self.get_doc(doc["_id"])
                if current is None:  # deleted meanwhile: write without a revision
                    doc.pop("_rev", None)
                elif _holds(current, doc.get("md5hash")):
                    return False
                else:
                    doc["_rev"] = current["_rev"]
                if loop.time() >= deadline:
                    raise
                attempt += 1
                await asyncio.sleep(random.uniform(0, min(1.0, 0.01 * 2 ** attempt)))


def _refusal(status: int, data: dict[str, Any], what: str, view: bool = False) -> Exception:
    """The exception for an unexpected answer (module docstring, "What an answer means")."""
    reason = data.get("reason") or data.get("error") or ""
    if view and status == 500 and data.get("error") == "timeout":  # Apache CouchDB building an index
        return IndexNotReady(f"CouchDB is still building the index of {what}")
    if 400 <= status < 500 and status not in (401, 403, 404):
        return CouchRefused(status, f"CouchDB refused {what} ({status}: {reason})")
    return CouchUnavailable(f"CouchDB answered {status} to {what}: {reason}")


async def _file_chunks(fp: IO[bytes]) -> AsyncIterator[bytes]:
    """The whole file from its start, read in a thread chunk by chunk."""
    fp.seek(0)
    while chunk := await asyncio.to_thread(fp.read, _STREAM_CHUNK):
        yield chunk


async def _chunks(stream: AttachmentStream) -> AsyncIterator[bytes]:
    while chunk := await stream.read(_STREAM_CHUNK):
        yield chunk


def _md5_hex(fp: IO[bytes]) -> str:
    fp.seek(0)
    return hashlib.file_digest(fp, "md5").hexdigest()  # type: ignore[arg-type]


def _holds(doc: dict[str, Any] | None, md5: str | None) -> bool:
    """Whether ``doc`` is an instance with this very file: attached, or in the file store (``file``)."""
    return (doc is not None and doc.get("md5hash") == md5
            and (ATTACHMENT in doc.get("_attachments", {}) or "file" in doc))
