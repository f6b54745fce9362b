"""QIDO-RS latency at archive scale: a synthetic archive of N instances and one ten times smaller.

    .venv/bin/python bench/qido_scale.py [--instances 100000] [--reps 30] [--couch-url URL]

For each size: bulk-load the archive (bench/archive.py: 100 instances per study, 4 series of
25) into a fresh database (a fresh local pouchdb-server unless --couch-url names a CouchDB),
start the server in-process, time until its indexes are built (the first search that is not
answered 503 / stale), then report p50 and p95 of the queries OHIF and users make.
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
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "bench")]

import archive  # noqa: E402
import local_couch  # noqa: E402

from dicomweb_couch.app import create_app  # noqa: E402
from dicomweb_couch.settings import Settings  # noqa: E402

OHIF = "limit=101&fuzzymatching=false&includefield=00081030,00080060,00080090,00100030"


def queries(shape: archive.Shape) -> dict[str, str]:
    study = next(archive.documents(archive.Shape(1, 1, 1)))["dataset"]  # the first study's UIDs
    s, se = study["0020000D"]["Value"][0], study["0020000E"]["Value"][0]
    last_page = max(0, shape.studies - 100)
    return {
        "study list (OHIF), offset 0": f"/studies?{OHIF}&offset=0",
        "study list (OHIF), last page (offset = studies - 100)": f"/studies?{OHIF}&offset={last_page}",
        "PatientName=*mit* (substring)": f"/studies?{OHIF}&PatientName=*mit*",
        "PatientName=Garc* (prefix)": f"/studies?{OHIF}&PatientName=Garc*",
        "PatientID exact": f"/studies?{OHIF}&00100020=PID000010",
        "StudyDate range (1 year)": f"/studies?{OHIF}&StudyDate=20150101-20151231",
        "ModalitiesInStudy=MR": f"/studies?{OHIF}&ModalitiesInStudy=MR",
        "series of a study": f"/studies/{s}/series?includefield=00080021,00080031,0008103E,00200011",
        "instances of a series": f"/studies/{s}/series/{se}/instances",
    }


async def measure(couch_url: str, shape: archive.Shape, reps: int) -> tuple[dict[str, float], dict[str, tuple[float, float, int]]]:
    database = f"bench_qido_{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    archive.load(couch_url, database, shape)
    setup = {"bulk load, s": time.perf_counter() - started}
    port = local_couch.free_port()
    runner = web.AppRunner(create_app(Settings(couch_url=couch_url, database=database, port=port, log_level="WARNING")))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    results: dict[str, tuple[float, float, int]] = {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
            started = time.perf_counter()
            while True:  # the indexes build after the import: searches say 503 or stale until then
                async with http.get(f"{base}/studies?limit=1") as resp:
                    if resp.status == 200 and "Warning" not in resp.headers:
                        break
                await asyncio.sleep(1)
            for path in queries(shape).values():  # every view built, not only the studies view
                while True:
                    async with http.get(base + path) as resp:
                        await resp.read()
                        if resp.status == 200:
                            break
            setup["indexes built after the load, s"] = time.perf_counter() - started
            for name, path in queries(shape).items():
                latencies, size = [], 0
                for _ in range(reps):
                    t = time.perf_counter()
                    async with http.get(base + path) as resp:
                        body = await resp.json()
                        assert resp.status == 200, (path, resp.status)
                    latencies.append((time.perf_counter() - t) * 1000)
                    size = len(body)
                latencies.sort()
                results[name] = (statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))], size)
    finally:
        await runner.cleanup()
    return setup, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--couch-url")
    args = parser.parse_args()
    sizes = [args.instances // 10, args.instances]
    report = {}
    for n in sizes:
        shape = archive.Shape(max(1, n // 100), 4, 25)
        with ExitStack() as stack:
            url = args.couch_url
            if not url:
                local_couch.ensure_installed(quiet=True)
                data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-qido-")))
                url = stack.enter_context(local_couch.start(data, port=local_couch.free_port())).url
            report[n] = asyncio.run(measure(url, shape, args.reps))
            print(f"{shape.instances} instances / {shape.studies} studies: " +
                  ", ".join(f"{k} {v:.0f}" for k, v in report[n][0].items()), flush=True)
    small, large = sizes
    print(f"\n| query | {small:,} inst. p50 / p95 ms | {large:,} inst. p50 / p95 ms | growth (p50) | rows |")
    print("| --- | --- | --- | --- | --- |")
    for name in report[large][1]:
        (p50s, p95s, _), (p50l, p95l, rows) = report[small][1].get(name, (0, 0, 0)), report[large][1][name]
        print(f"| {name} | {p50s:.1f} / {p95s:.1f} | {p50l:.1f} / {p95l:.1f} | {p50l / p50s if p50s else 0:.2f}x | {rows} |")


if __name__ == "__main__":
    main()
