"""How fast each way of writing an instance is on the CouchDB at hand (issue 9, item 9).

``Couch.put_with_attachment`` writes in one multipart/related PUT (Apache CouchDB) or as an
attachment PUT followed by the document (pouchdb-server, which dies when a multipart upload is cut
off). This writes the same generated ~0.5 MB instances both ways, 1 and 8 at a time, into fresh
databases, and prints instances per second and the ratio of the two forms measured in this run.

    python bench/write_forms.py                       # a private pouchdb-server
    python bench/write_forms.py --couch-url URL [--user U --password P] [--count N]

Figures on a shared CPU are noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicomweb_couch.store.couch import Couch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import local_couch


def instance(n: int) -> bytes:
    """A 512 x 512 16-bit CT image (~0.5 MB)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.Rows = ds.Columns = 512
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = ((np.arange(512 * 512, dtype=np.uint16) + n) % 4096).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


async def run(couch_url: str, user: str | None, password: str | None, count: int) -> None:
    files = [instance(n) for n in range(count)]
    results: dict[tuple[str, int], float] = {}
    for concurrency in (1, 8):
        for form, attachment_first in (("multipart", False), ("attachment-first", True)):
            couch = Couch(couch_url, f"bench_{uuid.uuid4().hex}", user, password)
            await couch.open()
            couch.attachment_first = attachment_first
            gate = asyncio.Semaphore(concurrency)

            async def store(data: bytes, couch: Couch = couch, gate: asyncio.Semaphore = gate) -> None:
                async with gate:
                    doc = {"_id": generate_uid(), "dataset": {}, "md5hash": hashlib.md5(data).hexdigest()}
                    await couch.store_instance(doc, io.BytesIO(data), len(data))

            started = time.perf_counter()
            await asyncio.gather(*(store(data) for data in files))
            results[form, concurrency] = count / (time.perf_counter() - started)
            await couch.close()
            await asyncio.to_thread(_delete_database, couch_url, couch.database, user, password)
            print(f"{form:17} {concurrency} at a time: {results[form, concurrency]:6.1f} inst/s", flush=True)
        print(f"  attachment-first / multipart: {results['attachment-first', concurrency] / results['multipart', concurrency]:.2f}")


def _delete_database(url: str, database: str, user: str | None, password: str | None) -> None:
    headers = {"Accept": "application/json"}
    if user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode()
    urllib.request.urlopen(urllib.request.Request(f"{url.rstrip('/')}/{database}", method="DELETE", headers=headers))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--couch-url")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--count", type=int, default=150)
    args = p.parse_args()
    if args.couch_url:
        asyncio.run(run(args.couch_url, args.user, args.password, args.count))
        return
    local_couch.ensure_installed()
    with tempfile.TemporaryDirectory() as data, local_couch.start(data, port=0) as couch:
        asyncio.run(run(couch.url, None, None, args.count))


if __name__ == "__main__":
    main()
