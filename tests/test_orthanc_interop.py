"""Orthanc as a real client of the archive (issue 9): its DICOMweb plugin stores studies here
(STOW-RS, with the 73-character boundary it always sends), queries here (QIDO-RS) and retrieves
from here into itself (WADO-RS), every file byte-exact.

A private Orthanc per module (Debian's ``orthanc`` + ``orthanc-dicomweb``): its own configuration,
free loopback ports, storage in a temporary folder, no DICOM server, never the system service.
Skipped when Orthanc is not installed, except under CI=true, where that is a failure (.ci/run
installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
import pytest
from dicom_factory import make_instance, multipart
from live_server import LiveServer, running
from pydicom.uid import generate_uid

PLUGIN_PATHS = [Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"), Path("/usr/lib/orthanc/libOrthancDicomWeb.so.1.7")]
SAMPLES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "liver_1frame.dcm"]


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}: CI must install orthanc and orthanc-dicomweb (.ci/run)")
    pytest.skip(reason)


def _plugin() -> Path | None:
    found = [p for p in PLUGIN_PATHS if p.exists()]
    if not found and shutil.which("dpkg"):
        listing = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False).stdout
        found = [Path(line) for line in listing.splitlines() if "DicomWeb.so" in line and Path(line).is_file()]
    return found[0] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None, timeout: float = 120) -> Any:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            content = resp.read()
        return json.loads(content) if resp.headers.get_content_type().endswith("json") else content


@pytest.fixture(scope="module")
def archive(couch_server, suite_auth) -> Iterator[LiveServer]:
    database = f"test_{uuid.uuid4().hex}"
    try:
        with running(couch_server, database, suite_auth) as server:
            yield server
    finally:
        couch_server.request("DELETE", database)


@pytest.fixture(scope="module")
def orthanc(archive: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    executable, plugin = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin"), _plugin()
    if not executable or not plugin:
        _missing("Orthanc or its DICOMweb plugin is not installed")
    folder = tmp_path_factory.mktemp("orthanc")
    port = _free_port()
    config = {
        "Name": "interop-test", "HttpPort": port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomServerEnabled": False, "DicomPort": _free_port(),
        "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
        "StorageCompression": False, "HttpTimeout": 60, "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": {"archive": {"Url": archive.url + "/", "HttpHeaders": archive.headers}}},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen([executable, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    client = Orthanc(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.call("GET", "/system", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield client
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def uids(data: bytes) -> tuple[str, str, str]:
    from io import BytesIO
    ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def test_orthanc_stows_studies_here_byte_exact(orthanc: Orthanc, archive: LiveServer):
    files = [Path(pydicom.data.get_testdata_file(name)).read_bytes() for name in SAMPLES]
    studies = set()
    for data in files:
        stored = orthanc.call("POST", "/instances", raw=data)
        studies.add(orthanc.call("GET", f"/instances/{stored['ID']}/study")["ID"])
    answer = orthanc.call("POST", "/dicom-web/servers/archive/stow", {"Resources": sorted(studies)})
    assert answer is not None
    for data in files:
        status, got = archive.wado_uri(*uids(data))
        assert status == 200 and got == data


def test_orthanc_queries_here(orthanc: Orthanc, archive: LiveServer):
    study, series = generate_uid(), generate_uid()
    data = make_instance(study, series, patient_id="ORTHANC-QIDO", patient_name="Interop^Query")
    body, content_type = multipart([data])
    assert archive.stow(body, content_type)[0] == 200
    found = orthanc.call("POST", "/dicom-web/servers/archive/get",
                         {"Uri": "/studies", "Arguments": {"PatientID": "ORTHANC-QIDO"}})
    assert [s["0020000D"]["Value"] for s in found] == [[study]]
    assert found[0]["00100010"]["Value"] == [{"Alphabetic": "Interop^Query"}]
    found = orthanc.call("POST", "/dicom-web/servers/archive/get", {"Uri": f"/studies/{study}/series"})
    assert [s["0020000E"]["Value"] for s in found] == [[series]]


def test_orthanc_retrieves_from_here_byte_exact(orthanc: Orthanc, archive: LiveServer):
    study = generate_uid()
    files = [make_instance(study, generate_uid(), instance_number=i) for i in range(1, 4)]
    files.append(Path(pydicom.data.get_testdata_file("SC_rgb_rle.dcm")).read_bytes())  # RLE: kept as is
    body, content_type = multipart(files)
    assert archive.stow(body, content_type)[0] == 200
    resources = [{"Study": study}] + [{"Study": s, "Series": se, "Instance": i}
                                      for s, se, i in [uids(files[-1])]]
    orthanc.call("POST", "/dicom-web/servers/archive/retrieve", {"Resources": resources})
    for data in files:
        _, _, sop = uids(data)
        [match] = orthanc.call("POST", "/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": sop}})
        assert orthanc.call("GET", f"/instances/{match}/file") == data, sop
