"""QIDO-RS: search for studies, series and instances (PS3.18 10.6).

Thin handlers over :mod:`dicomweb_couch.search.engine`, which does the searching (and does the
same for C-FIND): they pass the query string and the URL's scope, and add what only HTTP has —
RetrieveURLs as the client reached the server, and ``Warning`` headers (PS3.18 8.3.4.4).
"""

from __future__ import annotations

from functools import partial

from aiohttp import web

from dicomweb_couch.appkeys import SEARCH
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.search.catalog import CatalogNotReady
from dicomweb_couch.search.engine import SearchResult
from dicomweb_couch.web.responses import dicom_json, study_url


async def search_studies(request: web.Request) -> web.Response:
    return await _search(request, "study")


async def search_series(request: web.Request) -> web.Response:
    """``/series`` and ``/studies/{study}/series``."""
    return await _search(request, "series")


async def search_instances(request: web.Request) -> web.Response:
    """``/instances``, ``/studies/{study}/instances`` and ``/studies/{study}/series/{series}/instances``."""
    return await _search(request, "instance")


async def _search(request: web.Request, level: str) -> web.Response:
    try:
        result = await request.app[SEARCH].search(
            level, request.query, study=request.match_info.get("study"), series=request.match_info.get("series"),
            url_for=partial(study_url, request))
    except CatalogNotReady:
        raise DicomwebError(503, "the study index is being built (first start, or a large import); "
                                 "try again in a few seconds", {"Retry-After": "10"}) from None
    return _answer(request, result)


def _answer(request: web.Request, result: SearchResult) -> web.Response:
    """The result array, with Warning headers (PS3.18 8.3.4.4) for a cut result or ignored parameters."""
    query = result.query
    warnings = []
    if result.more and (query.limit_cut or "limit" not in request.query):
        warnings.append(f'299 {request.host} "The number of results exceeded the maximum supported by '
                        f'the server ({query.limit}). Additional results can be requested with offset."')
    if result.stale:
        warnings.append(f'299 {request.host} "The study index is being updated after a large change; '
                        f'results may be incomplete for a few moments."')
    for name in query.ignored:
        warnings.append(f'299 {request.host} "The {name} parameter is not supported and was ignored."')
    headers = {"Warning": ", ".join(warnings)} if warnings else None
    return dicom_json(result.records, headers=headers)
