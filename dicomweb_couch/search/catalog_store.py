"""The study catalog on disk: one SQLite file per server process, checkpointed at a CouchDB sequence.

Study searches (PS3.18 10.6, PS3.4 C.6.1.1.3) need one row per study — its attributes, the
computed NumberOfStudyRelatedSeries/Instances, ModalitiesInStudy and SOPClassesInStudy — and
look-ups whose cost follows the answer. A grouped CouchDB view gives the rows but cannot page
cheaply (``skip`` is linear) nor find substrings, and holding the rows in memory costs ~15 KB
per study and a full re-read at every start. So each process keeps them here:

- ``instances``: document id -> study, series, Modality, SOPClassUID and the hash of the
  instance's study-level attributes (``variants``): enough to recompute a study's summary
  when one of its documents changes or is deleted (a tombstone carries only the id);
- ``studies``: the summary (DICOM JSON as returned), with ``pos``, the order in which studies
  first entered this catalog: the default result order, so new studies come after every page
  already read (``offset`` paging under writes returns each study once);
- ``keys``: exact values, dates and person-name prefixes (whole and per component, upper-cased);
- ``texts``: an FTS5 trigram index over names and StudyDescription (as stored, and folded for
  fuzzy matching), answering ``*TERM*`` and fuzzy names without reading every row;
- ``meta``: the CouchDB sequence the file is current at, written in the same transaction as
  the rows, so a crash never leaves the file ahead of or behind its checkpoint.

Every row is derived from the documents and can be rebuilt from CouchDB at any time (delete the
file). The sequence is stored as CouchDB sent it (an opaque string on CouchDB 3 clusters) and
only ever passed back. Methods here block: ``catalog.py`` calls them from threads.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomweb_couch.dicom.legacy import normalize_stored
from dicomweb_couch.dicom.levels import STUDY, STUDY_CLINICAL_TRIAL
from dicomweb_couch.search.matching import fold_text, normalize_index_text

SCHEMA_VERSION = "2"  # another version in a file: rebuilt
EXACT_TAGS = ("00080050", "00080061", "00080062", "00100020", "00200010")
NAME_TAGS = ("00100010", "00080090")  # PN: indexed by whole name and component, upper-cased
TEXT_TAGS = ("00100010", "00080090", "00081030")  # substring search through the trigram index


def sort_path(tag: str, vr: str) -> str:
    """Where SQLite finds the value a study is ordered by in its data set: the first value; for
    person names the alphabetic group. ``tag`` is 8 hex digits (checked by the query parser)."""
    if not re.fullmatch(r"[0-9A-F]{8}", tag):
        raise ValueError(f"not a tag: {tag!r}")
    return f'$."{tag}".Value[0]' + (".Alphabetic" if vr == "PN" else "")


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS instances(doc_id TEXT PRIMARY KEY, study TEXT NOT NULL, series TEXT NOT NULL,
    modality TEXT NOT NULL, sop_class TEXT NOT NULL, variant TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS instances_study ON instances(study);
CREATE TABLE IF NOT EXISTS variants(hash TEXT PRIMARY KEY, study TEXT NOT NULL, attrs TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS variants_study ON variants(study);
CREATE TABLE IF NOT EXISTS studies(pos INTEGER PRIMARY KEY AUTOINCREMENT, uid TEXT UNIQUE NOT NULL,
    dataset TEXT NOT NULL, series INTEGER NOT NULL, instances INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS studies_by_date ON studies(json_extract(dataset, '{sort_path("00080020", "DA")}'));
CREATE INDEX IF NOT EXISTS studies_by_name ON studies(json_extract(dataset, '{sort_path("00100010", "PN")}'));
CREATE TABLE IF NOT EXISTS keys(tag TEXT NOT NULL, key TEXT NOT NULL, pos INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS keys_lookup ON keys(tag, key);
CREATE INDEX IF NOT EXISTS keys_pos ON keys(pos);
CREATE VIRTUAL TABLE IF NOT EXISTS texts USING fts5(
    {", ".join(f"t{t}" for t in TEXT_TAGS)}, {", ".join(f"f{t}" for t in NAME_TAGS)}, tokenize='trigram');
"""


