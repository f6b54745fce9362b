"""Orthanc as a real peer of the DIMSE gateway: it C-STOREs a study to us, C-FINDs us, and C-MOVEs
the study from us back into itself; the data sets arrive byte for byte as they left."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest
from dicom_factory import make_instance
from dimse_helpers import AE_TITLE, binary, free_port, start_archive
from pydicom.uid import generate_uid


def dataset_part(data: bytes) -> bytes:
    meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    return data[132 + 12 + meta.FileMetaInformationGroupLength:]


class Orthanc:
    """A private Orthanc (own configuration, loopback ports, temporary folders), stopped by its PID."""

    def __init__(self, folder: Path, dimse_port: int, archive_port: int) -> None:
        self.http = free_port()
        config = folder / "orthanc.json"
        config.write_text(json.dumps({
            "Name": "test", "HttpPort": self.http, "DicomPort": dimse_port, "DicomAet": "ORTHANC",
            "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomServerEnabled": True,
            "HttpBindAddress": "127.0.0.1", "DicomModalities": {"archive": [AE_TITLE, "127.0.0.1", archive_port]},
            "Plugins": []}))
        self.proc = subprocess.Popen([binary("Orthanc"), str(config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.call("GET", "/system")
                return
            except OSError:
                time.sleep(0.3)
        self.stop()
        pytest.fail("Orthanc did not start")

    def call(self, method: str, path: str, body: bytes | dict | list | None = None) -> object:
        """A blocking REST call (run it in a thread: Orthanc may be calling the archive meanwhile)."""
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        request = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", data=data, method=method)
        with urllib.request.urlopen(request, timeout=120) as response:
            raw = response.read()
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def test_orthanc_stores_finds_and_moves(make_client, couch_db_name, tmp_path):
    orthanc_port = free_port()
    archive = await start_archive(make_client, couch_db_name, dimse_remote_aes=(f"ORTHANC@127.0.0.1:{orthanc_port}",))
    orthanc = await asyncio.to_thread(Orthanc, tmp_path, orthanc_port, archive.port)
    call = lambda *args: asyncio.to_thread(orthanc.call, *args)
    try:
        study, series = generate_uid(), generate_uid()
        files = {}
        for n in range(3):
            sop = generate_uid()
            files[sop] = make_instance(study, series, sop, instance_number=n + 1, patient_name="Orthanc^Peer",
                                       patient_id="ORTH-1")
        uploaded = [await call("POST", "/instances", data) for data in files.values()]
        orthanc_study = uploaded[0]["ParentStudy"]

        # Orthanc C-STOREs the study to us.
        await call("POST", "/modalities/archive/store", [orthanc_study])
        for sop, data in files.items():
            resp = await archive.client.get("/wado", params={"requestType": "WADO", "studyUID": study,
                                                             "seriesUID": series, "objectUID": sop})
            assert resp.status == 200
            assert dataset_part(await resp.read()) == dataset_part(data)

        # Orthanc C-FINDs us.
        query = await call("POST", "/modalities/archive/query",
                           {"Level": "Study", "Query": {"PatientName": "orthanc*", "StudyInstanceUID": "",
                                                        "NumberOfStudyRelatedInstances": ""}})
        answers = await call("GET", f"/queries/{query['ID']}/answers?expand&simplify")
        assert len(answers) == 1
        assert answers[0]["StudyInstanceUID"] == study and answers[0]["NumberOfStudyRelatedInstances"] == "3"

        # Orthanc forgets the study, then C-MOVEs it from us into itself.
        await call("DELETE", f"/studies/{orthanc_study}")
        assert await call("GET", "/instances") == []
        await call("POST", "/modalities/archive/move",
                   {"Level": "Study", "Resources": [{"StudyInstanceUID": study}], "TargetAet": "ORTHANC"})
        instances = await call("GET", "/instances")
        assert len(instances) == 3
        for orthanc_id in instances:
            data = await call("GET", f"/instances/{orthanc_id}/file")
            sop = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
            assert dataset_part(data) == dataset_part(files[sop])
    except urllib.error.HTTPError as exc:
        pytest.fail(f"Orthanc answered {exc.code}: {exc.read()[:500]!r}")
    finally:
        await asyncio.to_thread(orthanc.stop)
