"""The CouchDB design documents, read from the ``design_docs/`` folder.

Layout (the CouchApp convention): ``design_docs/<name>/views/<view>/map.js`` and an optional
``reduce.js`` holding a built-in reduce such as ``_count``; ``design_docs/<name>/filters/<filter>.js``
for replication filters (which do not touch the indexes). Keeping them as plain JavaScript files
lets them be read, diffed and reviewed like code; the server installs them at start-up.
The ``LEVEL_TAGS_*`` names in map functions are replaced by the tag lists of ``levels.py``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from dicomweb_couch.dicom.levels import view_constants

_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "design_docs",  # source checkout / editable install
    Path(sys.prefix) / "share" / "dicomweb_couch" / "design_docs",  # wheel install (setup.cfg data_files)
)


def folder() -> Path:
    for path in _CANDIDATES:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"design_docs/ not found in {[str(p) for p in _CANDIDATES]}")


def load(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """Map of design document id (``_design/<name>``) to its content, without ``_rev``."""
    root = root or folder()
    docs: dict[str, dict[str, Any]] = {}
    for ddoc in sorted(p for p in root.iterdir() if p.is_dir()):
        views: dict[str, dict[str, str]] = {}
        for view in sorted(p for p in (ddoc / "views").iterdir() if p.is_dir()):
            views[view.name] = {"map": _with_constants((view / "map.js").read_text().strip())}
            if (view / "reduce.js").exists():
                views[view.name]["reduce"] = (view / "reduce.js").read_text().strip()
        docs[f"_design/{ddoc.name}"] = {"language": "javascript", "views": views}
        if (ddoc / "filters").is_dir():  # replication filters (README "Multi-site sync")
            docs[f"_design/{ddoc.name}"]["filters"] = {
                p.stem: p.read_text().strip() for p in sorted((ddoc / "filters").glob("*.js"))}
    return docs


def _with_constants(source: str) -> str:
    constants = view_constants()
    return re.sub(r"\bLEVEL_TAGS_[A-Z_]+\b", lambda m: json.dumps(list(constants[m.group(0)])), source)
