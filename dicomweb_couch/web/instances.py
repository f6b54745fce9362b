"""The stored instances a study, series or instance URL names (PS3.18 10.4.1), from the ``instances`` view.

Retrieve, rendered, thumbnail and DELETE all start here. Only what they need is kept per
instance (a few short strings), so listing a study of 100,000 instances costs a few megabytes
however large its files are; the view is read in pages of ``BATCH`` rows. A URL whose UIDs do not
belong together matches nothing: the view is keyed [study, series, instance].
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from dicomweb_couch.appkeys import COUCH
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.search.catalog import DDOC, HIGH
from dicomweb_couch.store.couch import Couch
from dicomweb_couch.store.upgrade import learn_transfer_syntax

BATCH = 1000


@dataclass(frozen=True)
class StoredInstance:
    """One instance: where its file is and what the view says about its pixels."""

    study: str
    series: str
    sop: str
    doc_id: str
    transfer_syntax: str | None
    frames: int  # NumberOfFrames, 1 when absent
    rows: int  # 0 for an instance without an image
    number: int | None  # InstanceNumber

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StoredInstance:
        attrs = row.get("value") or {}
        return cls(*row["key"], doc_id=row["id"], transfer_syntax=first_value(attrs, "00083002"),
                   frames=_integer(attrs, "00280008") or 1, rows=_integer(attrs, "00280010") or 0,
                   number=_integer(attrs, "00200013"))


def target(request: web.Request) -> tuple[str, str | None, str | None]:
    """The (study, series, instance) UIDs of the request's path; series and instance may be None."""
    info = request.match_info
    return info["study"], info.get("series"), info.get("instance")


def describe(study: str, series: str | None = None, instance: str | None = None) -> str:
    """The resource in words, for 404 messages."""
    if instance:
        return f"instance {instance} in series {series} of study {study}"
    return f"series {series} of study {study}" if series else f"study {study}"


async def batches(couch: Couch, study: str, series: str | None = None,
                  instance: str | None = None) -> AsyncIterator[list[StoredInstance]]:
    """The instances under the target, a page of the view at a time, in UID order."""
    prefix = [uid for uid in (study, series, instance) if uid]
    start: list[Any] = prefix
    while True:
        rows = await couch.view(DDOC, "instances", startkey=start, endkey=prefix + [HIGH], limit=BATCH + 1)
        yield [StoredInstance.from_row(row) for row in rows[:BATCH]]
        if len(rows) <= BATCH:
            return
        start = rows[BATCH]["key"]


async def find(request: web.Request, learn_syntax: bool = True) -> list[StoredInstance]:
    """Every instance the request's path names; 404 when there is none.

    An instance stored by dcmjs-org/dicomweb-server has no recorded transfer syntax: unless the
    caller does not need it (``learn_syntax``), it is learnt from the file's File Meta here, once,
    and kept in the document (``store/upgrade.py``).
    """
    study, series, instance = target(request)
    couch = request.app[COUCH]
    found = [i async for batch in batches(couch, study, series, instance) for i in batch]
    if not found:
        raise DicomwebError(404, f"no {describe(study, series, instance)} is stored")
    if learn_syntax and any(i.transfer_syntax is None for i in found):
        found = await _with_transfer_syntax(couch, found)
    return found


async def _with_transfer_syntax(couch: Couch, found: list[StoredInstance]) -> list[StoredInstance]:
    reads = asyncio.Semaphore(4)

    async def learn(instance: StoredInstance) -> StoredInstance:
        if instance.transfer_syntax is not None:
            return instance
        async with reads:
            return replace(instance, transfer_syntax=await learn_transfer_syntax(couch, instance.doc_id))

    return list(await asyncio.gather(*(learn(i) for i in found)))


def first_value(attrs: dict[str, Any], tag: str) -> Any:
    """The first value of an attribute of a DICOM JSON object, None if it has none."""
    values = (attrs.get(tag) or {}).get("Value") or [None]
    return values[0]


def _integer(attrs: dict[str, Any], tag: str) -> int | None:
    try:
        return int(first_value(attrs, tag))
    except (TypeError, ValueError):
        return None
