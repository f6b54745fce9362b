"""DIMSE gateway: C-ECHO, C-STORE (pynetdicom and DCMTK as the SCU), association limits and
hostile peers. Stored instances come back from WADO-URI with the received data set byte for byte."""

from __future__ import annotations

import asyncio
import io
import socket
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from dicom_factory import make_instance
from dimse_helpers import AE_TITLE, binary, run, start_archive
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, _config, build_context
from pynetdicom.sop_class import Verification

from dicomweb_couch.appkeys import COUCH
from dicomweb_couch.dimse.storage import status_of
from dicomweb_couch.store.ingest import (
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    PROCESSING_FAILURE,
    Outcome,
    md5_of,
    store_file,
)

STORAGE_CLASSES = {cx.abstract_syntax for cx in AllStoragePresentationContexts}


def dataset_bytes(data: bytes) -> tuple[str, bytes]:
    """The transfer syntax and the bytes after the File Meta Information of a Part 10 file."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    end = 132 + 12 + ds.file_meta.FileMetaInformationGroupLength
    return str(ds.file_meta.TransferSyntaxUID), data[end:]


def echo(port: int, calling: str = "TESTSCU") -> int | None:
    """C-ECHO from pynetdicom (blocking: call it in a thread); the status, None if not associated."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return status.Status


def store_raw(port: int, path: Path) -> tuple[int, str] | None:
    """C-STORE of a file's data set as encoded in the file (no decoding, its own transfer syntax)."""
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title="TESTSCU")
    ae.requested_contexts = [build_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])]
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_store(path)
    finally:
        assoc.release()
    return status.Status, str(status.get("ErrorComment", ""))


async def wado_uri(client, study: str, series: str, sop: str):
    return await client.get("/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series,
                                             "objectUID": sop, "contentType": "application/dicom"})


async def test_c_echo_from_pynetdicom_and_echoscu(make_client, couch_db_name):
    archive = await start_archive(make_client, couch_db_name)
    assert await asyncio.to_thread(echo, archive.port) == 0x0000
    code, out = await run(binary("echoscu"), "-aec", AE_TITLE, "127.0.0.1", str(archive.port))
    assert code == 0, out


async def test_unknown_calling_ae_is_rejected(make_client, couch_db_name):
    archive = await start_archive(make_client, couch_db_name, dimse_calling_aets=("MODALITY1", "PACS"))
    assert await asyncio.to_thread(echo, archive.port, "INTRUDER") is None
    assert await asyncio.to_thread(echo, archive.port, "PACS") == 0x0000
    code, out = await run(binary("echoscu"), "-aet", "INTRUDER", "-aec", AE_TITLE, "127.0.0.1", str(archive.port))
    assert code != 0 and "reject" in out.lower(), out


async def test_garbage_and_stalled_peers_leave_the_server_serving(make_client, couch_db_name):
    archive = await start_archive(make_client, couch_db_name, dimse_timeout=2.0, dimse_network_timeout=3.0)

    def hostile() -> list[bytes]:
        answers = []
        for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\xfe\xed" * 512):
            with socket.create_connection(("127.0.0.1", archive.port), timeout=20) as s:
                s.sendall(payload)
                answers.append(s.recv(1024))  # an A-ABORT / A-ASSOCIATE-RJ, or the connection closed
        # An A-ASSOCIATE-RQ header announcing 4 GB, then the peer goes away mid-PDU.
        with socket.create_connection(("127.0.0.1", archive.port), timeout=20) as s:
            s.sendall(b"\x01\x00\xff\xff\xff\xff" + b"\x00" * 64)
        return answers

    stalled = socket.create_connection(("127.0.0.1", archive.port))  # opens, never speaks
    try:
        answers = await asyncio.to_thread(hostile)
        assert all(a[:1] in (b"", b"\x03", b"\x07") for a in answers), answers
        resp = await archive.client.get("/studies")
        assert resp.status in (200, 204)
        assert await asyncio.to_thread(echo, archive.port) == 0x0000
        stalled.settimeout(15)
        assert stalled.recv(1024)[:1] in (b"", b"\x07")  # dropped after dimse_timeout (ARTIM)
    finally:
        stalled.close()


async def test_storescu_study_is_found_by_qido_and_wado_at_once(make_client, couch_db_name, tmp_path):
    archive = await start_archive(make_client, couch_db_name)
    study, series = generate_uid(), generate_uid()
    files = []
    for n in range(1, 4):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(make_instance(study, series, instance_number=n, patient_name="Store^Scu"))
        files.append(path)
    code, out = await run(binary("storescu"), "-aet", "MODALITY", "-aec", AE_TITLE, "127.0.0.1",
                          str(archive.port), *map(str, files))
    assert code == 0, out
    resp = await archive.client.get("/studies", params={"PatientName": "Store^Scu"})
    assert resp.status == 200
    [found] = await resp.json()
    assert found["00201208"]["Value"] == [3]
    for path in files:
        sent = path.read_bytes()
        sop = pydicom.dcmread(path).SOPInstanceUID
        resp = await wado_uri(archive.client, study, series, sop)
        assert resp.status == 200
        got = await resp.read()
        assert dataset_bytes(got) == dataset_bytes(sent)
        meta = pydicom.dcmread(io.BytesIO(got)).file_meta
        assert meta.SourceApplicationEntityTitle == "MODALITY"
        assert meta.MediaStorageSOPInstanceUID == sop