@dataclass(frozen=True)
class StudySummary:
    """One study as the catalog keeps it: attributes as returned (computed ones included, but
    RetrieveURL, which depends on the request) and its series and instance counts."""

    uid: str
    dataset: dict[str, Any]
    series: int
    instances: int


@dataclass(frozen=True)
class Condition:
    """A restriction the SQLite index can apply: studies whose ``pos`` is in this subquery.
    Always a superset of the matches; the caller's check decides."""

    sql: str
    params: tuple[Any, ...]


class CorruptCatalog(Exception):
    """The file is unreadable or of another schema or database: rebuild it."""


_STUDY = frozenset(STUDY) | frozenset(STUDY_CLINICAL_TRIAL)


def study_attributes(dataset: Mapping[str, Any]) -> dict[str, Any]:
    """Patient and Study IE attributes of an instance (``dicom/levels.py``, as the views select them)."""
    return {t: e for t, e in sorted(dataset.items())
            if t in _STUDY or t.startswith("0010") or (t.startswith("0012") and t < "00120060")}


def _first(dataset: Mapping[str, Any], tag: str) -> str:
    element = dataset.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values and isinstance(values[0], str) else ""


def _strings(element: Any) -> list[str]:
    values = element.get("Value") if isinstance(element, dict) else None
    return [v for v in values if isinstance(v, str) and v] if isinstance(values, list) else []


def _name_groups(element: Any) -> list[str]:
    values = element.get("Value") if isinstance(element, dict) else None
    groups: list[str] = []
    for value in values if isinstance(values, list) else []:
        if isinstance(value, dict):
            groups += [v for v in value.values() if isinstance(v, str) and v]
    return groups


def literal_runs(term: str) -> list[str]:
    """The literal parts of a wildcard term (PS3.4 C.2.2.2.4) at least 3 characters long: each
    must occur in a matching value, which is what a trigram index can look up."""
    return [run for run in re.split(r"[*?]", term) if len(run) >= 3]


