"""The landing page ``/``: what this server is, whether its database answers, where the viewer is.

``/`` is also the predecessor's WADO-URI root, so a request with a query is a WADO-URI request
(PS3.18 9) and goes there. Without one, a person gets a small HTML page and a monitoring client
that asks for ``application/json`` the same facts as JSON; both are 503 while CouchDB does not
answer, so a health check needs nothing else. The page is open, so it names the CouchDB address
only to users who may read, and an error on it never names it (the log has the details).
"""

from __future__ import annotations

import asyncio
import html
import logging
from dataclasses import asdict, dataclass, replace

from aiohttp import web

from dicomweb_couch import __version__
from dicomweb_couch.appkeys import CATALOG, COUCH, SETTINGS
from dicomweb_couch.auth import AUTHENTICATOR, InvalidCredentials, Permission
from dicomweb_couch.errors import STORE_UNAVAILABLE
from dicomweb_couch.search.catalog import CatalogNotReady
from dicomweb_couch.store.couch import CouchUnavailable, split_credentials
from dicomweb_couch.web import wado_uri
from dicomweb_couch.web.responses import dicomweb_root
from dicomweb_couch.web.viewer import MOUNT, VIEWER_DIR, build_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Status:
    version: str
    couch_url: str | None
    database: str | None
    couch_version: str | None = None
    studies: int | None = None
    instances: int | None = None
    couch_error: str | None = None
    viewer_error: str | None = None
    counts_hidden: bool = False


def without_credentials(url: str) -> str:
    """The URL with any user and password taken out: the page is public."""
    return split_credentials(url)[0]


async def may_read(request: web.Request) -> bool:
    """Whether the request's credentials allow reading (always, without authentication): the page is
    open, but how many studies an archive holds is for its users only."""
    try:
        return Permission.READ in (await request.app[AUTHENTICATOR].authenticate(request)).permissions
    except InvalidCredentials:
        return False


async def status(app: web.Application, counts: bool = True) -> Status:
    """CouchDB's version, and (``counts``: for users who may read) where it is and the archive's size
    from the study catalog (which QIDO-RS keeps current)."""
    settings = app[SETTINGS]
    facts = Status(version=__version__, couch_url=without_credentials(settings.couch_url) if counts else None,
                   database=settings.database if counts else None,
                   viewer_error=await asyncio.to_thread(build_problem, app[VIEWER_DIR]))
    try:
        facts = replace(facts, couch_version=str((await app[COUCH].server_info()).get("version")))
        if not counts:
            return facts
        # the page is a health check too: it waits at most a moment for the counts (0.1 s while a
        # first start catches up, when there are none yet)
        await app[CATALOG].current(min(settings.index_patience, 1.0 if app[CATALOG].ready else 0.1))
        studies, instances = await app[CATALOG].totals()
    except CouchUnavailable as exc:  # the details (which address, what failed) are for the log only
        log.error("status page: CouchDB unavailable: %s", exc)
        return replace(facts, couch_url=None, database=None, couch_error=STORE_UNAVAILABLE)
    except CatalogNotReady:  # a large archive being indexed for the first time: no counts yet
        return facts
    return replace(facts, studies=studies, instances=instances)


def _count(n: int | None, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def render(status: Status, dicomweb: str) -> str:
    """The HTML page: plain markup, readable without styles or scripts."""
    e = html.escape
    if status.couch_error is None:
        studies, instances = _count(status.studies, "study", "studies"), _count(status.instances, "instance", "instances")
        size = "counting (CouchDB is indexing)" if status.studies is None else f"{studies}, {instances}"
        if status.counts_hidden:
            size = "counts shown to signed-in users"
        where = f" at {e(status.couch_url)}, database <b>{e(status.database or '')}</b>" if status.couch_url else ""
        couch = f"<td class=ok>reachable</td><td>CouchDB {e(status.couch_version or '?')}{where}: {size}</td>"
    else:
        couch = f"<td class=bad>unavailable</td><td>{e(status.couch_error)}</td>"
    if status.viewer_error is None:
        viewer = f'<td class=ok>installed</td><td><a href="{MOUNT}/">open the OHIF Viewer</a></td>'
    else:
        viewer = f'<td class=bad>not available</td><td>{e(status.viewer_error)} (<a href="{MOUNT}/">how to install</a>)</td>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dicomweb_couch</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}} td{{padding:.3em .8em}}
.ok{{color:#186a1e;font-weight:bold}} .bad{{color:#a01010;font-weight:bold}}</style></head>
<body>
<h1>dicomweb_couch {e(status.version)}</h1>
<p>A DICOMweb archive (PS3.18) keeping its instances in CouchDB.</p>
<table>
<tr><th>CouchDB</th>{couch}</tr>
<tr><th>Viewer</th>{viewer}</tr>
<tr><th>DICOMweb root</th><td colspan=2><code>{e(dicomweb)}</code> (QIDO-RS, WADO-RS, STOW-RS)</td></tr>
<tr><th>WADO-URI root</th><td colspan=2><code>{e(dicomweb)}/wado</code></td></tr>
</table>
</body></html>
"""


async def index(request: web.Request) -> web.StreamResponse:
    if request.query:
        return await wado_uri.retrieve(request)
    readable = await may_read(request)
    facts = replace(await status(request.app, counts=readable), counts_hidden=not readable)
    code = 200 if facts.couch_error is None else 503
    accept = request.headers.get("Accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return web.json_response(dict(server="dicomweb_couch", **asdict(facts)), status=code)
    return web.Response(text=render(facts, dicomweb_root(request)), status=code, content_type="text/html",
                        headers={"Cache-Control": "no-store"})
