#!/usr/bin/env python3
"""Install the pinned OHIF Viewer build for dicomweb_couch's ``/ohif/`` (standard library only).

The npm package ``@ohif/app`` ships OHIF v3's production build in ``dist/``. Only that tarball is
fetched (``npm pack``, which keeps it in npm's cache for the next install): its npm
dependencies are the sources the build was made from, not something it needs at run time. The
tarball's integrity is checked against the pinned value below.

The published build is made for the site root (``PUBLIC_URL=/``); OHIF's documented way to host it
elsewhere is to build it with ``PUBLIC_URL=/ohif/``. This command does the same to the published
build once, at install time: it rewrites the few places where the build names its root (the
``index.html`` links and ``window.PUBLIC_URL``, webpack's public path in each bundle, the font URLs
in the CSS, the web manifest's icons), so the server can then serve the files as they are.
Text files and WebAssembly modules also get a gzip copy beside them (``name.gz``), which the server
sends to browsers that accept gzip (the 17 MB main bundle becomes 3.3 MB).

Command line::

    python scripts/ohif.py install [--dest var/ohif]   # no-op when that build is already there
    python scripts/ohif.py status [--dest var/ohif]    # exit 0 if installed

The destination holds the build's files and a stamp file ``.dicomweb-couch-ohif.json``; an install
replaces a folder that has such a stamp and refuses to touch any other non-empty folder.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PACKAGE = "@ohif/app"
VERSION = "3.13.2"
INTEGRITY = (
    "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
)
BASE = "/ohif/"
"""Where dicomweb_couch serves the viewer (``dicomweb_couch.web.viewer.MOUNT`` plus a slash)."""
DEFAULT_DEST = Path(os.environ.get("DICOMWEB_COUCH_DATA") or Path(__file__).resolve().parent.parent / "var") / "ohif"
STAMP = ".dicomweb-couch-ohif.json"
LAYOUT = 1  # bump when relocate() or compress() change, so that existing installs are redone

COMPRESSIBLE = {".js", ".mjs", ".css", ".html", ".json", ".jsonc", ".svg", ".wasm", ".map", ".txt",
                ".xml", ".webapp", ".ico"}
MIN_COMPRESS = 1024  # below this, gzip framing costs more than it saves


class OhifError(RuntimeError):
    """The viewer could not be installed."""


def _stamp() -> dict[str, object]:
    return {"package": PACKAGE, "version": VERSION, "integrity": INTEGRITY, "base": BASE, "layout": LAYOUT}


def is_installed(dest: Path) -> bool:
    """True when ``dest`` holds this very build (same package, version, base and layout)."""
    try:
        return json.loads((dest / STAMP).read_text()) == _stamp() and (dest / "index.html").is_file()
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- relocation

_PUBLIC_URL = re.compile(r'(window\.PUBLIC_URL\s*=\s*)"/"')
_WEBPACK_PATH = re.compile(r'(__webpack_require__\.p\s*=\s*)"/";')
# (files, pattern, replacement): every place where the published build names its root "/".
_RELOCATIONS: list[tuple[str, re.Pattern[str], str]] = [
    ("index.html", _PUBLIC_URL, rf'\1"{BASE}"'),
    ("index.html", re.compile(r'(\s(?:href|src)=")/(?!/)'), rf"\1{BASE}"),
    ("*.js", _WEBPACK_PATH, rf'\1"{BASE}";'),
    ("*.css", re.compile(r"url\(/(?!/)"), f"url({BASE}"),
    ("manifest.json", re.compile(r'("src":\s*")/(?!/)'), rf"\1{BASE}"),
]


def relocate(build: Path) -> dict[str, int]:
    """Rewrite a build made for ``/`` to be served at :data:`BASE`; return replacements per file.

    Only the build's top folder holds webpack output (subfolders are third-party libraries that
    use relative paths). Raises :class:`OhifError`, before changing anything, when ``index.html``
    does not set ``window.PUBLIC_URL="/"`` or no bundle sets webpack's public path to ``/``: the
    build is then not one made for the root (or was moved already).
    """
    index = build / "index.html"
    if not index.is_file() or not _PUBLIC_URL.search(index.read_text(encoding="utf-8")):
        raise OhifError(f'{index} does not set window.PUBLIC_URL="/": not a build made for the root')
    if not any(_WEBPACK_PATH.search(p.read_text(encoding="utf-8")) for p in build.glob("*.js")):
        raise OhifError(f"no webpack public path found in {build}/*.js: this build cannot be moved to {BASE}")
    changed: dict[str, int] = {}
    for glob, pattern, replacement in _RELOCATIONS:
        for path in sorted(build.glob(glob)):
            text, count = pattern.subn(replacement, path.read_text(encoding="utf-8"))
            if count:
                path.write_text(text, encoding="utf-8")
                changed[path.name] = changed.get(path.name, 0) + count
    return changed


# --------------------------------------------------------------------------- compression


def _compress_one(path: Path) -> bool:
    data = path.read_bytes()
    packed = gzip.compress(data, compresslevel=9, mtime=0)
    if len(packed) > 0.9 * len(data):
        return False
    path.with_name(path.name + ".gz").write_bytes(packed)
    return True


def compress(build: Path) -> int:
    """Write ``name.gz`` beside every compressible file worth it; return how many were written."""
    candidates = [p for p in build.rglob("*")
                  if p.is_file() and p.suffix in COMPRESSIBLE and p.stat().st_size >= MIN_COMPRESS]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # zlib releases the GIL
        return sum(pool.map(_compress_one, candidates))


# --------------------------------------------------------------------------- install


def _npm_pack(workdir: Path) -> Path:
    """Fetch the pinned tarball into ``workdir`` with npm (from its cache when it has it)."""
    if shutil.which("npm") is None:
        raise OhifError("npm not found on PATH: installing the OHIF Viewer needs Node.js and npm "
                        "(Debian: apt-get install nodejs npm)")
    cmd = ["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(workdir), "--json",
           "--ignore-scripts", "--loglevel=error"]
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OhifError(f"{' '.join(cmd)} failed (exit {result.returncode}):\n{result.stderr.strip()[-2000:]}")
    try:
        [info] = json.loads(result.stdout)
    except ValueError as exc:
        raise OhifError(f"npm pack printed no package description: {result.stdout[-500:]!r}") from exc
    if info.get("integrity") != INTEGRITY:
        raise OhifError(f"{PACKAGE}@{VERSION} from npm has integrity {info.get('integrity')}, "
                        f"not the pinned {INTEGRITY}: refusing to install it")
    return workdir / info["filename"]


def _extract_dist(tarball: Path, into: Path) -> None:
    """Extract the tarball's ``package/dist/`` into ``into`` (tar's 'data' filter: no links out)."""
    prefix = "package/dist/"
    with tarfile.open(tarball) as tar:
        members = []
        for member in tar.getmembers():
            if member.name.startswith(prefix) and len(member.name) > len(prefix):
                member.name = member.name[len(prefix):]
                members.append(member)
        if not members:
            raise OhifError(f"{tarball.name} has no {prefix} folder")
        tar.extractall(into, members=members, filter="data")


def _check_dest(dest: Path) -> None:
    if dest.exists() and not (dest / STAMP).exists() and any(dest.iterdir()):
        raise OhifError(f"{dest} is not empty and was not made by this command: choose another --dest")


def install(dest: Path = DEFAULT_DEST, quiet: bool = False) -> Path:
    """Install the pinned build into ``dest`` unless it is there already; return ``dest``.

    The build is assembled in a sibling folder and moved into place at the end, so an interrupted
    install never leaves a half build where the server looks for one.
    """
    dest = dest.resolve()
    if is_installed(dest):
        return dest
    _check_dest(dest)
    if not quiet:
        print(f"ohif: installing {PACKAGE}@{VERSION} into {dest}", file=sys.stderr)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.installing-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        work.mkdir()
        tarball = _npm_pack(work)
        build = work / "build"
        _extract_dist(tarball, build)
        relocate(build)
        compress(build)
        (build / STAMP).write_text(json.dumps(_stamp(), indent=2) + "\n")
        if dest.exists():
            old = work / "old"
            dest.rename(old)
        build.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("install", "install the pinned build unless it is there"),
                       ("status", "exit 0 if the pinned build is installed")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                       help=f"the viewer's folder (default: $DICOMWEB_COUCH_DATA/ohif, here {DEFAULT_DEST})")
    args = parser.parse_args(None if argv is None else list(argv))
    if args.command == "status":
        installed = is_installed(args.dest)
        print(f"{PACKAGE}@{VERSION} {'is' if installed else 'is not'} installed in {args.dest}")
        return 0 if installed else 1
    try:
        install(args.dest)
    except (OhifError, OSError, tarfile.TarError) as exc:
        print(f"ohif: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
