"""Instances stored differently at two sites while they could not replicate: CouchDB revision conflicts.

When two sites write the same document (the same SOPInstanceUID) while apart, replication keeps
both revisions. Every CouchDB (and PouchDB) picks the same winner without talking to the others
(the longest revision history, then the greater revision id), so both sites serve the same
instance; the losing revision stays in the database, its file included, listed in the document's
``_conflicts``, until someone deletes it. This module finds them, so nothing is lost silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dicomweb_couch.store.couch import ATTACHMENT, Couch

_BATCH = 500


@dataclass(frozen=True)
class Revision:
    rev: str
    md5hash: str | None
    study: str | None
    size: int | None  # of the stored file

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Revision:
        study = ((doc.get("dataset") or {}).get("0020000D") or {}).get("Value") or [None]
        attachment = (doc.get("_attachments") or {}).get(ATTACHMENT) or {}
        return cls(doc["_rev"], doc.get("md5hash"), study[0], attachment.get("length"))


@dataclass(frozen=True)
class Conflicted:
    """A document with conflicting revisions: the one served, and the ones that lost."""

    doc_id: str
    winner: Revision
    losers: list[Revision]


async def find_conflicts(couch: Couch) -> list[Conflicted]:
    """Every conflicted document of the database (a scan of ``_all_docs`` in pages)."""
    found: list[Conflicted] = []
    after: str | None = None
    while docs := await couch.all_docs(after, _BATCH, conflicts=True):
        after = docs[-1]["_id"]
        for doc in docs:
            if not doc.get("_conflicts"):
                continue
            losers = [await couch.get_revision(doc["_id"], rev) for rev in doc["_conflicts"]]
            found.append(Conflicted(doc["_id"], Revision.of(doc), [Revision.of(d) for d in losers if d]))
    return found


async def keep_winner(couch: Couch, conflicted: Conflicted) -> None:
    """Resolve a conflict for the revision being served: delete the losing revisions (their files go
    at the next compaction)."""
    for loser in conflicted.losers:
        await couch.put_doc({"_id": conflicted.doc_id, "_rev": loser.rev, "_deleted": True})
