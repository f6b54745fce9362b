"""WADO-RS metadata (PS3.18 10.4.1.1.2): the DICOM JSON of every instance of a study, series or instance.

The instances are read in batches from the ``instances`` view with their documents and written
out as they come, so a large study does not sit in memory. Bulk data is not in the stored JSON
(see ``dicomjson``): its elements carry only their VR.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .appkeys import COUCH
from .couch import Couch
from .legacy import normalize_stored
from .errors import DicomwebError
from .catalog import DDOC, HIGH
from .responses import DICOM_JSON, dicom_json

BATCH = 200


async def metadata(request: web.Request) -> web.StreamResponse:
    study = request.match_info["study"]
    series = request.match_info.get("series")
    instance = request.match_info.get("instance")
    couch = request.app[COUCH]
    if instance:
        doc = await couch.get_doc(instance)
        dataset = normalize_stored((doc or {}).get("dataset") or {})
        if _uid(dataset, "0020000D") != study or _uid(dataset, "0020000E") != series:
            raise DicomwebError(404, f"no instance {instance} in series {series} of study {study}")
        return dicom_json([dataset])
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
            await response.write(separator + json.dumps(dataset, separators=(",", ":")).encode())
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


def _uid(dataset: dict[str, Any], tag: str) -> str | None:
    values = dataset.get(tag, {}).get("Value") or [None]
    return values[0]