async def test_pydicom_files_byte_faithful_or_refused_with_reason(make_client, couch_db_name, monkeypatch):
    """Each file pydicom ships with a File Meta and a storage SOP class, sent in its own transfer
    syntax (compressed ones included) without decoding: the stored data set is the one sent."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    archive = await start_archive(make_client, couch_db_name)
    stored = refused = compressed = 0
    for path in map(Path, pydicom.data.get_testdata_files()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001, S112 -- not every test file is readable DICOM; STOW tests cover those
            continue
        meta = ds.file_meta
        if meta.get("MediaStorageSOPClassUID") not in STORAGE_CLASSES or "TransferSyntaxUID" not in meta:
            continue
        try:
            result = await asyncio.to_thread(store_raw, archive.port, path)
        except (ValueError, AttributeError, KeyError):  # pynetdicom cannot send a file with broken meta
            continue
        assert result is not None, path.name
        status, comment = result
        if status != 0x0000:
            assert status in (0xA900, 0xC000), (path.name, hex(status))
            assert comment, path.name
            refused += 1
            continue
        resp = await wado_uri(archive.client, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert resp.status == 200, path.name
        assert dataset_bytes(await resp.read()) == dataset_bytes(path.read_bytes()), path.name
        stored += 1
        compressed += meta.TransferSyntaxUID.is_compressed
    assert stored > 60, (stored, refused)
    assert compressed >= 10, compressed


def test_store_failures_map_to_c_store_statuses():
    """PS3.4 B.2.3: each failure reason of the shared store path has its C-STORE status and says why."""
    expected = {None: 0x0000, DATA_SET_DOES_NOT_MATCH_SOP_CLASS: 0xA900, CANNOT_UNDERSTAND: 0xC000,
                PROCESSING_FAILURE: 0xA700}
    for reason, status in expected.items():
        answer = status_of(Outcome("1.2", "1.2.3", failure_reason=reason, message="why" if reason else ""))
        assert answer.Status == status
        assert bool(answer.get("ErrorComment")) == (reason is not None)


async def test_affected_instance_mismatch_is_refused(client):
    """A C-STORE request announcing one SOP Instance (PS3.7 9.1.1.1) and carrying another: the shared
    store path refuses it as the data set not matching (peers' SCUs never send such requests)."""
    data = make_instance(generate_uid(), generate_uid())
    md5, size = md5_of(io.BytesIO(data))
    outcome = await store_file(client.app[COUCH], io.BytesIO(data), md5, size, expected_instance="1.2.3.4")
    assert outcome.failure_reason == DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert status_of(outcome).Status == 0xA900 and "Affected SOP Instance UID" in status_of(outcome).ErrorComment


async def test_storescu_sends_compressed_files_kept_compressed(make_client, couch_db_name):
    """DCMTK proposes a compressed file's own syntax when told to (with the uncompressed ones, each in
    a context of its own): it is accepted as it comes and stored compressed, the encapsulated pixel
    data untouched (DCMTK may re-encode other elements, e.g. drop group lengths, so the rest of the
    data set is compared byte for byte in the pynetdicom test above, which sends files unchanged)."""
    archive = await start_archive(make_client, couch_db_name)
    proposals = {"SC_rgb_jpeg_gdcm.dcm": "-xs", "JPEG2000.dcm": "-xw", "SC_rgb_rle.dcm": "-xr",
                 "MR_small_jpeg_ls_lossless.dcm": "-xt"}
    for name, propose in proposals.items():
        path = Path(pydicom.data.get_testdata_file(name))
        code, out = await run(binary("storescu"), "-v", propose, "-aec", AE_TITLE, "127.0.0.1", str(archive.port),
                              str(path))
        assert code == 0, (name, out)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID.is_compressed
        resp = await wado_uri(archive.client, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert resp.status == 200, path.name
        stored = pydicom.dcmread(io.BytesIO(await resp.read()))
        assert stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID, path.name
        assert stored.PixelData == pydicom.dcmread(path).PixelData, path.name


def test_bad_dimse_settings_are_refused_before_start():
    """Mistyped gateway settings stop the server at once with the setting named (never at the
    first association)."""
    from dicomweb_couch.app import create_app
    from dicomweb_couch.settings import Settings

    for bad, named in (({"dimse_remote_aes": ("PACS@host",)}, "TITLE@host:port"),
                       ({"dimse_remote_aes": ("A_TITLE_LONGER_THAN_16@h:104",)}, "16 characters"),
                       ({"dimse_ae_title": ""}, "dimse_ae_title")):
        with pytest.raises(ValueError, match=named):
            create_app(Settings(dimse_port=11112, **bad))
    with pytest.raises(ValueError, match="dimse_port"):
        Settings(dimse_port=70000)
    assert Settings.load(environ={"DICOMWEB_COUCH_DIMSE_REMOTE_AES": "A@127.0.0.1:104,B@127.0.0.1:105",
                                  "DICOMWEB_COUCH_DIMSE_PORT": "11112"}).dimse_remote_aes == (
        "A@127.0.0.1:104", "B@127.0.0.1:105")


async def test_association_limit_rejects_the_extra_peer(make_client, couch_db_name):
    """dimse_max_associations: a peer beyond the limit is rejected (transient), the next one served."""
    archive = await start_archive(make_client, couch_db_name, dimse_max_associations=1)

    def hold_one_then_try_another() -> tuple[bool, int | None]:
        ae = AE(ae_title="HOLDER")
        ae.add_requested_context(Verification)
        holder = ae.associate("127.0.0.1", archive.port, ae_title=AE_TITLE)
        assert holder.is_established
        try:
            other = AE(ae_title="OTHER")
            other.add_requested_context(Verification)
            extra = other.associate("127.0.0.1", archive.port, ae_title=AE_TITLE)
            refused = extra.is_rejected
            if extra.is_established:
                extra.release()
        finally:
            holder.release()
        return refused, echo(archive.port)

    refused, after = await asyncio.to_thread(hold_one_then_try_another)
    assert refused and after == 0x0000
