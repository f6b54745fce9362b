"""The optional file store: Part 10 files in a directory, named by their SHA-256, beside CouchDB.

With the ``file_store`` setting, an instance document keeps its DICOM JSON and a reference
``"file": {"sha256": ..., "size": ...}`` instead of the ``object.dcm`` attachment; the file lives at
``<root>/<2 hex>/<2 hex>/<sha256>.dcm``. The kernel then sends it (sendfile) and answers Range
requests, and CouchDB no longer carries the bytes. Documents still holding an attachment (an
archive half way through ``python -m dicomweb_couch files``) are served from it.

Durability (a kill -9 at any moment leaves no acknowledged instance without its file): the file
is written to ``<root>/tmp``, fsynced, renamed into place and its directory fsynced *before* the
document is written; the store is acknowledged only after both. A crash between the two leaves an
orphan file, removed by :meth:`FileStore.sweep` once older than ``grace`` seconds (a store in
progress is never that slow).

Identical files are stored once. A directory serves one database (the file ``DATABASE`` in it says
which), since the references are looked up in that database's view. A file may then be shared by several documents, so deleting a
document removes its file only when no document refers to it any more (the ``files/by_sha256``
view). Several server processes may share the directory, so removal is careful: the file is first
renamed into ``<root>/trash``, the references are checked again, and it comes back if a document
appeared meanwhile; a store that reuses an existing file checks after writing its document that
the file is still there and writes it again if not.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

from dicomweb_couch.store.couch import Couch, CouchUnavailable
from dicomweb_couch.store.files import AttachmentStore, LocalReader, Part10File, Reader

log = logging.getLogger(__name__)

DDOC, VIEW = "files", "by_sha256"
DESIGN = {"language": "javascript", "views": {VIEW: {"map": (
    "function (doc) { if (doc.file && typeof doc.file.sha256 === 'string') { emit(doc.file.sha256, null); } }")}}}
"""The references to the files: installed only with the file store, in a design document of its own so
that neither it nor the ``qido`` indexes are rebuilt when the other changes."""
_CHUNK = 1024 * 1024
_KEYS_BATCH = 500


class FileStore:
    """Part 10 files in the directory ``root`` (see the module doc); implements ``Part10Store``."""

    def __init__(self, couch: Couch, root: str | Path, grace: float = 3600.0) -> None:
        self.couch = couch
        self.root = Path(root)
        self.grace = grace
        self.attachments = AttachmentStore(couch)
        for sub in ("tmp", "trash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        marker = self.root / "DATABASE"
        if not marker.exists():
            marker.write_text(couch.database + "\n")
        elif marker.read_text().strip() != couch.database:
            raise ValueError(f"the file store {self.root} holds the files of database {marker.read_text().strip()!r}, "
                             f"not {couch.database!r}: give each database a file store of its own (deleting "
                             f"checks the references in one database only)")

    async def install(self) -> None:
        """Install the design document of the references (see ``DESIGN``)."""
        await self.couch.install_design_doc(f"_design/{DDOC}", DESIGN)

    def path_of(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / f"{sha256}.dcm"

    # -- writing -------------------------------------------------------------------------------

    def write_file(self, fp: IO[bytes]) -> tuple[str, int]:
        """Copy ``fp`` (from its start) into the store durably; (sha256, size). Blocking: run in a thread."""
        fp.seek(0)
        digest, size = hashlib.sha256(), 0
        tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as out:
                while chunk := fp.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            return self._place(tmp, digest.hexdigest()), size
        finally:
            tmp.unlink(missing_ok=True)

    async def write_chunks(self, chunks: AsyncIterator[bytes]) -> tuple[str, int]:
        """Like :meth:`write_file`, from a stream (a CouchDB attachment being migrated)."""
        digest, size = hashlib.sha256(), 0
        tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
        try:
            out = await asyncio.to_thread(open, tmp, "wb")
            with out:
                async for chunk in chunks:
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
                    size += len(chunk)
                await asyncio.to_thread(out.flush)
                await asyncio.to_thread(os.fsync, out.fileno())
            return await asyncio.to_thread(self._place, tmp, digest.hexdigest()), size
        finally:
            await asyncio.to_thread(tmp.unlink, True)

    def _place(self, tmp: Path, sha256: str) -> str:
        """Rename the fsynced ``tmp`` to its content's name, durably; keep an identical file already there."""
        target = self.path_of(sha256)
        try:
            os.utime(target)  # already stored: keep it young, so no orphan sweep takes it now
            return sha256
        except FileNotFoundError:
            pass
        new_dirs = not target.parent.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        for folder in (target.parent, target.parent.parent, self.root)[:3 if new_dirs else 1]:
            _fsync_dir(folder)
        return sha256

    async def store(self, doc: dict[str, Any], fp: IO[bytes], size: int) -> bool:
        """The file first (durably), then the document that refers to it."""
        try:
            sha256, written = await asyncio.to_thread(self.write_file, fp)
        except OSError as exc:
            raise CouchUnavailable(f"the file store {self.root} refused the file: {exc}") from exc
        doc = dict(doc, file={"sha256": sha256, "size": written})
        stored = await self.couch.store_instance(doc, None, 0)
        if not await asyncio.to_thread(self.path_of(sha256).exists):  # removed by a concurrent DELETE
            await asyncio.to_thread(self.write_file, fp)
        return stored

    # -- reading -------------------------------------------------------------------------------

    async def _path(self, doc_id: str, doc: dict[str, Any] | None
                    ) -> tuple[Path | None, int, bool, dict[str, Any] | None]:
        """(path of the document's file or None, its size, whether the document has a file
        reference, the document)."""
        doc = doc if doc is not None else await self.couch.get_doc(doc_id)
        ref = (doc or {}).get("file")
        if not isinstance(ref, dict) or not isinstance(ref.get("sha256"), str):
            return None, 0, False, doc
        path = self.path_of(ref["sha256"])
        try:
            size = (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            log.error("the file %s of instance %s is missing from the file store", path, doc_id)
            return None, 0, True, doc
        return path, size, True, doc

    @asynccontextmanager
    async def open(self, doc_id: str, doc: dict[str, Any] | None = None,
                   if_none_match: str | None = None) -> AsyncIterator[Part10File | None]:
        path, size, referenced, doc = await self._path(doc_id, doc)
        if path is not None:
            yield Part10File(200, size, None, path=path, doc=doc)
        elif referenced or doc is None:
            yield None
        else:
            async with self.attachments.open(doc_id, doc, if_none_match) as found:
                yield found

    async def reader(self, doc_id: str) -> Reader | None:
        path, _, referenced, _ = await self._path(doc_id, None)
        if path is not None:
            return await asyncio.to_thread(LocalReader, path)
        return None if referenced else await self.attachments.reader(doc_id)

    # -- deleting ------------------------------------------------------------------------------

    async def delete(self, instances: Mapping[str, str]) -> int:
        """Delete the documents, then the files no document refers to any more."""
        ids, hashes = list(instances), set()
        for start in range(0, len(ids), _KEYS_BATCH):
            docs = await self.couch.latest_revisions(ids[start:start + _KEYS_BATCH])
            hashes |= {d["file"]["sha256"] for d in docs if not d.get("_deleted") and isinstance(d.get("file"), dict)}
        deleted = await self.couch.delete_instances(instances)
        await self.release(hashes)
        return deleted

    async def referenced(self, hashes: list[str]) -> set[str]:
        """Those of ``hashes`` some live document refers to."""
        found: set[str] = set()
        for start in range(0, len(hashes), _KEYS_BATCH):
            rows = await self.couch.view_keys(DDOC, VIEW, hashes[start:start + _KEYS_BATCH])
            found.update(row["key"] for row in rows)
        return found

    async def release(self, hashes: set[str]) -> int:
        """Remove the files of ``hashes`` that no document refers to; how many were removed."""
        candidates = sorted(hashes - await self.referenced(sorted(hashes)))
        moved: dict[str, Path] = {}
        for sha256 in candidates:
            trash = self.root / "trash" / f"{sha256}.{uuid.uuid4().hex[:8]}"
            try:
                await asyncio.to_thread(os.replace, self.path_of(sha256), trash)
                moved[sha256] = trash
            except FileNotFoundError:
                continue
        revived = await self.referenced(sorted(moved))  # a store of the same file came in meanwhile
        for sha256, trash in moved.items():
            if sha256 in revived:
                await asyncio.to_thread(os.replace, trash, self.path_of(sha256))
            else:
                await asyncio.to_thread(trash.unlink, True)
        return len(moved) - len(revived)

    async def sweep(self) -> int:
        """Remove orphans: files older than ``grace`` that no document refers to, and stale temporary files."""
        old = time.time() - self.grace
        hashes, stale = await asyncio.to_thread(self._old_files, old)
        for path in stale:
            await asyncio.to_thread(path.unlink, True)
        removed = 0
        for start in range(0, len(hashes), _KEYS_BATCH):
            removed += await self.release(set(hashes[start:start + _KEYS_BATCH]))
        if removed or stale:
            log.info("file store sweep: removed %d orphan file(s) and %d temporary file(s)", removed, len(stale))
        return removed

    def _old_files(self, before: float) -> tuple[list[str], list[Path]]:
        hashes = [p.stem for p in self.files() if p.stat().st_mtime < before]
        stale = [p for sub in ("tmp", "trash") for p in (self.root / sub).iterdir() if p.stat().st_mtime < before]
        return hashes, stale

    def files(self) -> Iterator[Path]:
        """Every stored file (not the temporary ones)."""
        for first in sorted(self.root.glob("[0-9a-f][0-9a-f]")):
            for second in sorted(first.glob("[0-9a-f][0-9a-f]")):
                yield from sorted(second.glob("*.dcm"))


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX: the directory entry is data of the directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def open_part10_store(couch: Couch, directory: str) -> AttachmentStore | FileStore:
    """The store of Part 10 files a process uses: the file store in ``directory`` (installed: its
    view, its marker), or the documents' attachments when ``directory`` is empty. The server, the
    importer and the DIMSE gateway all take it from here, so every way in keeps files alike.
    Raises ValueError or OSError for a directory that cannot serve this database."""
    if not directory:
        return AttachmentStore(couch)
    store = FileStore(couch, directory)
    await store.install()
    return store
