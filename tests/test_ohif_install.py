"""scripts/ohif.py: the pinned OHIF build, moved from / to /ohif/, compressed, installed safely."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, load_script

ohif = load_script("ohif")

ROOT_INDEX = ('<html><head><link rel="manifest" href="/manifest.json"><script>window.PUBLIC_URL="/"</script>'
              '<script src="/app-config.js"></script><link href="//cdn.example/x.css" rel="stylesheet">'
              '<script>function f(){}window.PUBLIC_URL="/"</script><script defer src="/app.bundle.abc.js"></script>'
              '</head></html>')
RUNTIME = '// webpack/runtime/public_path\n(() => {\n__webpack_require__.p = "/";\n})();\n'


def root_build(folder: Path) -> Path:
    """The places where a build made for the site root names it, as in OHIF 3.13's dist/."""
    folder.mkdir(parents=True)
    (folder / "index.html").write_text(ROOT_INDEX)
    (folder / "app.bundle.abc.js").write_text(RUNTIME + "var x = '/not/a/path';\n" * 200)
    (folder / "worker.bundle.def.js").write_text(RUNTIME)
    (folder / "app.bundle.css").write_text("@font-face{src:url(/a1b2.woff2)} .x{background:url(//cdn/y.png)}")
    (folder / "manifest.json").write_text('{"icons": [{"src": "/assets/icon.png"}], "start_url": "./index.html"}')
    (folder / "ort").mkdir()
    (folder / "ort" / "ort.wasm").write_bytes(os.urandom(4096))  # incompressible
    (folder / "ort" / "ort.min.js").write_text("/* lib */" + "function a(){return '/x';}\n" * 100)
    (folder / "tiny.js").write_text("1")
    return folder


def test_relocate_rewrites_every_root_reference(tmp_path):
    build = root_build(tmp_path / "dist")
    changed = ohif.relocate(build)
    index = (build / "index.html").read_text()
    assert index.count('window.PUBLIC_URL="/ohif/"') == 2
    assert 'src="/ohif/app-config.js"' in index and 'src="/ohif/app.bundle.abc.js"' in index
    assert 'href="/ohif/manifest.json"' in index
    assert 'href="//cdn.example/x.css"' in index  # protocol-relative URLs are left alone
    for bundle in ("app.bundle.abc.js", "worker.bundle.def.js"):
        assert '__webpack_require__.p = "/ohif/";' in (build / bundle).read_text()
    assert "'/not/a/path'" in (build / "app.bundle.abc.js").read_text()
    css = (build / "app.bundle.css").read_text()
    assert "url(/ohif/a1b2.woff2)" in css and "url(//cdn/y.png)" in css
    assert json.loads((build / "manifest.json").read_text())["icons"][0]["src"] == "/ohif/assets/icon.png"
    assert "/x" in (build / "ort" / "ort.min.js").read_text()  # libraries in subfolders are untouched
    assert changed == {"index.html": 5, "app.bundle.abc.js": 1, "worker.bundle.def.js": 1, "app.bundle.css": 1,
                       "manifest.json": 1}


def test_relocate_refuses_a_build_not_made_for_the_root(tmp_path):
    build = root_build(tmp_path / "dist")
    ohif.relocate(build)
    moved = {p: p.read_bytes() for p in build.rglob("*") if p.is_file()}
    with pytest.raises(ohif.OhifError, match="not a build made for the root"):
        ohif.relocate(build)  # a second time: it is already at /ohif/
    assert {p: p.read_bytes() for p in build.rglob("*") if p.is_file()} == moved  # nothing was touched


def test_relocate_refuses_a_build_without_webpack_runtime(tmp_path):
    build = root_build(tmp_path / "dist")
    for bundle in build.glob("*.js"):
        bundle.write_text("console.log(1);")
    with pytest.raises(ohif.OhifError, match="webpack public path"):
        ohif.relocate(build)


def test_compress_writes_gzip_copies_where_they_help(tmp_path):
    build = root_build(tmp_path / "dist")
    written = ohif.compress(build)
    assert gzip.decompress((build / "app.bundle.abc.js.gz").read_bytes()) == (build / "app.bundle.abc.js").read_bytes()
    assert (build / "ort" / "ort.min.js.gz").exists()
    assert not (build / "ort" / "ort.wasm.gz").exists()  # random bytes do not shrink
    assert not (build / "tiny.js.gz").exists()  # too small to be worth it
    assert written == len(list(build.rglob("*.gz")))


def test_install_refuses_a_folder_it_did_not_make(tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "precious.txt").write_text("keep me")
    with pytest.raises(ohif.OhifError, match="not empty and was not made by this command"):
        ohif.install(dest, quiet=True)
    assert (dest / "precious.txt").read_text() == "keep me"


def test_install_refuses_a_tarball_of_another_integrity(tmp_path, monkeypatch, installed_ohif_build):
    """``installed_ohif_build`` put the pinned tarball in npm's cache: here it is fetched again."""
    monkeypatch.setattr(ohif, "INTEGRITY", "sha512-not-the-real-one")
    with pytest.raises(ohif.OhifError, match="refusing to install it"):
        ohif.install(tmp_path / "ohif", quiet=True)
    assert not (tmp_path / "ohif").exists()
    assert not list(tmp_path.iterdir())  # the work folder is gone too


def test_status_command(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "ohif.py"), "status", "--dest",
                             str(tmp_path / "none")], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "is not installed" in result.stdout


def test_the_installed_build_links_only_to_its_own_files(installed_ohif_build):
    """The real pinned build, as installed: every file index.html loads is there, under /ohif/."""
    dest = installed_ohif_build
    assert ohif.is_installed(dest)
    index = (dest / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', index)
    assert links and all(link.startswith("/ohif/") for link in links), links
    assert all((dest / link.removeprefix("/ohif/")).is_file() for link in links)
    assert (dest / next(dest.glob("app.bundle.*.js")).name).with_suffix(".js.gz").exists()
