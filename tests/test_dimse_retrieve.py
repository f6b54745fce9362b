"""C-MOVE and C-GET: instances sent to a known AE (a pynetdicom storage SCP, DCMTK's tools) with
sub-operation counts that tell the truth, data sets byte for byte as stored."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pydicom
import pydicom.data
from dicom_factory import make_instance, stow
from dimse_helpers import AE_TITLE, binary, free_port, run, start_archive
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomweb_couch.appkeys import COUCH

COMPRESSED = "SC_rgb_jpeg_gdcm.dcm"  # JPEG Baseline, a storage SOP class


def dataset_part(data: bytes) -> bytes:
    """The bytes after the File Meta Information of a Part 10 file."""
    meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    return data[132 + 12 + meta.FileMetaInformationGroupLength:]


class StorageSCP:
    """A pynetdicom storage SCP as the C-MOVE destination; refuses the instances in ``refuse``."""

    def __init__(self, refuse: set[str] = frozenset()) -> None:
        self.received: dict[str, bytes] = {}
        self.refuse = refuse
        self.port = free_port()
        ae = AE(ae_title="DEST")
        ae.supported_contexts = StoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self.on_store)])

    def on_store(self, event: evt.Event) -> int:
        uid = event.request.AffectedSOPInstanceUID
        if uid in self.refuse:
            return 0xA700
        self.received[uid] = event.encoded_dataset(include_meta=False)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


async def study_with_files(client, n: int = 3) -> tuple[str, dict[str, bytes]]:
    study, series = generate_uid(), generate_uid()
    files = {}
    for i in range(n):
        sop = generate_uid()
        files[sop] = make_instance(study, series, sop, instance_number=i + 1)
    assert (await stow(client, list(files.values())))[0] == 200
    return study, files


def identifier(level: str = "STUDY", **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def c_move(port: int, destination: str, query: Dataset) -> list[Dataset]:
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return [status for status, _ in assoc.send_c_move(query, destination, StudyRootQueryRetrieveInformationModelMove)]
    finally:
        assoc.release()


def c_get(port: int, query: Dataset, received: dict[str, bytes], syntaxes: list[str] | None = None) -> list[Dataset]:
    def on_store(event: evt.Event) -> int:
        received[event.request.AffectedSOPInstanceUID] = event.encoded_dataset(include_meta=False)
        return 0x0000

    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    classes = [CTImageStorage, pydicom.uid.SecondaryCaptureImageStorage]
    for sop_class in classes:  # one context per syntax, as DCMTK's getscu proposes them
        for syntax in syntaxes or [pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian]:
            ae.add_requested_context(sop_class, [syntax])
    roles = [build_role(c, scp_role=True) for c in classes]
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        return [status for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()


async def test_c_move_a_study_to_a_known_ae(make_client, couch_db_name):
    dest = StorageSCP()
    try:
        archive = await start_archive(make_client, couch_db_name, dimse_remote_aes=(f"DEST@127.0.0.1:{dest.port}",))
        study, files = await study_with_files(archive.client)
        statuses = await asyncio.to_thread(c_move, archive.port, "DEST", identifier(StudyInstanceUID=study))
        final = statuses[-1]
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 3
        assert final.NumberOfFailedSuboperations == 0
        assert {uid: data for uid, data in dest.received.items()} == {uid: dataset_part(f) for uid, f in files.items()}
    finally:
        dest.stop()


async def test_c_move_partial_failure_is_reported(make_client, couch_db_name):
    dest = StorageSCP()
    try:
        archive = await start_archive(make_client, couch_db_name, dimse_remote_aes=(f"DEST@127.0.0.1:{dest.port}",))
        study, files = await study_with_files(archive.client, 4)
        refused = sorted(files)[1]
        dest.refuse = {refused}
        statuses = await asyncio.to_thread(c_move, archive.port, "DEST", identifier(StudyInstanceUID=study))
        final = statuses[-1]
        assert final.Status == 0xB000  # Warning: sub-operations complete, one or more failures
        assert final.NumberOfCompletedSuboperations == 3 and final.NumberOfFailedSuboperations == 1
        assert len(dest.received) == 3 and refused not in dest.received
    finally:
        dest.stop()


async def test_c_move_to_an_unknown_ae_is_refused(make_client, couch_db_name):
    archive = await start_archive(make_client, couch_db_name)
    study, _ = await study_with_files(archive.client, 1)
    statuses = await asyncio.to_thread(c_move, archive.port, "NOBODY", identifier(StudyInstanceUID=study))
    assert statuses[-1].Status == 0xA801


async def test_c_move_series_and_image_levels_and_nothing_matching(make_client, couch_db_name):
    dest = StorageSCP()
    try:
        archive = await start_archive(make_client, couch_db_name, dimse_remote_aes=(f"DEST@127.0.0.1:{dest.port}",))
        study, files = await study_with_files(archive.client, 3)
        one = min(files)
        series = pydicom.dcmread(io.BytesIO(files[one])).SeriesInstanceUID
        statuses = await asyncio.to_thread(c_move, archive.port, "DEST", identifier(
            "IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=one))
        assert statuses[-1].NumberOfCompletedSuboperations == 1 and set(dest.received) == {one}
        statuses = await asyncio.to_thread(c_move, archive.port, "DEST", identifier(
            "SERIES", StudyInstanceUID=study, SeriesInstanceUID=series))
        assert statuses[-1].NumberOfCompletedSuboperations == 3
        statuses = await asyncio.to_thread(c_move, archive.port, "DEST", identifier(StudyInstanceUID="1.2.3.4"))
        assert statuses[-1].Status == 0x0000 and statuses[-1].NumberOfCompletedSuboperations == 0
    finally:
        dest.stop()


async def test_c_get_uncompressed_and_compressed(make_client, couch_db_name):
    archive = await start_archive(make_client, couch_db_name)
    study, files = await study_with_files(archive.client, 2)
    received: dict[str, bytes] = {}
    statuses = await asyncio.to_thread(c_get, archive.port, identifier(StudyInstanceUID=study), received)
    assert statuses[-1].Status == 0x0000 and statuses[-1].NumberOfCompletedSuboperations == 2
    assert received == {uid: dataset_part(f) for uid, f in files.items()}

    jpeg = Path(pydicom.data.get_testdata_file(COMPRESSED)).read_bytes()
    ds = pydicom.dcmread(io.BytesIO(jpeg))
    assert (await stow(archive.client, [jpeg]))[0] == 200
    received.clear()
    query = identifier(StudyInstanceUID=ds.StudyInstanceUID)
    statuses = await asyncio.to_thread(c_get, archive.port, query, received,
                                       [ds.file_meta.TransferSyntaxUID, pydicom.uid.ExplicitVRLittleEndian])
    assert statuses[-1].NumberOfCompletedSuboperations == 1
    assert received[ds.SOPInstanceUID] == dataset_part(jpeg)
    # A requestor that cannot take the stored JPEG syntax: the sub-operation fails, and says so.
    received.clear()
    statuses = await asyncio.to_thread(c_get, archive.port, query, received, [pydicom.uid.ImplicitVRLittleEndian])
    final = statuses[-1]
    assert final.NumberOfFailedSuboperations + final.NumberOfCompletedSuboperations == 1
    if final.NumberOfFailedSuboperations:
        assert final.Status in (0xA702, 0xB000) and not received


async def test_movescu_and_getscu_from_dcmtk(make_client, couch_db_name, tmp_path):
    dest = StorageSCP()
    try:
        archive = await start_archive(make_client, couch_db_name, dimse_remote_aes=(f"DEST@127.0.0.1:{dest.port}",))
        study, files = await study_with_files(archive.client, 3)
        code, out = await run(binary("movescu"), "-S", "-aec", AE_TITLE, "-aem", "DEST", "-k",
                              "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1",
                              str(archive.port))
        assert code == 0, out
        assert set(dest.received) == set(files)
        received = tmp_path / "getscu"  # a folder of its own: the test's server keeps files in tmp_path too
        received.mkdir()
        code, out = await run(binary("getscu"), "-S", "-aec", AE_TITLE, "-od", str(received), "-k",
                              "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1",
                              str(archive.port))
        assert code == 0, out
        got = {pydicom.dcmread(p).SOPInstanceUID: dataset_part(p.read_bytes()) for p in received.iterdir()}
        assert got == {uid: dataset_part(f) for uid, f in files.items()}
    finally:
        dest.stop()


async def test_c_store_and_c_get_with_the_file_store(make_client, couch_db_name, tmp_path):
    """With file_store set, what C-STORE receives goes to the file store (no attachment), and C-GET
    sends it back from there, byte-exact: the gateway keeps and reads files where the server does."""
    store = tmp_path / "files"
    archive = await start_archive(make_client, couch_db_name, file_store=str(store))
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    sent = make_instance(study, series, sop)
    ds = pydicom.dcmread(io.BytesIO(sent))

    def c_store() -> int:
        ae = AE(ae_title="STORESCU")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", archive.port, ae_title=AE_TITLE)
        assert assoc.is_established
        try:
            return assoc.send_c_store(ds).Status
        finally:
            assoc.release()

    assert await asyncio.to_thread(c_store) == 0x0000
    doc = await archive.client.app[COUCH].get_doc(sop)
    assert "file" in doc and "_attachments" not in doc
    assert [p for p in store.rglob("*.dcm") if not {"tmp", "trash"} & set(p.relative_to(store).parts)]
    received: dict[str, bytes] = {}
    statuses = await asyncio.to_thread(c_get, archive.port, identifier(StudyInstanceUID=study), received)
    assert statuses[-1].Status == 0x0000 and statuses[-1].NumberOfCompletedSuboperations == 1
    assert received == {sop: dataset_part(sent)}
