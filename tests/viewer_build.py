"""A small stand-in OHIF build (the files an OHIF build has, made for /ohif/), for fast viewer tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

INDEX = ('<!doctype html><html><head><script>window.PUBLIC_URL="/ohif/"</script>'
         '<script defer src="/ohif/app.bundle.0123456789abcdef.js"></script></head><body></body></html>')
BUNDLE = "/* the app */\n" + "console.log('OHIF');\n" * 200


def write_build(folder: Path, public_url: str = "/ohif/") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(INDEX.replace('"/ohif/"', json.dumps(public_url)))
    (folder / "app.bundle.0123456789abcdef.js").write_text(BUNDLE)
    (folder / "app.bundle.0123456789abcdef.js.gz").write_bytes(gzip.compress(BUNDLE.encode(), mtime=0))
    (folder / "ort").mkdir(exist_ok=True)
    (folder / "ort" / "ort.min.mjs").write_text("export default 1;\n" * 100)
    (folder / "app-config.js").write_text("window.config = {shipped: true};")
    (folder / ".dicomweb-couch-ohif.json").write_text("{}")
    return folder
