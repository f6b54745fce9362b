"""OHIF in a real browser: the published OHIF 3.13.2 build in headless Chromium, against the real
server (``python -m dicomweb_couch``, as a user starts it) and the real store.

What a person does, checked as a person would see it: the study list shows the stored studies;
the Patient filter narrows the list because the server filtered (its answer is read, not only the
page); a study opens and its image is drawn (screenshot pixels, not a blank canvas); scrolling
shows the next slice; a multi-frame instance and JPEG-compressed instances (OHIF decodes them
itself) are drawn. No request the page makes may fail, be refused by CORS or answer 4xx/5xx.

Everything runs twice: with OHIF served by the archive at ``/ohif/`` (same origin, the generated
app-config.js), and with OHIF served by a second server on another port (another origin) whose
own app-config.js (the ``ohif_config`` setting) points at the archive, so that every DICOMweb
request is cross-origin. Screenshots go to ``test-output/ohif/``.

Needs Debian's ``chromium`` (driven by Playwright, never its own browser download) and the OHIF
build (``scripts/ohif.py``, npm); without them these tests skip, except in CI (``CI=true``),
where they fail.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pydicom
import pytest
from conftest import REPO_ROOT, CouchServer, local_couch, unavailable
from dicomweb_client.api import DICOMwebClient
from ohif_archive import CT_SLICES, Study, archive
from server_process import clean_env, couch_env

CHROMIUM = os.environ.get("DICOMWEB_COUCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
OUTPUT = REPO_ROOT / "test-output" / "ohif"
VIEWPORT = {"width": 1400, "height": 900}
TIMEOUT_MS = 60_000  # OHIF's first load parses a 17 MB bundle; software WebGL is slow on CI
START_TIMEOUT = 30


# -- the servers ------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path


@contextmanager
def server(log_dir: Path, couch: CouchServer, database: str, *args: str) -> Iterator[Server]:
    """``python -m dicomweb_couch`` on a free port of this database; stopped with SIGTERM."""
    port = local_couch.free_port()
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dicomweb_couch", "--port", str(port), "--couch-url", couch.url,
             "--database", database, *args],
            cwd=REPO_ROOT, env=clean_env(**couch_env(couch)), stdout=log, stderr=subprocess.STDOUT)
    running = Server(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(running.url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


@dataclass(frozen=True)
class Viewer:
    """Where the page comes from (``page``) and where its DICOMweb requests go (``dicomweb``)."""

    mode: str
    page: str
    dicomweb: str
    studies: dict[str, Study]


@pytest.fixture(scope="module")
def ohif_build(installed_ohif_build: Path) -> Path:
    return installed_ohif_build


@pytest.fixture(scope="module")
def archive_server(ohif_build: Path, couch_server: CouchServer,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Study]]]:
    """The archive, with the three studies stored by dicomweb_client (STOW-RS)."""
    database = f"test_ohif_{uuid.uuid4().hex}"
    log_dir = tmp_path_factory.mktemp("ohif-servers")
    try:
        with server(log_dir, couch_server, database, "--ohif-dir", str(ohif_build)) as archive_srv:
            studies, files = archive()
            DICOMwebClient(url=archive_srv.url).store_instances([pydicom.dcmread(io.BytesIO(f)) for f in files])
            yield archive_srv, studies
    finally:
        couch_server.request("DELETE", database)


@pytest.fixture(scope="module", params=["same-origin", "cross-origin"])
def viewer(request: pytest.FixtureRequest, archive_server: tuple[Server, dict[str, Study]], ohif_build: Path,
           couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    archive_srv, studies = archive_server
    if request.param == "same-origin":
        yield Viewer(request.param, archive_srv.url, archive_srv.url, studies)
        return
    folder = tmp_path_factory.mktemp("ohif-elsewhere")
    config = folder / "app-config.js"
    config.write_text(cross_origin_config(archive_srv.url))
    database = f"test_ohif_site_{uuid.uuid4().hex}"  # the viewer's own server stores nothing
    try:
        with server(folder, couch_server, database, "--ohif-dir", str(ohif_build),
                    "--ohif-config", str(config)) as site:
            yield Viewer(request.param, site.url, archive_srv.url, studies)
    finally:
        couch_server.request("DELETE", database)


def cross_origin_config(root: str) -> str:
    """An app-config.js as a user writes it for OHIF hosted apart from the archive (README)."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "dicomweb",
        "configuration": {
            "friendlyName": "dicomweb_couch", "name": "dicomweb_couch",
            "qidoRoot": root, "wadoRoot": root, "wadoUriRoot": root + "/wado",
            "qidoSupportsIncludeField": True, "imageRendering": "wadouri", "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True, "supportsWildcard": True,
        },
    }
    config = {"routerBasename": "/ohif/", "showStudyList": True, "extensions": [], "modes": [],
              "defaultDataSourceName": "dicomweb", "dataSources": [source]}
    return f"window.config = {json.dumps(config, indent=2)};\n"


