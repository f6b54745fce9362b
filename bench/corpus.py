"""Time to store, find and fetch pydicom's test files through the server, on a fresh local store.

    .venv/bin/python bench/corpus.py [--rounds 3] [--couch-url URL]

Starts pouchdb-server (scripts/local_couch.py) in a temporary folder unless --couch-url names a
CouchDB, runs the server in-process on a free port, and prints medians over the rounds (each
round on a fresh database). Figures on pouchdb-server are lower bounds: Apache CouchDB is faster.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import pydicom.data
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]

import local_couch  # noqa: E402
from dicom_factory import multipart  # noqa: E402

from dicomweb_couch.app import create_app  # noqa: E402
from dicomweb_couch.settings import Settings  # noqa: E402

FILES = [p.read_bytes() for p in map(Path, pydicom.data.get_testdata_files()) if p.is_file()]
OHIF_LIST = "limit=101&offset=0&fuzzymatching=false&includefield=00081030,00080060,00080090,00100030"


async def one_round(couch_url: str) -> dict[str, float]:
    settings = Settings(couch_url=couch_url, database=f"bench_{uuid.uuid4().hex[:10]}", port=local_couch.free_port(),
                        log_level="WARNING")
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.port).start()
    base = f"http://127.0.0.1:{settings.port}"
    figures: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession() as http:
            start = time.perf_counter()
            stored = []
            for data in FILES:
                body, kind = multipart([data])
                async with http.post(f"{base}/studies", data=body, headers={"Content-Type": kind}) as resp:
                    answer = await resp.json(content_type=None)
                    stored += [r["00081190"]["Value"][0] for r in answer.get("00081199", {}).get("Value", [])]
            figures["STOW one file per request, s"] = time.perf_counter() - start
            figures["STOW instances/s"] = len(stored) / figures["STOW one file per request, s"]

            latencies = []
            for _ in range(20):
                t = time.perf_counter()
                async with http.get(f"{base}/studies?{OHIF_LIST}") as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - t)
            figures["QIDO OHIF study list p50, ms"] = statistics.median(latencies) * 1000

            start = time.perf_counter()
            size = 0
            for url in stored:
                study, series, sop = url.split("/studies/")[1].replace("/series/", "/").replace("/instances/", "/").split("/")
                params = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
                async with http.get(f"{base}/wado", params=params) as resp:
                    size += len(await resp.read())
            elapsed = time.perf_counter() - start
            figures["WADO-URI all stored files, s"] = elapsed
            figures["WADO-URI MB/s"] = size / elapsed / 1e6
    finally:
        await runner.cleanup()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--couch-url")
    args = parser.parse_args()
    with ExitStack() as stack:
        url = args.couch_url
        if not url:
            local_couch.ensure_installed(quiet=True)
            data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-couch-")))
            url = stack.enter_context(local_couch.start(data, port=local_couch.free_port())).url
        rounds = [asyncio.run(one_round(url)) for _ in range(args.rounds)]
    print(f"{len(FILES)} pydicom test files ({sum(map(len, FILES)) / 1e6:.1f} MB), {args.rounds} rounds, medians:")
    for key in rounds[0]:
        print(f"  {key:38s} {statistics.median(r[key] for r in rounds):10.2f}")


if __name__ == "__main__":
    main()
