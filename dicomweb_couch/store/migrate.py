"""Moving an archive's Part 10 files between CouchDB attachments and the file store, and back.

Documents are visited in id order (``_all_docs``); each one already in the wanted form is skipped,
so an interrupted run is resumed by running it again. A document moves in two durable steps: the
file is written to its new place first (the file store: fsynced and renamed; an attachment: with
the document in one multipart PUT), and only then does the document stop referring to the old
place. A document changed meanwhile (a conflict) is left for the next run. Files of the file
store that no document refers to any more are released at the end (``FileStore.release``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dicomweb_couch.store.couch import ATTACHMENT, Conflict
from dicomweb_couch.store.file_store import FileStore
from dicomweb_couch.store.files import chunks

log = logging.getLogger(__name__)

PAGE = 200
TO_FILES, TO_ATTACHMENTS = "to-files", "to-attachments"


@dataclass
class Tally:
    moved: int = 0
    skipped: int = 0  # already in the wanted form, or not an instance
    conflicts: int = 0  # changed meanwhile: left for the next run
    missing: int = 0  # the file was not found where the document says
    released: int = 0  # files of the file store removed at the end


async def migrate(store: FileStore, direction: str, progress: Callable[[int], None] = lambda n: None,
                  limit: int | None = None) -> Tally:
    """Move every instance's file (see the module doc); ``limit`` stops after that many moves (tests
    use it to interrupt a run); ``progress`` is called with 1 per document visited."""
    if direction not in (TO_FILES, TO_ATTACHMENTS):
        raise ValueError(f"direction must be {TO_FILES} or {TO_ATTACHMENTS}, not {direction!r}")
    couch, tally, released = store.couch, Tally(), set()
    after: str | None = None
    while limit is None or tally.moved < limit:
        ids = await couch.doc_ids(after, PAGE)
        if not ids:
            break
        after = ids[-1]
        for doc_id in ids:
            progress(1)
            if limit is not None and tally.moved >= limit:
                break
            doc = None if doc_id.startswith("_design/") else await couch.get_doc(doc_id)
            move = _to_files if direction == TO_FILES else _to_attachments
            outcome = await move(store, doc, released) if doc and "dataset" in doc else "skipped"
            setattr(tally, outcome, getattr(tally, outcome) + 1)
    if released:
        tally.released = await store.release(released)
    return tally


async def _to_files(store: FileStore, doc: dict[str, Any], released: set[str]) -> str:
    if "file" in doc or ATTACHMENT not in doc.get("_attachments", {}):
        return "skipped"
    async with store.open(doc["_id"], {}) as found:  # {}: no file reference, so the attachment
        if found is None:
            return "missing"
        sha256, size = await store.write_chunks(chunks(found))
    moved = {k: v for k, v in doc.items() if k != "_attachments"}
    moved["file"] = {"sha256": sha256, "size": size}
    try:
        await store.couch.put_doc(moved)
    except Conflict:
        return "conflicts"
    return "moved"


async def _to_attachments(store: FileStore, doc: dict[str, Any], released: set[str]) -> str:
    ref = doc.get("file")
    if not isinstance(ref, dict):
        return "skipped"
    path = store.path_of(ref["sha256"])
    try:
        fp = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        log.error("instance %s: its file %s is missing from the file store", doc["_id"], path)
        return "missing"
    with fp:
        size = (await asyncio.to_thread(path.stat)).st_size
        try:
            await store.couch.put_with_attachment({k: v for k, v in doc.items() if k != "file"}, fp, size)
        except Conflict:
            return "conflicts"
    released.add(ref["sha256"])
    return "moved"
