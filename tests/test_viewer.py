"""/ohif/: the viewer's files, its routes, caching and compression, and the generated app-config.js.

A small stand-in build (the files an OHIF build has, made for /ohif/) keeps these tests fast; the
real OHIF build in a real browser is tests/test_ohif_browser.py.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess

import pytest
from viewer_build import BUNDLE, INDEX, write_build

from dicomweb_couch.web.viewer import app_config


@pytest.fixture
async def viewer_client(make_client, couch_db_name, tmp_path):
    return await make_client(couch_db_name, ohif_dir=str(write_build(tmp_path / "ohif")))


async def test_ohif_without_slash_redirects(viewer_client):
    resp = await viewer_client.get("/ohif", params={"a": "b"}, allow_redirects=False)
    assert resp.status == 301
    assert resp.headers["Location"] == "/ohif/?a=b"


async def test_index_is_served_and_revalidated(viewer_client):
    resp = await viewer_client.get("/ohif/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert await resp.text() == INDEX
    again = await viewer_client.get("/ohif/", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status == 304
    head = await viewer_client.head("/ohif/")
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(INDEX)


@pytest.mark.parametrize("route", ["viewer?StudyInstanceUIDs=1.2.3", "viewer/dicomjson", "segmentation",
                                   "viewer/1.2.840.113619.2.55", "index.html"])
async def test_routes_of_the_app_get_the_index(viewer_client, route):
    resp = await viewer_client.get(f"/ohif/{route}")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert await resp.text() == INDEX


@pytest.mark.parametrize("path", ["missing.js", "assets/nope.png", "ort/gone.wasm", ".dicomweb-couch-ohif.json"])
async def test_missing_files_are_404(viewer_client, path):
    resp = await viewer_client.get(f"/ohif/{path}")
    assert resp.status == 404
    assert (await resp.json())["message"] == f"/ohif/{path} is not a file of the OHIF Viewer build"


@pytest.mark.parametrize("path", ["..%2F..%2Fsetup.cfg", "ort/..%2F..%2F..%2Fsetup.cfg", "%2e%2e/%2e%2e/setup.cfg"])
async def test_nothing_outside_the_build_is_served(viewer_client, path):
    resp = await viewer_client.get(f"/ohif/{path}")
    assert resp.status == 404
    assert "[metadata]" not in await resp.text()


async def test_hashed_files_are_immutable_and_sent_gzipped(viewer_client):
    path = "/ohif/app.bundle.0123456789abcdef.js"
    resp = await viewer_client.get(path, headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.content_type == "text/javascript"
    assert gzip.decompress(await resp.read()) == BUNDLE.encode()
    plain = await viewer_client.get(path, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert await plain.read() == BUNDLE.encode()


async def test_other_text_is_compressed_on_the_fly(viewer_client):
    resp = await viewer_client.get("/ohif/ort/ort.min.mjs", headers={"Accept-Encoding": "gzip"},
                                   auto_decompress=False)
    assert resp.status == 200
    assert resp.content_type == "text/javascript"  # module scripts need a JavaScript type
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await resp.read()) == ("export default 1;\n" * 100).encode()


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_range_requests_get_the_bytes_asked_for(viewer_client, encoding):
    """A range is taken from the representation sent (RFC 9110 14.1): the gzip copy when accepted."""
    path = "/ohif/app.bundle.0123456789abcdef.js"
    resp = await viewer_client.get(path, headers={"Range": "bytes=0-9", "Accept-Encoding": encoding},
                                   auto_decompress=False)
    assert resp.status == 206
    whole = BUNDLE.encode() if encoding == "identity" else gzip.compress(BUNDLE.encode(), mtime=0)
    assert resp.headers["Content-Range"] == f"bytes 0-9/{len(whole)}"
    assert await resp.read() == whole[:10]


async def test_revalidating_a_compressible_file(viewer_client):
    resp = await viewer_client.get("/ohif/ort/ort.min.mjs", headers={"Accept-Encoding": "gzip"})
    again = await viewer_client.get("/ohif/ort/ort.min.mjs", headers={"If-None-Match": resp.headers["ETag"],
                                                                       "Accept-Encoding": "gzip"})
    assert again.status == 304
    assert (await viewer_client.get("/ohif/ort/ort.min.mjs")).status == 200  # the connection is still sound


def evaluate_config(script: str, origin: str = "http://viewer.example:5985") -> dict:
    """Run an app-config.js as the browser would (node, a window with a location) and return window.config."""
    program = (f"const window = {{location: {{origin: {json.dumps(origin)}}}}};\n{script}\n"
               "process.stdout.write(JSON.stringify(window.config));")
    result = subprocess.run(["node", "-e", program], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(shutil.which("node") is None, reason="node runs the generated JavaScript")
@pytest.mark.parametrize("prefix", ["", "/dicom-web"])
async def test_generated_config_points_at_this_server(make_client, couch_db_name, tmp_path, prefix):
    client = await make_client(couch_db_name, ohif_dir=str(write_build(tmp_path / "ohif")), prefix=prefix)
    resp = await client.get("/ohif/app-config.js")
    assert resp.status == 200
    assert resp.content_type == "text/javascript"
    assert resp.headers["Cache-Control"] == "no-cache"
    config = evaluate_config(await resp.text())
    assert config["routerBasename"] == "/ohif/"
    [source] = config["dataSources"]
    assert config["defaultDataSourceName"] == source["sourceName"]
    root = "http://viewer.example:5985" + prefix
    assert source["configuration"] | {
        "qidoRoot": root, "wadoRoot": root, "wadoUriRoot": root + "/wado",
        "imageRendering": "wadouri", "thumbnailRendering": "wadors", "qidoSupportsIncludeField": True,
        "enableStudyLazyLoad": True, "supportsWildcard": True,
    } == source["configuration"]


async def test_generated_config_is_the_module_function(viewer_client):
    resp = await viewer_client.get("/ohif/app-config.js")
    assert await resp.text() == app_config("")


async def test_own_config_file_is_served(make_client, couch_db_name, tmp_path):
    config = tmp_path / "my-config.js"
    config.write_text("window.config = {mine: true};")
    client = await make_client(couch_db_name, ohif_dir=str(write_build(tmp_path / "ohif")), ohif_config=str(config))
    resp = await client.get("/ohif/app-config.js")
    assert resp.status == 200
    assert resp.content_type == "text/javascript"
    assert await resp.text() == "window.config = {mine: true};"


async def test_missing_own_config_file_is_503(make_client, couch_db_name, tmp_path):
    client = await make_client(couch_db_name, ohif_dir=str(write_build(tmp_path / "ohif")),
                               ohif_config=str(tmp_path / "nowhere.js"))
    resp = await client.get("/ohif/app-config.js")
    assert resp.status == 503
    assert "nowhere.js" in (await resp.json())["message"]


@pytest.mark.parametrize("path", ["", "viewer?StudyInstanceUIDs=1.2.3", "app.bundle.0123456789abcdef.js"])
async def test_without_a_build_ohif_says_how_to_install_it(make_client, couch_db_name, tmp_path, path):
    folder = tmp_path / "not-installed"
    client = await make_client(couch_db_name, ohif_dir=str(folder))
    resp = await client.get(f"/ohif/{path}")
    assert resp.status == 503
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert f"python scripts/ohif.py install --dest {folder}" in page
    assert "no index.html" in page


async def test_a_build_for_another_path_is_refused_with_the_fix(make_client, couch_db_name, tmp_path):
    client = await make_client(couch_db_name, ohif_dir=str(write_build(tmp_path / "ohif", public_url="/")))
    resp = await client.get("/ohif/viewer")
    assert resp.status == 503
    assert "PUBLIC_URL=/ohif/" in await resp.text()
