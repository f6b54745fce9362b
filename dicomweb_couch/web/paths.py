"""The UIDs of a request's path, checked before anything reaches the store (PS3.18 8.2, PS3.5 9.1).

``/studies/{study}/series/{series}/instances/{instance}`` and every resource below them name
UIDs: at most 64 characters of digits and dots. Checking them once, for every route, means no
handler ever sends CouchDB a view key or document id it did not mean to: a 5,000-character
"UID" (which Apache CouchDB refuses with a 400 that looked like an outage), or one of CouchDB's
own ids (``_design/...``, ``_all_docs``, ``_changes``) that would address the database itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from dicomweb_couch.dicom.dicomjson import is_valid_uid
from dicomweb_couch.errors import DicomwebError, quoted

PATH_UIDS = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID", "instance": "SOPInstanceUID"}
"""Route parameters that hold a UID, and the attribute each stands for."""


@web.middleware
async def check_uids(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """400 naming the first path parameter that is not a UID; otherwise the handler's answer."""
    for name, keyword in PATH_UIDS.items():
        value = request.match_info.get(name)
        if value is not None and not is_valid_uid(value):
            raise DicomwebError(400, f"{keyword} {quoted(value)} in the path ({{{name}}}) is not a UID: at most 64 "
                                     f"characters of digits and dots (PS3.5 9.1)")
    return await handler(request)
