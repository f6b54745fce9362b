"""DELETE a study, series or instance: removes the instance documents with their files.

PS3.18 defines no deletion; this follows what archives offer (dcm4chee's and Orthanc's REST
deletes): ``DELETE /studies/{s}``, ``/studies/{s}/series/{se}``,
``/studies/{s}/series/{se}/instances/{sop}`` answer 204 once every instance is gone, 404 when
nothing matched. The documents go in bulk CouchDB deletions (``Couch.delete_instances``); QIDO-RS
counts come from views, so they follow at once. With ``allow_delete`` off (a read-only archive)
the answer is 405.
"""

from __future__ import annotations

import logging

from aiohttp import web

from dicomweb_couch.appkeys import COUCH, SETTINGS
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.web import instances

log = logging.getLogger(__name__)


async def delete(request: web.Request) -> web.Response:
    study, series, sop = instances.target(request)
    if not request.app[SETTINGS].allow_delete:
        allowed = "GET, HEAD, POST" if series is None else "GET, HEAD"
        raise DicomwebError(405, "this archive is read-only: deleting is switched off (setting allow_delete)",
                            headers={"Allow": allowed})
    found = await instances.find(request, learn_syntax=False)  # a DELETE needs no transfer syntax
    deleted = await request.app[COUCH].delete_instances({i.doc_id: i.study for i in found})
    log.info("deleted %d instance(s) of %s", deleted, instances.describe(study, series, sop))
    return web.Response(status=204)
