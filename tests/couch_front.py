"""A loopback front for the tests' real CouchDB-API store that answers what Apache CouchDB 3 answers
where pouchdb-server answers differently, so that code paths only Apache CouchDB takes run in tests.

Everything is forwarded to the real server behind it, and its answer passed back, except:

- ``ranges``: a ``GET`` of an attachment with ``Range: bytes=N-`` is answered ``206 Partial
  Content`` with ``Content-Range``, the bytes cut from the whole attachment the real server sent
  (Apache CouchDB 3.5 does this, checked; pouchdb-server ignores Range and answers 200);
- ``refuse_create``: ``PUT /{db}`` is answered 401 with Apache CouchDB's body for a user who is
  not a server admin (pouchdb-server in "admin party" lets anyone create a database).

``requests`` records (method, path, Range header) of what came in. Start it with pytest-aiohttp's
``aiohttp_server`` fixture: ``server = await aiohttp_server(CouchFront(url).app())``.
"""

from __future__ import annotations

import re

import aiohttp
from aiohttp import web

_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding",
               "content-encoding"}
_ATTACHMENT = re.compile(r"^/[^/_][^/]*/[^/_][^/]*/[^/]+$")  # /db/doc/attachment


class CouchFront:
    def __init__(self, backend: str, *, ranges: bool = False, refuse_create: bool = False) -> None:
        self.backend = backend.rstrip("/")
        self.ranges, self.refuse_create = ranges, refuse_create
        self.requests: list[tuple[str, str, str | None]] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_route("*", "/{path:.*}", self._forward)
        return app

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, request.headers.get("Range")))
        if self.refuse_create and request.method == "PUT" and re.fullmatch(r"/[^/_][^/]*", request.path):
            return web.json_response({"error": "unauthorized", "reason": "You are not a server admin."}, status=401)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP | {"range"}}
        headers["Accept-Encoding"] = "identity"  # bodies pass through (and are cut) as they are stored
        ranged = self.ranges and request.method == "GET" and _ATTACHMENT.match(request.path)
        if request.headers.get("Range") and not ranged:
            headers["Range"] = request.headers["Range"]  # passed on, for the real server to ignore
        async with aiohttp.ClientSession() as session, session.request(
                request.method, self.backend + request.path_qs, headers=headers, data=await request.read()) as answer:
            body = await answer.read()
            passed = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            status = answer.status
        if ranged and status == 200 and (match := re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))):
            start, total = int(match.group(1)), len(body)
            if start < total:
                passed["Content-Range"] = f"bytes {start}-{total - 1}/{total}"
                return web.Response(status=206, body=body[start:], headers=passed)
        return web.Response(status=status, body=body, headers=passed)
