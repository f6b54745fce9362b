"""Apache CouchDB settings that cost an image archive speed, checked at start-up.

An archive of Part 10 files is mostly attachments of 0.1-500 MB, which CouchDB's defaults do not
suit: ``[couchdb] attachment_stream_buffer_size`` (default 4096 bytes) is the chunk size
attachments are written and read in, and a 1 MiB buffer makes reads 3-4x and writes 1.3x faster
(README "Tuning Apache CouchDB"); a media type listed in ``[attachments] compressible_types``
is stored compressed, which costs CPU on every read and rules out Range requests. With admin
rights the server reads the node's configuration (``GET /_node/_local/_config``) and logs one
warning per costly setting with its fix; ``config/couchdb-images.ini`` holds all of them.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Any

from dicomweb_couch.store.couch import Couch

log = logging.getLogger(__name__)

DICOM = "application/dicom"
BUFFER = 1048576
LARGEST = 4 * 1024**3
"""The largest instance a multi-frame archive should accept (bytes): CouchDB's default request limit."""


def _number(value: Any) -> float | None:
    if isinstance(value, str) and value.strip().lower() == "infinity":
        return float("inf")
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def advice(config: dict[str, dict[str, Any]]) -> list[str]:
    """One warning per setting of a node configuration (as ``/_node/_local/_config`` gives it)
    that costs an image archive speed or refuses its files, each with the exact fix."""
    found = []
    couchdb, attachments, chttpd = (config.get(s) or {} for s in ("couchdb", "attachments", "chttpd"))
    buffer = _number(couchdb.get("attachment_stream_buffer_size", 4096))
    if buffer is not None and buffer < BUFFER:
        found.append(f"[couchdb] attachment_stream_buffer_size = {couchdb.get('attachment_stream_buffer_size', 4096)} "
                     f"reads and writes Part 10 files in small chunks (reads 3-4x slower than with 1 MiB); fix: "
                     f"set [couchdb] attachment_stream_buffer_size = {BUFFER} (applies to files written afterwards; "
                     f"see config/couchdb-images.ini)")
    types = [t.strip() for t in str(attachments.get("compressible_types", "")).split(",") if t.strip()]
    matching = [t for t in types if fnmatch.fnmatch(DICOM, t)]
    if matching:
        found.append(f"[attachments] compressible_types = {attachments['compressible_types']} matches {DICOM} "
                     f"(by {', '.join(matching)}): Part 10 files are stored gzip-compressed, costing CPU on every "
                     f"read and ruling out Range requests; fix: remove {', '.join(matching)} from "
                     f"[attachments] compressible_types")
    for section, key, values in (("couchdb", "max_attachment_size", couchdb), ("chttpd", "max_http_request_size", chttpd)):
        limit = _number(values.get(key))
        if limit is not None and limit < LARGEST:
            found.append(f"[{section}] {key} = {values[key]} refuses instances larger than {int(limit)} bytes "
                         f"(multi-frame images reach gigabytes); fix: set [{section}] {key} = {LARGEST}")
    return found


async def check(couch: Couch) -> list[str]:
    """Log the advice for the connected node; once, that it could not be checked without admin rights."""
    config = await couch.node_config()
    if config is None:
        log.info("could not check CouchDB's settings for images (no admin rights, or not Apache CouchDB); "
                 "see config/couchdb-images.ini for the recommended ones")
        return []
    found = advice(config)
    for text in found:
        log.warning("CouchDB setting: %s", text)
    return found
