"""Liveness and readiness for orchestrators and load balancers: ``GET /healthz`` and ``GET /readyz``.

``/healthz`` answers 200 as long as the process serves requests at all: it touches nothing else,
so a slow or unreachable CouchDB never gets a healthy server restarted. ``/readyz`` says whether
this server should get traffic: CouchDB answers, the design documents are the ones this version
installs, and the search views are no more than ``ready_index_lag`` changes behind the database
(a replica whose views are still being built after a large import or replication would answer
searches incompletely or slowly). It is 503 with the reasons otherwise. Both are open without a
token (``auth.required_permission``), send ``Cache-Control: no-store`` and cost at most a few small
CouchDB requests, bounded by ``_TIMEOUT``.

Graceful shutdown (SIGTERM, ``commands/serve.py``): the server stops listening, then gives the
requests in flight (an upload half sent, a study being streamed) up to ``shutdown_timeout`` seconds
to finish, counted here by :class:`Draining`, before aiohttp's own shutdown closes the connections
(aiohttp alone would drop the rest of a request body arriving after the signal). Meanwhile a new
request on a kept-alive connection is refused with 503 and ``Connection: close``
(:func:`refuse_when_draining`), and ``/readyz`` says ``shutting down``, so a load balancer moves on.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from dicomweb_couch.appkeys import CATALOG, COUCH, SETTINGS
from dicomweb_couch.search.catalog import SEARCH_VIEWS
from dicomweb_couch.store import design_docs
from dicomweb_couch.store.couch import Couch, CouchUnavailable, seq_number

_TIMEOUT = 5.0
_NO_STORE = {"Cache-Control": "no-store"}
_design_docs = functools.cache(design_docs.load)  # what this version installs: read once
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class Draining:
    """Whether the server is stopping, and how many requests are being answered."""

    def __init__(self) -> None:
        self.stopping = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def finish(self, timeout: float) -> bool:
        """Stop taking requests and wait up to ``timeout`` s for those in flight; whether they all ended."""
        self.stopping = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False


DRAINING = web.AppKey("draining", Draining)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"}, headers=_NO_STORE)


async def index_lag(couch: Couch) -> dict[str, int]:
    """How many changes each search view's index is behind the database (CouchDB indexes lazily)."""
    db_seq = seq_number(await couch.update_seq())
    lags: dict[str, int] = {}
    for doc_id, content in _design_docs().items():
        ddoc = doc_id.split("/", 1)[1]
        for view in (v for v in content["views"] if v in SEARCH_VIEWS):
            lags[f"{ddoc}/{view}"] = max(0, db_seq - seq_number(await couch.view_update_seq(ddoc, view)))
    return lags


async def _problems(couch: Couch, max_lag: int) -> tuple[list[str], dict[str, Any]]:
    problems: list[str] = []
    facts: dict[str, Any] = {}
    try:
        await couch.database_info()
    except CouchUnavailable as exc:
        return [f"CouchDB unreachable: {exc}"], facts
    for doc_id, content in _design_docs().items():
        stored = await couch.get_doc(doc_id)
        if stored is None:
            problems.append(f"design document {doc_id} is missing")
        elif {k: stored.get(k) for k in content} != content:
            problems.append(f"design document {doc_id} differs from this version's (another version of the "
                            "server installed it; the indexes of one of them are being rebuilt)")
    if not problems:
        facts["index_lag"] = lags = await index_lag(couch)
        behind = {view: lag for view, lag in lags.items() if lag > max_lag}
        if behind:
            problems.append("search index behind the database: " +
                            ", ".join(f"{view} by {lag} changes" for view, lag in sorted(behind.items())))
    return problems, facts


async def readyz(request: web.Request) -> web.Response:
    if request.app[DRAINING].stopping:
        body = {"status": "not ready", "problems": ["shutting down: finishing the requests in flight"]}
        return web.json_response(body, status=503, headers=_NO_STORE)
    couch = request.app[COUCH]
    try:
        problems, facts = await asyncio.wait_for(_problems(couch, request.app[SETTINGS].ready_index_lag), _TIMEOUT)
    except (TimeoutError, CouchUnavailable) as exc:
        problems, facts = [f"CouchDB did not answer the readiness checks within {_TIMEOUT:.0f} s: {exc}"], {}
    if not request.app[CATALOG].ready:
        problems.append("study catalog catching up with the database (first start; progress in the log)")
    body = {"status": "not ready" if problems else "ready", "problems": problems, **facts}
    return web.json_response(body, status=503 if problems else 200, headers=_NO_STORE)


@web.middleware
async def refuse_when_draining(request: web.Request, handler: Handler) -> web.StreamResponse:
    """New requests during a graceful shutdown get 503 (RFC 9110 15.6.4) and the connection closed;
    the others are counted while they are answered."""
    draining = request.app[DRAINING]
    if draining.stopping and request.path not in _PROBES:
        return web.json_response({"status": 503, "error": "the server is shutting down: try again (another replica)"},
                                 status=503, headers={"Retry-After": "5", "Connection": "close"})
    draining.enter()
    try:
        return await handler(request)
    finally:
        draining.leave()


def setup(app: web.Application) -> None:
    """The probes' routes, and the count of requests a graceful shutdown waits for."""
    app[DRAINING] = Draining()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.middlewares.append(refuse_when_draining)