# -- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless; Playwright gives every launch a fresh temporary profile."""
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -e '.[test]')")
        raise
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Page:
    """A browser tab on the viewer that records every response, failure and CORS complaint."""

    page: Any
    viewer: Viewer
    responses: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    cors_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("response", lambda r: self.responses.append(r))
        # ERR_ABORTED: OHIF cancelling its own prefetches (navigation, closing); a CORS refusal
        # or an unreachable server is net::ERR_FAILED.
        self.page.on("requestfailed", lambda r: None if "ERR_ABORTED" in (r.failure or "") else
                     self.failures.append(f"{r.method} {r.url}: {r.failure}"))
        self.page.on("console", lambda m: self.cors_errors.append(m.text)
                     if m.type == "error" and "CORS" in m.text else None)

    def open(self, path: str) -> None:
        self.page.goto(f"{self.viewer.page}/ohif/{path}")

    def dicomweb(self) -> list[Any]:
        """Responses of the archive's DICOMweb routes (not the viewer's own files)."""
        return [r for r in self.responses
                if r.url.startswith(self.viewer.dicomweb + "/") and not urlsplit(r.url).path.startswith("/ohif/")]

    def dismiss_overlays(self) -> None:
        """Close OHIF's first-visit notices as a person would, so that screenshots show the images."""
        for name in ("Skip all", "Confirm and hide"):
            button = self.page.get_by_text(name, exact=True)
            if button.count() and button.first.is_visible():
                button.first.click()

    def screenshot(self, name: str) -> None:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(OUTPUT / f"{self.viewer.mode}-{name}.png"))

    def viewport_pixels(self) -> np.ndarray:
        """What the image viewport shows, as grey levels, without the margins where OHIF writes text."""
        from PIL import Image

        png = self.page.locator(".cornerstone-canvas").first.screenshot()
        grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
        h, w = grey.shape
        return grey[h // 8: h - h // 8, w // 8: w - w // 8]

    def wait_for_image(self) -> np.ndarray:
        """The viewport once it shows an image: not blank, not one flat colour (see :func:`drawn`)."""
        self.page.locator(".cornerstone-canvas").first.wait_for()
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not drawn(pixels := self.viewport_pixels()):
            if time.monotonic() > deadline:
                self.screenshot("failed-no-image")
                pytest.fail(f"the viewport shows no image ({len(np.unique(pixels))} grey levels, std "
                            f"{pixels.std():.1f}); failed requests: {self.failures}")
            time.sleep(0.5)
        return pixels

    def assert_clean(self) -> None:
        """No request of the page failed, answered an error, or was refused by CORS."""
        errors = [f"{r.status} {r.request.method} {r.url}" for r in self.responses if r.status >= 400]
        assert not errors, errors
        assert not self.failures, self.failures
        assert not self.cors_errors, self.cors_errors
        dicomweb = self.dicomweb()
        assert dicomweb, "the page made no DICOMweb request"
        if self.viewer.page != self.viewer.dicomweb:  # cross-origin: every answer carried CORS
            assert all(r.headers.get("access-control-allow-origin") == "*" for r in dicomweb)


@pytest.fixture(scope="module")
def browser_context(browser: Any, viewer: Viewer) -> Iterator[Any]:
    """One browser profile per viewer: its HTTP cache keeps OHIF's immutable files between tests."""
    context = browser.new_context(viewport=VIEWPORT)
    yield context
    context.close()


@pytest.fixture
def tab(browser_context: Any, viewer: Viewer) -> Iterator[Page]:
    page = browser_context.new_page()
    try:
        yield Page(page, viewer)
    finally:
        page.close()


def drawn(pixels: np.ndarray) -> bool:
    """An image, as opposed to an empty viewport: many grey levels, and at least 5 % of the pixels
    clearly apart from the background (the commonest level): true of a dark ultrasound sector or a
    whole-body scan as much as of a CT slice."""
    levels, counts = np.unique(pixels.round(), return_counts=True)
    background = levels[counts.argmax()]
    return len(levels) >= 16 and (np.abs(pixels - background) > 16).mean() > 0.05


def qido_answer(tab: Page, **wanted: str) -> list[dict[str, Any]]:
    """The archive's JSON answer to the page's /studies query whose parameters include ``wanted``."""
    for response in reversed(tab.dicomweb()):
        parts = urlsplit(response.url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/studies" and all(query.get(k) == v for k, v in wanted.items()):
            return response.json()
    raise AssertionError(f"the page sent no /studies query with {wanted}: {[r.url for r in tab.dicomweb()]}")


def study_uids(records: list[dict[str, Any]]) -> set[str]:
    return {r["0020000D"]["Value"][0] for r in records}


# -- the tests --------------------------------------------------------------------------------


def test_study_list_shows_the_stored_studies(tab: Page) -> None:
    studies = tab.viewer.studies
    tab.open("")
    for study in studies.values():
        tab.page.get_by_text(study.shown_name, exact=True).wait_for()
    tab.dismiss_overlays()
    tab.screenshot("study-list")
    answer = qido_answer(tab, limit="101", offset="0")
    assert study_uids(answer) == {s.uid for s in studies.values()}
    tab.assert_clean()


def test_patient_filter_is_answered_by_the_server(tab: Page) -> None:
    studies = tab.viewer.studies
    tab.open("")
    tab.page.get_by_text(studies["ct"].shown_name, exact=True).wait_for()
    with tab.page.expect_response(lambda r: "PatientName=" in r.url) as filtered:
        tab.page.locator("td input").first.fill("roe")  # the filter under the Patient column
    assert parse_qs(urlsplit(filtered.value.url).query)["PatientName"] == ["*roe*"]  # OHIF adds the wildcards
    assert study_uids(filtered.value.json()) == {studies["multiframe"].uid}  # the server filtered
    tab.page.get_by_text(studies["ct"].shown_name, exact=True).wait_for(state="detached")
    assert tab.page.get_by_text(studies["multiframe"].shown_name, exact=True).is_visible()
    tab.dismiss_overlays()
    tab.screenshot("study-list-filtered")
    tab.assert_clean()


def test_viewer_draws_the_ct_and_scrolls_to_the_next_slice(tab: Page) -> None:
    study = tab.viewer.studies["ct"]
    tab.open(f"viewer?StudyInstanceUIDs={study.uid}")
    first = tab.wait_for_image()
    # the phantom: air (black), soft tissue (grey) and bone (white) all show
    for low, high in ((0, 30), (90, 170), (225, 256)):
        assert ((first >= low) & (first < high)).mean() > 0.02, (low, high)
    tab.dismiss_overlays()
    tab.page.get_by_text(f"(1/{CT_SLICES})").wait_for()
    tab.screenshot("viewer-ct-slice-1")
    box = tab.page.locator(".cornerstone-canvas").first.bounding_box()
    tab.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tab.page.mouse.wheel(0, 120)  # OHIF's stack scroll: one image down
    tab.page.get_by_text(f"(2/{CT_SLICES})").wait_for()
    time.sleep(0.5)  # the overlay text changes with the render, give the canvas its frame
    second = tab.wait_for_image()
    assert np.abs(second - first).mean() > 1, "scrolling did not change the image"
    tab.screenshot("viewer-ct-slice-2")
    tab.assert_clean()


@pytest.mark.parametrize("study, series, frames", [
    ("multiframe", "sc", 8),  # Multi-frame Grayscale Word SC, uncompressed
    ("multiframe", "us", 30),  # pydicom's ultrasound clip, JPEG Baseline, YBR_FULL_422
    ("jpeg", "baseline", 1),  # JPEG Baseline, 8-bit RGB colour bars
    ("jpeg", "extended", 1),  # JPEG Extended, 12-bit NM whole body
])
def test_viewer_draws_multiframe_and_jpeg_instances(tab: Page, study: str, series: str, frames: int) -> None:
    """OHIF decodes these itself, from the Part 10 file WADO-URI sends as stored."""
    chosen = tab.viewer.studies[study]
    tab.open(f"viewer?StudyInstanceUIDs={chosen.uid}&initialSeriesInstanceUID={chosen.series[series]}")
    tab.wait_for_image()
    tab.dismiss_overlays()
    if frames > 1:
        tab.page.get_by_text(f"/{frames})").first.wait_for()  # e.g. "I:1 (1/8)": the frames are there
    tab.screenshot(f"viewer-{study}-{series}")
    tab.assert_clean()
