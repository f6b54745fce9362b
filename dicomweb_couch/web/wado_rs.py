"""WADO-RS metadata (PS3.18 10.4.1.1.2): the DICOM JSON of every instance of a study, series or instance.

The instances are read in batches from the ``instances`` view with their documents and written
out as they come, so a large study does not sit in memory. Bulk data is not in the stored JSON
(see ``dicomjson``): its elements get a BulkDataURI (see ``bulkdata``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import hdrs, web

from dicomweb_couch.appkeys import COUCH
from dicomweb_couch.dicom.legacy import normalize_stored
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.search.catalog import DDOC, HIGH
from dicomweb_couch.store.couch import Couch
from dicomweb_couch.web import accept
from dicomweb_couch.web.bulkdata import bulkdata_base, with_bulkdata_uris
from dicomweb_couch.web.instances import first_value
from dicomweb_couch.web.responses import DICOM_JSON, dicom_json

BATCH = 200
_OFFERS = [accept.Offer(DICOM_JSON), accept.Offer("application/json")]


async def metadata(request: web.Request) -> web.StreamResponse:
    """406 unless the client accepts DICOM JSON (PS3.18 8.7: XML metadata is not offered)."""
    ranges = accept.acceptable(request.headers.getall(hdrs.ACCEPT, []), request.query)
    accept.negotiate(ranges, _OFFERS, "metadata")
    study = request.match_info["study"]
    series = request.match_info.get("series")
    instance = request.match_info.get("instance")
    couch = request.app[COUCH]
    if instance:
        doc = await couch.get_doc(instance)
        dataset = normalize_stored((doc or {}).get("dataset") or {})
        if first_value(dataset, "0020000D") != study or first_value(dataset, "0020000E") != series:
            raise DicomwebError(404, f"no instance {instance} in series {series} of study {study}")
        return dicom_json([_with_uris(request, dataset)])
    prefix = [study, series] if series else [study]
    batches = _datasets(couch, prefix)
    first = await anext(batches, None)
    if not first:
        what = f"series {series} of study {study}" if series else f"study {study}"
        raise DicomwebError(404, f"no instances stored for {what}")
    response = web.StreamResponse(headers={"Content-Type": DICOM_JSON})
    await response.prepare(request)
    separator = b"["
    async for batch in _chain(first, batches):
        for dataset in batch:
            record = _with_uris(request, dataset)
            await response.write(separator + json.dumps(record, separators=(",", ":")).encode())
            separator = b","
    await response.write(b"]")
    await response.write_eof()
    return response


async def _datasets(couch: Couch, prefix: list[str]) -> AsyncIterator[list[dict[str, Any]]]:
    """Stored data sets under a [study] or [study, series] key prefix, a batch at a time."""
    start: list[Any] = prefix
    while True:
        rows = await couch.view(DDOC, "instances", startkey=start, endkey=prefix + [HIGH],
                                limit=BATCH + 1, include_docs=True)
        yield [normalize_stored(row["doc"].get("dataset") or {}) for row in rows[:BATCH] if row.get("doc")]
        if len(rows) <= BATCH:
            return
        start = rows[BATCH]["key"]


async def _chain(first: list[dict[str, Any]], rest: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[list[dict[str, Any]]]:
    yield first
    async for batch in rest:
        yield batch


def _with_uris(request: web.Request, dataset: dict[str, Any]) -> dict[str, Any]:
    """The data set with BulkDataURIs where its bulk data was left out (see ``bulkdata``)."""
    base = bulkdata_base(request, first_value(dataset, "0020000D") or "", first_value(dataset, "0020000E") or "",
                         first_value(dataset, "00080018") or "")
    return with_bulkdata_uris(dataset, base)
