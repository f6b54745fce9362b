"""The archive the OHIF browser tests look at: images a person can recognise, three patients.

* a CT series of ``CT_SLICES`` slices: a round body with a bright rim (bone) and a lesion that
  moves around it from slice to slice, so scrolling visibly changes the image;
* a multi-frame instance (Multi-frame Grayscale Word SC, uncompressed) with the same pattern per
  frame, and pydicom's 30-frame JPEG ultrasound clip;
* pydicom's JPEG Baseline (RGB colour bars) and JPEG Extended 12-bit (NM) test images.

The pydicom files get new UIDs and patient data so that each belongs to one of these studies;
their pixel data, compressed as they are, is left alone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from dicom_factory import make_instance
from pydicom.data import get_testdata_file
from pydicom.uid import MultiFrameGrayscaleWordSecondaryCaptureImageStorage, generate_uid

CT_SLICES = 12
SIZE = 256


@dataclass(frozen=True)
class Study:
    uid: str
    patient_name: str  # as stored (PN), e.g. "Doe^John"
    shown_name: str  # as OHIF's study list shows it, e.g. "Doe, John"
    description: str
    series: dict[str, str] = field(default_factory=dict)  # what it holds -> SeriesInstanceUID
    instances: dict[str, str] = field(default_factory=dict)  # what it is -> SOPInstanceUID


def phantom(index: int, count: int, size: int = SIZE) -> np.ndarray:
    """Stored values (HU + 1024) of slice ``index`` of ``count``: air, soft tissue, bone rim, lesion."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.hypot(x - size / 2, y - size / 2) / size
    hu = np.full((size, size), -1000.0)
    hu[r < 0.42] = 40 + 60 * (x[r < 0.42] / size - 0.5)  # soft tissue with a gentle gradient
    hu[(r >= 0.38) & (r < 0.42)] = 700  # bone
    angle = 2 * np.pi * index / count
    lx, ly = size / 2 + 0.22 * size * np.cos(angle), size / 2 + 0.22 * size * np.sin(angle)
    hu[np.hypot(x - lx, y - ly) < 0.07 * size] = 250  # the lesion, somewhere else on every slice
    return (hu + 1024).astype(np.uint16)


def _edit(data: bytes, **attributes: object) -> bytes:
    """The file with attributes set (None: removed), its file meta information kept in step."""
    ds = pydicom.dcmread(io.BytesIO(data))
    for name, value in attributes.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _patient(study: Study, patient_id: str, study_date: str) -> dict[str, object]:
    return {"StudyInstanceUID": study.uid, "PatientName": study.patient_name, "PatientID": patient_id,
            "StudyDescription": study.description, "StudyDate": study_date}


def ct_study() -> tuple[Study, list[bytes]]:
    study = Study(generate_uid(), "Doe^John", "Doe, John", "E2E CT phantom")
    series = study.series["ct"] = generate_uid()
    files = []
    for i in range(CT_SLICES):
        sop = generate_uid()
        if i == 0:
            study.instances["first"] = sop
        data = make_instance(study.uid, series, sop, patient_name=study.patient_name, patient_id="E2E-1",
                             description=study.description, instance_number=i + 1, rows=SIZE, columns=SIZE)
        files.append(_edit(data, PixelData=phantom(i, CT_SLICES).tobytes()))
    return study, files


def multiframe_study() -> tuple[Study, list[bytes]]:
    study = Study(generate_uid(), "Roe^Jane", "Roe, Jane", "E2E multi-frame")
    study.series["sc"], study.series["us"] = generate_uid(), generate_uid()
    study.instances["sc"], study.instances["us"] = generate_uid(), generate_uid()
    frames = 8
    base = make_instance(study.uid, study.series["sc"], study.instances["sc"], patient_name=study.patient_name,
                         patient_id="E2E-2", description=study.description, rows=SIZE, columns=SIZE,
                         study_date="20230506")
    sc = _edit(base, SOPClassUID=MultiFrameGrayscaleWordSecondaryCaptureImageStorage, Modality="OT",
               NumberOfFrames=frames, FrameIncrementPointer=0x00181063, FrameTime=100.0,
               PixelData=np.stack([phantom(i, frames) for i in range(frames)]).tobytes(),
               SeriesDescription="Multi-frame phantom",
               # a secondary capture has no patient geometry
               ImagePositionPatient=None, ImageOrientationPatient=None, SliceThickness=None)
    us = _edit(Path(get_testdata_file("examples_ybr_color.dcm")).read_bytes(), **_patient(study, "E2E-2", "20230506"),
               SeriesInstanceUID=study.series["us"], SOPInstanceUID=study.instances["us"], SeriesNumber=2)
    return study, [sc, us]


def jpeg_study() -> tuple[Study, list[bytes]]:
    study = Study(generate_uid(), "Smith^Alice", "Smith, Alice", "E2E JPEG")
    files = []
    for number, (key, name) in enumerate((("baseline", "SC_rgb_jpeg_dcmtk.dcm"),
                                          ("extended", "JPEG-lossy.dcm")), start=1):
        study.series[key], study.instances[key] = generate_uid(), generate_uid()
        files.append(_edit(Path(get_testdata_file(name)).read_bytes(), **_patient(study, "E2E-3", "20220304"),
                           SeriesInstanceUID=study.series[key], SOPInstanceUID=study.instances[key],
                           SeriesNumber=number))
    return study, files


def archive() -> tuple[dict[str, Study], list[bytes]]:
    """The three studies, by name (``ct``, ``multiframe``, ``jpeg``), and all their files."""
    studies, files = {}, []
    for name, make in (("ct", ct_study), ("multiframe", multiframe_study), ("jpeg", jpeg_study)):
        study, data = make()
        studies[name] = study
        files += data
    return studies, files
