"""The package as users install it: a wheel carries every design document of the tree.

``scripts/wheel_check.py`` (a CI step) goes further: it installs the wheel into a fresh virtual
environment and stores, searches and retrieves through it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from conftest import REPO_ROOT, load_script

from dicomweb_couch.store import design_docs

wheel_check = load_script("wheel_check")


def test_wheel_ships_the_design_documents_of_the_tree(tmp_path: Path):
    wheel = wheel_check.build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "installed", [n for n in names if n.startswith("dicomweb_couch/")])
    in_tree = {p.relative_to(REPO_ROOT).as_posix()
               for p in (REPO_ROOT / "dicomweb_couch" / "design_docs").rglob("*") if p.is_file()}
    assert in_tree and in_tree <= names, sorted(in_tree - names)
    installed = design_docs.load(tmp_path / "installed" / "dicomweb_couch" / "design_docs")
    assert installed == design_docs.load()
    assert set(installed["_design/qido"]["views"]) == {"instances", "membership", "series", "studies"}
