"""dicomweb_client for the tests: a generated study to load, and its command line run as users run it."""

from __future__ import annotations

import asyncio
import io
import shutil
import sys
from pathlib import Path

import pydicom
import pytest
from dicom_factory import make_instance
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

PIXEL_SPACING = [0.5, 0.75]


class Study:
    """A generated study: a CT series of two instances and an MR series of one."""

    def __init__(self, patient_id: str = "PAT-DWC", patient_name: str = "Client^Dicomweb"):
        self.uid, self.ct, self.mr = generate_uid(), generate_uid(), generate_uid()
        self.patient_id, self.patient_name = patient_id, patient_name
        common = dict(patient_id=patient_id, patient_name=patient_name, rows=8, columns=12)
        self.files = [
            make_instance(self.uid, self.ct, modality="CT", series_number=1, instance_number=1, **common),
            make_instance(self.uid, self.ct, modality="CT", series_number=1, instance_number=2, **common),
            make_instance(self.uid, self.mr, modality="MR", series_number=2, instance_number=1, **common),
        ]

    def datasets(self) -> list[Dataset]:
        """The files as pydicom datasets, with PixelSpacing added (a multi-valued DS to round-trip)."""
        out = []
        for data in self.files:
            ds = pydicom.dcmread(io.BytesIO(data))
            ds.PixelSpacing = PIXEL_SPACING
            out.append(ds)
        return out

    def write(self, folder: Path) -> list[Path]:
        paths = []
        for i, data in enumerate(self.files):
            path = folder / f"{self.uid}-{i}.dcm"
            path.write_bytes(data)
            paths.append(path)
        return paths


def console_script() -> str:
    """The dicomweb_client executable installed with the library (next to this Python first)."""
    beside = Path(sys.executable).parent / "dicomweb_client"
    found = str(beside) if beside.exists() else shutil.which("dicomweb_client")
    if not found:
        pytest.skip("the dicomweb_client console script is not installed (pip install dicomweb-client)")
    return found


async def run_cli(url: str, *args: str) -> tuple[int, str, str]:
    """``dicomweb_client --url URL ARGS...``: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        console_script(), "--url", url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode, out.decode(), err.decode()
