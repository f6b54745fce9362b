"""Real DICOM instances made with pydicom + numpy, and multipart bodies to carry them."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable

import numpy as np
from aiohttp.test_utils import TestClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage}


def make_instance(study: str, series: str, sop: str | None = None, *, patient_name: str = "Doe^John",
                  patient_id: str = "PAT-1", modality: str = "CT", study_date: str = "20240102",
                  study_time: str = "101500", accession: str = "ACC-1", description: str = "Head CT",
                  series_number: int = 1, instance_number: int = 1, rows: int = 16, columns: int = 16,
                  charset: str | None = None, requested_procedure: str | None = None) -> bytes:
    """A small, valid Part 10 image with the attributes the QIDO and WADO tests look at."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
    ds.file_meta.MediaStorageSOPInstanceUID = sop = sop or generate_uid()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID, ds.SOPInstanceUID = SOP_CLASS[modality], sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyDescription = study_date, study_time, accession, description
    ds.StudyID, ds.ReferringPhysicianName = "1", "Ref^Erring"
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = modality, series_number, f"{modality} series {series_number}"
    ds.InstanceNumber = instance_number
    if requested_procedure:
        request = Dataset()
        request.RequestedProcedureID, request.ScheduledProcedureStepID = requested_procedure, "SPS-1"
        ds.RequestAttributesSequence = [request]
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 1.0
    ds.ImagePositionPatient = [0.0, 0.0, float(instance_number)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    pixels = (np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns) * 7 + instance_number) % 4096
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def multipart(parts: Iterable[bytes | tuple[bytes, str]], boundary: str | None = None) -> tuple[bytes, str]:
    """A multipart/related body of Part 10 files (or (bytes, content type) pairs) and its Content-Type."""
    boundary = boundary or uuid.uuid4().hex
    body = io.BytesIO()
    for part in parts:
        data, kind = part if isinstance(part, tuple) else (part, "application/dicom")
        body.write(f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode())
        body.write(data)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f'multipart/related; type="application/dicom"; boundary={boundary}'


async def stow(client: TestClient, files: Iterable[bytes | tuple[bytes, str]], path: str = "/studies") -> tuple[int, dict]:
    """POST the files as one STOW-RS request; return (status, JSON body)."""
    body, content_type = multipart(files)
    resp = await client.post(path, data=body, headers={"Content-Type": content_type, "Accept": "application/dicom+json"})
    return resp.status, await resp.json(content_type=None)
