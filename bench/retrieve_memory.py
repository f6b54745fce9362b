"""Peak memory of the server while WADO-RS streams a study of over 1 GB, and the throughput.

    .venv/bin/python bench/retrieve_memory.py [--instances 60] [--frames 16] [--couch-url URL]

Generates a study of ``--instances`` multi-frame CT instances of ``--frames`` frames of
1024 x 512 16-bit pixels (16 MiB each by default: 1.01 GB in all), stores it through STOW-RS,
then retrieves it whole with ``GET /studies/{study}`` (``transfer-syntax=*``: each file streamed
from CouchDB as stored), and once more frame by frame (``/frames/1,...,N`` of every instance).
The server runs as a separate process, so its resident memory (VmRSS in /proc) can be sampled
every 20 ms while it streams; the figures are its RSS before the retrieval, the peak during it,
and the kernel's high-water mark (VmHWM, which includes the STOW phase).

Starts pouchdb-server (scripts/local_couch.py) in a temporary folder unless --couch-url names a
CouchDB; the temporary folder, or the benchmark's database on that CouchDB, is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests")]

import local_couch  # noqa: E402
from dicom_factory import multipart  # noqa: E402

ROWS, COLUMNS = 1024, 512
ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def instance(study: str, series: str, number: int, frames: int) -> bytes:
    """One multi-frame instance, its frames distinct so nothing compresses or deduplicates."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName, ds.Modality, ds.InstanceNumber = "BENCH", "Bench^Memory", "CT", number
    ds.Rows, ds.Columns, ds.NumberOfFrames = ROWS, COLUMNS, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(number)
    ds.PixelData = rng.integers(0, 4096, size=(frames, ROWS, COLUMNS), dtype=np.uint16).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


async def sample_peak(pid: int, stop: asyncio.Event) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, memory(pid)["VmRSS"])
        await asyncio.sleep(0.02)
    return max(peak, memory(pid)["VmRSS"])


async def measured(pid: int, work) -> tuple[int, float, int]:
    """(bytes received, seconds, peak RSS) of ``work``, sampling the server meanwhile."""
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_peak(pid, stop))
    start = time.perf_counter()
    try:
        received = await work()
    finally:
        stop.set()
    return received, time.perf_counter() - start, await sampler


async def drain(response: aiohttp.ClientResponse) -> int:
    assert response.status == 200, (response.status, await response.text())
    size = 0
    async for chunk in response.content.iter_chunked(1 << 20):
        size += len(chunk)
    return size


async def run(base: str, pid: int, instances: int, frames: int) -> None:
    study, series = generate_uid(), generate_uid()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        stored = 0
        start = time.perf_counter()
        sops = []
        for number in range(1, instances + 1):  # one at a time: pouchdb-server drops parallel large writes
            data = instance(study, series, number, frames)
            body, content_type = multipart([data])
            async with http.post(f"{base}/studies", data=body, headers={"Content-Type": content_type}) as resp:
                answer = await resp.json(content_type=None)
                assert resp.status == 200, answer
                sops.append(answer["00081199"]["Value"][0]["00081190"]["Value"][0].rsplit("/", 1)[1])
            stored += len(data)
        stow_seconds = time.perf_counter() - start
        print(f"study: {instances} instances x {frames} frames of {ROWS}x{COLUMNS}x16 bit = {stored / 1e9:.2f} GB "
              f"(STOW-RS {stored / 1e6 / stow_seconds:.0f} MB/s)")
        before = memory(pid)["VmRSS"]

        async def whole_study() -> int:
            async with http.get(f"{base}/studies/{study}", headers={"Accept": ANY}) as resp:
                return await drain(resp)

        received, seconds, peak = await measured(pid, whole_study)
        assert received > stored, (received, stored)
        print(f"server RSS before retrieval: {before / 1e6:.0f} MB")
        print(f"GET /studies/{{study}} (as stored): {received / 1e9:.2f} GB in {seconds:.1f} s = "
              f"{received / 1e6 / seconds:.0f} MB/s, peak server RSS {peak / 1e6:.0f} MB "
              f"(+{(peak - before) / 1e6:.0f} MB)")

        numbers = ",".join(str(n) for n in range(1, frames + 1))

        async def every_frame() -> int:
            total = 0
            for sop in sops:
                url = f"{base}/studies/{study}/series/{series}/instances/{sop}/frames/{numbers}"
                async with http.get(url, headers={"Accept": FRAMES}) as resp:
                    total += await drain(resp)
            return total

        received, seconds, peak = await measured(pid, every_frame)
        print(f"GET .../frames/1..{frames} of every instance: {received / 1e9:.2f} GB in {seconds:.1f} s = "
              f"{received / 1e6 / seconds:.0f} MB/s, peak server RSS {peak / 1e6:.0f} MB")
        print(f"server VmHWM (whole run, STOW included): {memory(pid)['VmHWM'] / 1e6:.0f} MB")


def wait_for(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            urllib.request.urlopen(url + "/studies?limit=1", timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=60)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--couch-url")
    args = parser.parse_args()
    database = f"bench_{uuid.uuid4().hex[:10]}"
    with ExitStack() as stack:
        couch_url = args.couch_url
        if not couch_url:
            local_couch.ensure_installed(quiet=True)
            data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-couch-")))
            couch_url = stack.enter_context(local_couch.start(data, port=local_couch.free_port())).url
        else:
            stack.callback(lambda: urllib.request.urlopen(urllib.request.Request(
                f"{couch_url.rstrip('/')}/{database}", method="DELETE")).read())
        port = local_couch.free_port()
        env = dict(os.environ, DICOMWEB_COUCH_LOG_LEVEL="WARNING")
        server = subprocess.Popen([sys.executable, "-m", "dicomweb_couch", "--couch-url", couch_url,
                                   "--database", database, "--port", str(port)], env=env, cwd=ROOT)
        stack.callback(server.wait, 30)
        stack.callback(server.terminate)
        base = f"http://127.0.0.1:{port}"
        wait_for(base, server)
        asyncio.run(run(base, server.pid, args.instances, args.frames))


if __name__ == "__main__":
    main()