class CatalogStore:
    """The SQLite file. One writer thread applies changes; readers use their own connections
    (WAL mode: readers see the last committed state while a batch is being written)."""

    def __init__(self, path: Path, source: str):
        self.path = path
        self.source = source  # CouchDB URL and database the file mirrors: another one means rebuild
        self._local = threading.local()
        self._every: list[sqlite3.Connection] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connection().executescript(_SCHEMA)
            with self._write() as db:
                found = dict(db.execute("SELECT key, value FROM meta").fetchall())
                if found and (found.get("schema") != SCHEMA_VERSION or found.get("source") != source):
                    raise CorruptCatalog(f"{path} belongs to {found.get('source')} (schema {found.get('schema')})")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?), ('source', ?)", (SCHEMA_VERSION, source))
                db.execute("SELECT count(*) FROM studies").fetchone()
        except sqlite3.OperationalError:  # locked, disk full, no permission: not a reason to start over
            self.close()
            raise
        except sqlite3.DatabaseError as exc:  # not a database, malformed
            self.close()
            raise CorruptCatalog(f"{path}: {exc}") from exc
        except CorruptCatalog:
            self.close()
            raise

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # a long busy timeout: two processes given the same file by mistake wait for each other
            # used by this thread only; closed by close_all() once the threads are done
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
            self._every.append(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA cache_size=-16384")  # 16 MiB of pages per connection: memory stays fixed
            db.execute("PRAGMA mmap_size=0")
            self._local.db = db
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def close_all(self) -> None:
        """Close every thread's connection (at shutdown, when no thread uses them any more)."""
        for db in self._every:
            db.close()
        self._every.clear()

    # -- the checkpoint --------------------------------------------------------------------

    def checkpoint(self) -> Any:
        """The CouchDB sequence the file is current at (as CouchDB sent it), or None if never filled."""
        row = self._connection().execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        return json.loads(row[0]) if row else None

    def totals(self) -> tuple[int, int]:
        """Studies and instances in the catalog."""
        db = self._connection()
        return (db.execute("SELECT count(*) FROM studies").fetchone()[0],
                db.execute("SELECT coalesce(sum(instances), 0) FROM studies").fetchone()[0])

    # -- applying changes ------------------------------------------------------------------

    def apply_feed(self, body: bytes) -> tuple[int, Any]:
        """Apply a raw ``_changes`` answer with documents (parsed here, in the writer's thread);
        return how many changes it held and the sequence it reached."""
        data = json.loads(body)
        results, seq = data["results"], data["last_seq"]
        if results:  # nothing new: no write (the checkpoint stays, replaying from it is harmless)
            self.apply(results, seq)
        return len(results), seq

    def apply(self, changes: Iterable[Mapping[str, Any]], seq: Any) -> int:
        """Apply ``_changes`` rows (with their documents) and move the checkpoint to ``seq``, in one
        transaction; return how many studies changed."""
        with self._write() as db:
            touched: dict[str, None] = {}  # in feed order: new studies are numbered as they were stored
            for change in changes:
                doc_id = change.get("id", "")
                if doc_id.startswith(("_design/", "_local/")):
                    continue
                old = db.execute("SELECT study FROM instances WHERE doc_id = ?", (doc_id,)).fetchone()
                if old:
                    touched[old[0]] = None
                doc = change.get("doc") or {}
                dataset = doc.get("dataset") if not change.get("deleted") else None
                study = _first(dataset, "0020000D") if isinstance(dataset, dict) else ""
                if not study:  # deleted, or not an instance: not in the catalog (as in the studies view)
                    if old:
                        db.execute("DELETE FROM instances WHERE doc_id = ?", (doc_id,))
                    continue
                attrs = json.dumps(study_attributes(dataset), separators=(",", ":"), ensure_ascii=False)
                variant = hashlib.sha1(f"{study}\0{attrs}".encode()).hexdigest()
                db.execute("INSERT OR IGNORE INTO variants VALUES (?, ?, ?)", (variant, study, attrs))
                db.execute("INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?, ?, ?)",
                           (doc_id, study, _first(dataset, "0020000E"), _first(dataset, "00080060"), _first(dataset, "00080016"), variant))
                touched[study] = None
            for study in touched:
                self._summarize(db, study)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('seq', ?)", (json.dumps(seq),))
        return len(touched)

    def _summarize(self, db: sqlite3.Connection, uid: str) -> None:
        """Recompute one study's row and index entries from its instances (or drop the study)."""
        row = db.execute("SELECT pos FROM studies WHERE uid = ?", (uid,)).fetchone()
        pos = row[0] if row else None
        if pos is not None:
            db.execute("DELETE FROM keys WHERE pos = ?", (pos,))
            db.execute("DELETE FROM texts WHERE rowid = ?", (pos,))
        counts = db.execute("SELECT count(*), count(DISTINCT series) FROM instances WHERE study = ?", (uid,)).fetchone()
        if not counts[0]:
            db.execute("DELETE FROM studies WHERE uid = ?", (uid,))
            db.execute("DELETE FROM variants WHERE study = ?", (uid,))
            return
        attrs = db.execute("SELECT v.attrs FROM instances i JOIN variants v ON v.hash = i.variant WHERE i.study = ? "
                           "GROUP BY i.variant ORDER BY count(*) DESC, i.variant LIMIT 1", (uid,)).fetchone()[0]
        modalities = [r[0] for r in db.execute(
            "SELECT DISTINCT modality FROM instances WHERE study = ? AND modality != '' ORDER BY 1", (uid,))]
        sop_classes = [r[0] for r in db.execute(
            "SELECT DISTINCT sop_class FROM instances WHERE study = ? AND sop_class != '' ORDER BY 1", (uid,))]
        dataset = normalize_stored(json.loads(attrs))
        dataset.update({
            "00080056": {"vr": "CS", "Value": ["ONLINE"]},
            "00080061": {"vr": "CS", "Value": modalities},
            "00080062": {"vr": "UI", "Value": sop_classes},
            "00201206": {"vr": "IS", "Value": [counts[1]]},
            "00201208": {"vr": "IS", "Value": [counts[0]]},
        })
        dataset = dict(sorted(dataset.items()))
        text = json.dumps(dataset, separators=(",", ":"), ensure_ascii=False)
        if pos is None:
            pos = db.execute("INSERT INTO studies(uid, dataset, series, instances) VALUES (?, ?, ?, ?)",
                             (uid, text, counts[1], counts[0])).lastrowid
        else:
            db.execute("UPDATE studies SET dataset = ?, series = ?, instances = ? WHERE pos = ?",
                       (text, counts[1], counts[0], pos))
        keys = {("0020000D", uid), *(("00080020", d) for d in _strings(dataset.get("00080020")))}
        keys |= {(tag, value) for tag in EXACT_TAGS for value in _strings(dataset.get(tag))}
        for tag in NAME_TAGS:
            for name in map(normalize_index_text, _name_groups(dataset.get(tag))):
                keys |= {(tag, part) for part in {name, *name.split("^")} if part}
        db.executemany("INSERT INTO keys VALUES (?, ?, ?)", [(tag, key, pos) for tag, key in keys])
        texts = [" | ".join(_name_groups(dataset.get(t)) or _strings(dataset.get(t))) for t in TEXT_TAGS]
        texts += [fold_text(" | ".join(_name_groups(dataset.get(t)))) for t in NAME_TAGS]
        db.execute(f"INSERT INTO texts(rowid, {', '.join(f't{t}' for t in TEXT_TAGS)}, "
                   f"{', '.join(f'f{t}' for t in NAME_TAGS)}) VALUES (?, ?, ?, ?, ?, ?)", (pos, *texts))

    # -- reading ---------------------------------------------------------------------------

    def get(self, uid: str) -> StudySummary | None:
        row = self._connection().execute(
            "SELECT uid, dataset, series, instances FROM studies WHERE uid = ?", (uid,)).fetchone()
        return _summary(row) if row else None

    def find(self, conditions: list[Condition], order: list[tuple[str, bool]], check: Callable[[dict], bool] | None,
             offset: int, limit: int) -> tuple[list[StudySummary], bool]:
        """Studies passing ``conditions`` and ``check``, sorted by ``order`` (JSON paths into the
        data set, descending if True) then catalog order; ``limit`` of them from ``offset`` on, and
        whether more follow. Without a check, SQLite does the paging itself."""
        where = " AND ".join(f"pos IN ({c.sql})" for c in conditions) or "1"
        params: list[Any] = [p for c in conditions for p in c.params]
        # paths inline (made of checked tags only, see sort_path), so the expression indexes serve
        keys = [f"json_extract(dataset, '{path}') {'DESC' if desc else 'ASC'}" for path, desc in order]
        sql = (f"SELECT uid, dataset, series, instances FROM studies WHERE {where} "
               f"ORDER BY {', '.join(keys + ['pos'])}")
        db = self._connection()
        if check is None:
            rows = db.execute(sql + " LIMIT ? OFFSET ?", (*params, limit + 1, offset)).fetchall()
            return [_summary(r) for r in rows[:limit]], len(rows) > limit
        found: list[StudySummary] = []
        skipped = 0
        for row in db.execute(sql, params):
            dataset = json.loads(row[1])
            if not check(dataset):
                continue
            if skipped < offset:
                skipped += 1
                continue
            if len(found) == limit:
                return found, True
            found.append(StudySummary(row[0], dataset, row[2], row[3]))
        return found, False


def _summary(row: tuple[str, str, int, int]) -> StudySummary:
    return StudySummary(row[0], json.loads(row[1]), row[2], row[3])


def exact(tag: str, values: Iterable[str]) -> Condition:
    values = tuple(values)
    return Condition(f"SELECT pos FROM keys WHERE tag = ? AND key IN ({', '.join('?' * len(values))})",
                     (tag, *values))


def between(tag: str, low: str, high: str | None) -> Condition:
    """Keys in [low, high]; high None is open."""
    if high is None:
        return Condition("SELECT pos FROM keys WHERE tag = ? AND key >= ?", (tag, low))
    return Condition("SELECT pos FROM keys WHERE tag = ? AND key BETWEEN ? AND ?", (tag, low, high))


def containing(column: str, runs: list[str]) -> Condition:
    """Studies whose text column contains every run (trigram index; case-insensitive, a superset)."""
    phrase = " AND ".join('"' + run.replace('"', '""') + '"' for run in runs)
    return Condition("SELECT rowid FROM texts WHERE texts MATCH ?", (f"{column} : ({phrase})",))
