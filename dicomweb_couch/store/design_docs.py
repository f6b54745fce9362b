"""The CouchDB design documents, read from the package's ``design_docs/`` folder.

Layout (the CouchApp convention): ``design_docs/<name>/views/<view>/map.js`` and an optional
``reduce.js`` holding a built-in reduce such as ``_count``; ``design_docs/<name>/filters/<filter>.js``
for replication filters (which do not touch the indexes). Keeping them as plain JavaScript files
lets them be read, diffed and reviewed like code; the server installs them at start-up.
The ``LEVEL_TAGS_*`` names in map functions are replaced by the tag lists of ``levels.py``.

The folder is package data (``setup.cfg`` ships ``design_docs/**/*.js`` by glob), read through
:mod:`importlib.resources`, so a wheel, a container image and a source checkout all read the very
files of the tree: nothing is listed by hand.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from dicomweb_couch.dicom.levels import view_constants


def folder() -> Traversable:
    """The ``design_docs/`` folder of the installed package."""
    return resources.files("dicomweb_couch") / "design_docs"


def load(root: Traversable | None = None) -> dict[str, dict[str, Any]]:
    """Map of design document id (``_design/<name>``) to its content, without ``_rev``."""
    root = root or folder()
    if not root.is_dir():
        raise FileNotFoundError(f"the design documents folder {root} is missing from this install")
    docs: dict[str, dict[str, Any]] = {}
    for ddoc in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name):
        views: dict[str, dict[str, str]] = {}
        for view in sorted((p for p in (ddoc / "views").iterdir() if p.is_dir()), key=lambda p: p.name):
            views[view.name] = {"map": _with_constants((view / "map.js").read_text().strip())}
            if (view / "reduce.js").is_file():
                views[view.name]["reduce"] = (view / "reduce.js").read_text().strip()
        docs[f"_design/{ddoc.name}"] = {"language": "javascript", "views": views}
        if (ddoc / "filters").is_dir():  # replication filters (README "Multi-site sync")
            docs[f"_design/{ddoc.name}"]["filters"] = {
                p.stem: p.read_text().strip() for p in sorted((ddoc / "filters").glob("*.js"))}
    return docs


def _with_constants(source: str) -> str:
    constants = view_constants()
    return re.sub(r"\bLEVEL_TAGS_[A-Z_]+\b", lambda m: json.dumps(list(constants[m.group(0)])), source)
