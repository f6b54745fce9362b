"""Bulk import: folders, zip files and DICOMDIRs (PS3.10 7.2, PS3.3 F.2) stored in parallel, resumably.

What is found is listed first (cheap: names and sizes), so progress can be shown against a total;
then ``workers`` tasks each open a file, check it is a Part 10 file (``DICM`` after the preamble,
PS3.10 7.1), hash it and hand it to a :class:`Target`: the database itself through
:func:`~dicomweb_couch.store.ingest.store_file` (the path STOW-RS and C-STORE take), or a running
server through STOW-RS. A re-run skips what is stored already, checked by content (the
document's ``md5hash``; see :class:`DatabaseTarget`). Every file ends as one :class:`Result`; nothing found is fatal.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import aiohttp
import pydicom

from dicomweb_couch.store.couch import Couch
from dicomweb_couch.store.files import Part10Store
from dicomweb_couch.store.ingest import (
    CANNOT_UNDERSTAND,
    PROCESSING_FAILURE,
    Outcome,
    md5_of,
    store_file,
)

STORED, ALREADY_THERE, REFUSED, SKIPPED = "stored", "already there", "refused", "skipped"
_SPOOL_IN_MEMORY = 8 * 1024 * 1024
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class Source:
    """One file to import: a file on disk, or a member of a zip file (``archive.zip!member``)."""

    name: str
    size: int
    path: Path
    member: str | None = None

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """A seekable binary file: the file itself, or the zip member extracted to a spool."""
        if self.member is None:
            with open(self.path, "rb") as fp:
                yield fp
            return
        with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as member, \
                tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            shutil.copyfileobj(member, spool, 1024 * 1024)
            yield spool


@dataclass(frozen=True)
class Result:
    """What became of one source; ``reason`` is the failure reason of a refused instance (PS3.4 B.2.3)."""

    name: str
    status: str
    size: int = 0
    sop_instance_uid: str = ""
    reason: int | None = None
    message: str = ""


def find_sources(paths: Iterable[str | Path]) -> tuple[list[Source], list[Result]]:
    """Every candidate file under ``paths`` (folders recursively, zip files' members, a DICOMDIR's
    referenced files), and the paths that are none of these (missing, unreadable)."""
    sources: list[Source] = []
    problems: list[Result] = []
    for given in map(Path, paths):
        if given.is_dir():
            for folder, dirs, files in os.walk(given, onerror=lambda exc: problems.append(
                    Result(str(exc.filename), SKIPPED, message=f"cannot read the folder: {exc.strerror}"))):
                dirs.sort()
                sources += _file_sources([Path(folder, f) for f in sorted(files)], problems)
        elif given.is_file() and given.name.upper() == "DICOMDIR":
            sources += _dicomdir_sources(given, problems)
        elif given.is_file():
            sources += _file_sources([given], problems)
        else:
            problems.append(Result(str(given), SKIPPED, message="no such file or folder"))
    return sources, problems


def _file_sources(files: list[Path], problems: list[Result]) -> Iterator[Source]:
    for path in files:
        try:
            with open(path, "rb") as fp:
                magic = fp.read(4)
            size = path.stat().st_size
        except OSError as exc:
            problems.append(Result(str(path), SKIPPED, message=f"cannot read the file: {exc.strerror}"))
            continue
        if magic == _ZIP_MAGIC and zipfile.is_zipfile(path):
            yield from _zip_sources(path, problems)
        else:
            yield Source(str(path), size, path)


def _zip_sources(path: Path, problems: list[Result]) -> Iterator[Source]:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        problems.append(Result(str(path), SKIPPED, message=f"unreadable zip file: {exc}"))
        return
    for info in infos:
        yield Source(f"{path}!{info.filename}", info.file_size, path, info.filename)


def _dicomdir_sources(path: Path, problems: list[Result]) -> Iterator[Source]:
    """The files a DICOMDIR's directory records reference (Referenced File ID, PS3.3 F.3.2.2),
    relative to the folder it lies in."""
    try:
        dicomdir = pydicom.dcmread(path)
        records = dicomdir.DirectoryRecordSequence
    except Exception as exc:  # noqa: BLE001 -- pydicom signals broken input with many exception types
        problems.append(Result(str(path), SKIPPED, message=f"unreadable DICOMDIR: {exc}"))
        return
    for record in records:
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        referenced = path.parent.joinpath(*parts)
        if not referenced.is_file():  # CDs written on other systems may differ in case
            matches = [p for p in path.parent.rglob("*") if p.relative_to(path.parent).parts
                       and [s.upper() for s in p.relative_to(path.parent).parts] == [s.upper() for s in parts]]
            if not matches:
                problems.append(Result(str(referenced), REFUSED, reason=PROCESSING_FAILURE,
                                       message="the DICOMDIR references this file, but it is missing"))
                continue
            referenced = matches[0]
        yield Source(str(referenced), referenced.stat().st_size, referenced)


def is_part10(fp: IO[bytes]) -> bool:
    """A DICOM file with the Part 10 preamble and prefix (PS3.10 7.1)."""
    fp.seek(128)
    return fp.read(4) == b"DICM"


class Target(Protocol):
    """Where instances go."""

    async def store(self, fp: IO[bytes], md5: str, size: int) -> Outcome: ...


class DatabaseTarget:
    """Straight into CouchDB with the archive's own store path.

    A resumed import meets the files it stored before first (sources come in a stable order), so
    each file is looked up before it is sent (``skip_stored``) until ``_MISSES_BEFORE_TRUSTING``
    files in a row turn out new: from then on files are sent at once, saving a request each on a
    fresh import. A file stored already is still recognised then, by the store's conflict check
    (same ``md5hash``), only after being sent.
    """

    _MISSES_BEFORE_TRUSTING = 32

    def __init__(self, couch: Couch, files: Part10Store) -> None:
        self.couch = couch
        self.files = files
        self._misses = 0

    async def store(self, fp: IO[bytes], md5: str, size: int) -> Outcome:
        check = self._misses < self._MISSES_BEFORE_TRUSTING
        outcome = await store_file(self.couch, fp, md5, size, skip_stored=check, files=self.files)
        if check and outcome.failure_reason is None:
            self._misses = 0 if not outcome.written else self._misses + 1
        return outcome


class StowTarget:
    """Into a running server by STOW-RS (PS3.18 10.5), one instance per request.

    The server tells stored from refused, not a repeat from a first store: its documents are
    left alone when the file is the same, but the result says "stored".
    """

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url.rstrip("/") + "/studies"

    async def store(self, fp: IO[bytes], md5: str, size: int) -> Outcome:
        boundary = uuid.uuid4().hex
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        async def body() -> AsyncIterator[bytes]:
            yield head
            fp.seek(0)
            while chunk := await asyncio.to_thread(fp.read, 1024 * 1024):
                yield chunk
            yield tail

        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                   "Content-Length": str(len(head) + size + len(tail)), "Accept": "application/dicom+json"}
        try:
            async with self.session.post(self.url, data=body(), headers=headers) as resp:
                answer = await resp.json(content_type=None) if resp.content_length != 0 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return Outcome(None, None, failure_reason=PROCESSING_FAILURE, message=f"STOW-RS request failed: {exc}")
        if resp.status == 200:
            [ref] = answer["00081199"]["Value"]
            return Outcome(None, ref["00081155"]["Value"][0])
        failed = (answer.get("00081198") or {}).get("Value") if isinstance(answer, dict) else None
        if resp.status == 409 and failed:
            item = failed[0]
            return Outcome(None, (item.get("00081155", {}).get("Value") or [""])[0],
                           failure_reason=item["00081197"]["Value"][0],
                           message=(item.get("00000902", {}).get("Value") or [""])[0])
        message = answer.get("message") if isinstance(answer, dict) else None
        return Outcome(None, None, failure_reason=PROCESSING_FAILURE,
                       message=f"the server answered {resp.status}: {message or resp.reason}")


async def import_sources(sources: list[Source], target: Target, workers: int,
                         on_result: Callable[[Result], None]) -> None:
    """Store every source with ``workers`` concurrent tasks; ``on_result`` hears of each file."""
    queue: asyncio.Queue[Source] = asyncio.Queue()
    for source in sources:
        queue.put_nowait(source)

    async def worker() -> None:
        while not queue.empty():
            on_result(await import_one(queue.get_nowait(), target))

    await asyncio.gather(*(worker() for _ in range(max(1, workers))))


async def import_one(source: Source, target: Target) -> Result:
    try:
        with source.open() as fp:
            if Path(source.member or source.path).name.upper() == "DICOMDIR":  # PS3.10 8.6: the index itself
                return Result(source.name, SKIPPED, source.size, message="a DICOMDIR (an index of the files)")
            if not await asyncio.to_thread(is_part10, fp):
                return Result(source.name, SKIPPED, source.size, message="not a DICOM file (no DICM prefix)")
            md5, size = await asyncio.to_thread(md5_of, fp)
            outcome = await target.store(fp, md5, size)
    except (OSError, zipfile.BadZipFile, RuntimeError) as exc:  # RuntimeError: an encrypted zip member
        return Result(source.name, REFUSED, source.size, reason=CANNOT_UNDERSTAND, message=f"cannot read: {exc}")
    if outcome.failure_reason is not None:
        return Result(source.name, REFUSED, size, outcome.sop_instance_uid or "", outcome.failure_reason,
                      outcome.message)
    return Result(source.name, STORED if outcome.written else ALREADY_THERE, size, outcome.sop_instance_uid or "")
