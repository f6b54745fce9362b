"""Instance documents written by dcmjs-org/dicomweb-server, brought up to this server's layout in place.

The predecessor records no transfer syntax (group 0002 is not in ``dataset``): it lives only in
the attached file's File Meta (PS3.10 7.1). Without it the ``instances`` view cannot tell WADO-RS
how an instance is encoded, so ``transfer-syntax=*``, frames and bulk data of compressed instances
came out wrong. The syntax is learnt from the file when first needed (:func:`learn_transfer_syntax`,
called by the web layer) and written back as ``transferSyntaxUID``; a repeated STOW of the same
file repairs the document (:func:`repair`); ``python -m dicomweb_couch upgrade`` does every
document at once (:func:`upgrade_database`), resumable through a ``_local`` checkpoint.

Every upgrade is additive or a mending of invalid DICOM JSON (AT integers, PN strings; see
``dicom/legacy.py``): ``dataset``, ``md5hash`` and the ``object.dcm`` attachment stay, DS/IS
values keep their ``Value`` arrays, so the predecessor still reads every upgraded document.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from pydicom import dcmread

from dicomweb_couch.dicom.legacy import upgrade_stored
from dicomweb_couch.store.couch import ATTACHMENT, Conflict, Couch, CouchUnavailable
from dicomweb_couch.store.remote_file import RemoteFile

log = logging.getLogger(__name__)

SYNTAX_FIELD = "transferSyntaxUID"
"""Where this server records an instance's transfer syntax (the ``instances`` view emits it)."""
CHECKPOINT = "dicomweb_couch-upgrade"
"""The ``_local`` document an interrupted upgrade resumes from (never replicated)."""
_BATCH = 100
_PARALLEL_READS = 4


def file_meta_syntax(fp: IO[bytes]) -> str | None:
    """The Transfer Syntax UID (0002,0010) of a Part 10 file's File Meta; None without one.

    Only the header is read: values over 1 KiB are skipped and reading stops before pixel data.
    """
    ds = dcmread(fp, force=True, stop_before_pixels=True, defer_size=1024, specific_tags=[0x00080016])
    meta = getattr(ds, "file_meta", None)
    return str(meta.TransferSyntaxUID) if meta is not None and meta.get("TransferSyntaxUID") else None


async def read_transfer_syntax(couch: Couch, doc_id: str) -> str | None:
    """The syntax in the File Meta of the document's attached file; None if it has none or no file."""
    remote = await RemoteFile.open(couch, doc_id)
    if remote is None:
        return None
    try:
        return await asyncio.to_thread(file_meta_syntax, remote)
    except Exception as exc:  # pydicom's many ways of refusing a broken header
        log.warning("cannot read the File Meta of %s: %r", doc_id, exc)
        return None
    finally:
        await remote.aclose()


def upgraded(doc: dict[str, Any], syntax: str | None) -> tuple[dict[str, Any], list[str]]:
    """The document with mended DICOM JSON and ``syntax`` recorded (if it had none), and what changed."""
    new, changes = dict(doc), []
    dataset, vrs = upgrade_stored(doc.get("dataset") or {})
    if vrs:
        new["dataset"] = dataset
        changes += [f"{vr} values mended" for vr in sorted(vrs)]
    if syntax and not isinstance(doc.get(SYNTAX_FIELD), str):
        new[SYNTAX_FIELD] = syntax
        changes.append("transfer syntax recorded")
    return new, changes


async def _rewrite(couch: Couch, doc_id: str, change: Callable[[dict[str, Any]], tuple[dict[str, Any], list[str]]],
                   first: dict[str, Any] | None = None) -> list[str]:
    """Apply ``change`` to the current revision and write it if it changed anything; what changed.

    A conflict (the document was written meanwhile) re-reads and applies the change again.
    """
    doc = first
    for _ in range(3):
        doc = doc or await couch.get_doc(doc_id)
        if doc is None:
            return []
        new, changes = change(doc)
        if not changes:
            return []
        try:
            await couch.put_doc(new)
            return changes
        except Conflict:
            doc = None
    raise CouchUnavailable(f"document {doc_id} kept conflicting with concurrent writes")


async def learn_transfer_syntax(couch: Couch, doc_id: str) -> str | None:
    """The syntax of an instance stored without one, from its file, kept in its document.

    Failing to keep it (a read-only CouchDB user, a busy server) is logged, not raised: the answer
    is still right, it is only learnt again next time.
    """
    syntax = await read_transfer_syntax(couch, doc_id)
    if syntax:
        try:
            await _rewrite(couch, doc_id, lambda doc: upgraded(doc, syntax))
            log.info("recorded transfer syntax %s of %s, learnt from its File Meta", syntax, doc_id)
        except CouchUnavailable as exc:
            log.warning("could not record the transfer syntax of %s: %s", doc_id, exc)
    return syntax


async def repair(couch: Couch, doc: dict[str, Any]) -> list[str]:
    """Bring the stored document of a file stored again (``doc`` as :mod:`ingest` builds it) up to date."""
    return await _rewrite(couch, doc["_id"], lambda current: upgraded(current, doc.get(SYNTAX_FIELD)))


# -- the whole database ------------------------------------------------------------------------


@dataclass
class Report:
    """What an upgrade run found and did."""

    examined: int = 0
    current: int = 0  # instance documents that needed nothing
    upgraded: int = 0
    other: int = 0  # design documents and documents that are no instance
    changes: Counter[str] = field(default_factory=Counter)
    problems: dict[str, str] = field(default_factory=dict)  # document id -> what is wrong
    resumed_after: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"examined": self.examined, "current": self.current, "upgraded": self.upgraded,
                "other": self.other, "changes": dict(self.changes), "problems": self.problems,
                "resumed_after": self.resumed_after}


def _is_instance(doc: dict[str, Any]) -> bool:
    return not doc["_id"].startswith("_design/") and isinstance(doc.get("dataset"), dict)


def _problem(doc: dict[str, Any]) -> str | None:
    """Why a document cannot be served as an instance, if it cannot."""
    dataset = doc["dataset"]
    for tag, name in (("0020000D", "StudyInstanceUID"), ("0020000E", "SeriesInstanceUID")):
        values = (dataset.get(tag) or {}).get("Value") or [None]
        if not isinstance(values[0], str) or not values[0]:
            return f"no {name} ({tag[:4]},{tag[4:]}): not in the search views"
    if ATTACHMENT not in (doc.get("_attachments") or {}):
        where = f" (filePath {doc['filePath']} is not served)" if doc.get("filePath") else ""
        return "no object.dcm attachment" + where
    return None


async def upgrade_database(couch: Couch, dry_run: bool = False, restart: bool = False,
                           progress: Callable[[int], None] = lambda n: None) -> Report:
    """Check every document and upgrade the instances that need it (see the module doc).

    Documents are read in id order a batch at a time; after each batch the last id is kept in a
    ``_local`` checkpoint, so an interrupted run resumes there (``restart`` ignores it). A dry run
    reads and reports but writes nothing, checkpoint included. ``progress`` gets the number of
    documents of each batch.
    """
    report = Report()
    checkpoint = None if restart else await couch.get_local(CHECKPOINT)
    after = checkpoint.get("last_id") if checkpoint else None
    report.resumed_after = after
    reads = asyncio.Semaphore(_PARALLEL_READS)

    async def one(doc: dict[str, Any]) -> None:
        if not _is_instance(doc):
            report.other += 1
            return
        if problem := _problem(doc):
            report.problems[doc["_id"]] = problem
        syntax = None
        if not isinstance(doc.get(SYNTAX_FIELD), str) and ATTACHMENT in (doc.get("_attachments") or {}):
            async with reads:
                syntax = await read_transfer_syntax(couch, doc["_id"])
            if syntax is None:
                report.problems.setdefault(doc["_id"], "its file has no File Meta transfer syntax")
        if dry_run:
            changes = upgraded(doc, syntax)[1]
        else:
            changes = await _rewrite(couch, doc["_id"], lambda current: upgraded(current, syntax), first=doc)
        report.changes.update(changes)
        if changes:
            report.upgraded += 1
        else:
            report.current += 1

    while docs := await couch.all_docs(after, _BATCH):
        await asyncio.gather(*(one(doc) for doc in docs))
        report.examined += len(docs)
        after = docs[-1]["_id"]
        if not dry_run:
            await couch.put_local(CHECKPOINT, {"last_id": after})
        progress(len(docs))
    if not dry_run:
        await couch.put_local(CHECKPOINT, {"last_id": None})
    return report
