"""The bulk importer (python -m dicomweb_couch import) on a generated tree: nested folders, a zip,
a DICOMDIR, junk and duplicates; its report; interrupted and resumed; into a running server."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pydicom
from dicom_factory import make_instance
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from dicomweb_couch.commands import COMMANDS


def importer(couch_server, database: str, *args: str) -> list[str]:
    argv = [sys.executable, "-m", "dicomweb_couch", "import", "--couch-url", couch_server.url,
            "--database", database, *args]
    if couch_server.user:
        argv += ["--couch-user", couch_server.user, "--couch-password", couch_server.password or ""]
    return argv


def report_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fp:
        return list(csv.DictReader(fp))


def instance_count(couch_server, database: str) -> int:
    status, body = couch_server.request("GET", f"{database}/_all_docs")
    assert status == 200, body
    return sum(1 for row in body["rows"] if not row["id"].startswith("_design/"))


def build_tree(root: Path) -> dict[str, int]:
    """A site's export: what the importer must end up with."""
    study = generate_uid()
    nested = root / "export" / "PAT1" / "CT"
    nested.mkdir(parents=True)
    for n in range(1, 6):
        (nested / f"IM{n:04d}").write_bytes(make_instance(study, generate_uid(), instance_number=n))
    (root / "export" / "copy").mkdir()
    (root / "export" / "copy" / "IM0001.dcm").write_bytes((nested / "IM0001").read_bytes())  # a duplicate
    with zipfile.ZipFile(root / "export" / "series.zip", "w") as archive:
        series = generate_uid()
        for n in range(1, 4):
            archive.writestr(f"zipped/{n}.dcm", make_instance(study, series, instance_number=10 + n))
        archive.writestr("zipped/readme.txt", "not DICOM")
    fileset = FileSet()
    for n in range(1, 3):
        fileset.add(pydicom.dcmread(io.BytesIO(make_instance(generate_uid(), generate_uid(), instance_number=n,
                                                             patient_id="CD-1"))))
    fileset.write(root / "cd")
    (root / "export" / "notes.txt").write_text("a junk file")
    (root / "export" / "empty.dcm").write_bytes(b"")
    (root / "export" / "noise.bin").write_bytes(os.urandom(3000))
    broken = pydicom.dcmread(io.BytesIO(make_instance(study, generate_uid())))
    del broken.StudyInstanceUID
    buffer = io.BytesIO()
    broken.save_as(buffer, enforce_file_format=True)
    (root / "export" / "no-study.dcm").write_bytes(buffer.getvalue())
    return {"stored": 5 + 3 + 2, "already there": 1, "refused": 1, "skipped": 4 + 1}  # +1: cd/DICOMDIR itself


def test_import_is_a_command():
    assert COMMANDS["import"][0] == "dicomweb_couch.commands.importer"


def test_tree_with_zip_dicomdir_junk_and_duplicates(couch_server, couch_db_name, tmp_path):
    expected = build_tree(tmp_path)
    report = tmp_path / "report.csv"
    run = subprocess.run(importer(couch_server, couch_db_name, "--workers", "3", "--report", str(report),
                                  str(tmp_path / "export"), str(tmp_path / "cd")),
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 1, run.stderr  # one file refused
    rows = report_rows(report)
    by_result: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_result.setdefault(row["result"], []).append(row)
    assert {k: len(v) for k, v in by_result.items()} == expected, rows
    [refused] = by_result["refused"]
    assert refused["file"].endswith("no-study.dcm") and refused["failure_reason"] == "0xA900"
    assert "StudyInstanceUID" in refused["message"]
    assert any(r["file"].endswith("series.zip!zipped/1.dcm") for r in by_result["stored"])
    assert any("DICOMDIR" in r["message"] for r in by_result["skipped"])
    assert "stored:        10" in run.stderr and "refused:       1" in run.stderr
    assert instance_count(couch_server, couch_db_name) == 10

    # Again: everything is there already; the DICOMDIR given alone imports what it references.
    run = subprocess.run(importer(couch_server, couch_db_name, "--report", str(report), str(tmp_path / "cd" / "DICOMDIR")),
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert [r["result"] for r in report_rows(report)] == ["already there"] * 2


def test_interrupted_then_resumed(couch_server, couch_db_name, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    study = generate_uid()
    for n in range(40):
        (folder / f"{n:03d}.dcm").write_bytes(make_instance(study, generate_uid(), instance_number=n, rows=64, columns=64))
    report = tmp_path / "first.csv"
    proc = subprocess.Popen(importer(couch_server, couch_db_name, "--workers", "1", "--report", str(report), str(folder)),
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not report.exists() or len(report_rows(report)) < 5):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    first = [r for r in report_rows(report) if r["result"] == "stored"]
    assert 5 <= len(first) < 40
    run = subprocess.run(importer(couch_server, couch_db_name, "--report", str(tmp_path / "second.csv"), str(folder)),
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    second = report_rows(tmp_path / "second.csv")
    already = {r["file"] for r in second if r["result"] == "already there"}
    assert {r["file"] for r in first} <= already
    assert len(second) == 40 and all(r["result"] in ("stored", "already there") for r in second)
    assert instance_count(couch_server, couch_db_name) == 40


async def test_into_a_running_server_by_url(client, tmp_path, suite_auth):
    expected = build_tree(tmp_path)
    report = tmp_path / "report.csv"
    token = suite_auth.headers.get("Authorization", "").removeprefix("Bearer ")  # the suite run behind Keycloak
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dicomweb_couch", "import", "--url", str(client.make_url("")), "--workers", "2",
        "--report", str(report), str(tmp_path / "export"), str(tmp_path / "cd"), *(["--token", token] if token else []),
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 1, err.decode()
    results = [r["result"] for r in report_rows(report)]
    # By STOW-RS a repeated file is stored again (left as it was by the server), not "already there".
    assert results.count("stored") == expected["stored"] + expected["already there"]
    assert results.count("refused") == 1 and results.count("skipped") == expected["skipped"]
    resp = await client.get("/instances", params={"limit": "100"})
    assert len(await resp.json()) == 10


def test_bad_arguments_and_missing_paths(couch_server, couch_db_name, tmp_path):
    run = subprocess.run(importer(couch_server, couch_db_name, "--workers", "0", str(tmp_path)),
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2 and "--workers" in run.stderr
    report = tmp_path / "r.csv"
    run = subprocess.run(importer(couch_server, couch_db_name, "--report", str(report), str(tmp_path / "nowhere")),
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    [row] = report_rows(report)
    assert row["result"] == "skipped" and row["message"] == "no such file or folder"


def test_import_keeps_files_in_the_file_store_when_the_server_uses_one(couch_server, couch_db_name, tmp_path):
    """The importer takes the server's settings, file_store included: every way in keeps files alike."""
    folder, store = tmp_path / "in", tmp_path / "files"
    folder.mkdir()
    sent = [make_instance(generate_uid(), generate_uid(), instance_number=n) for n in range(1, 4)]
    for n, data in enumerate(sent):
        (folder / f"{n}.dcm").write_bytes(data)
    run = subprocess.run(importer(couch_server, couch_db_name, "--no-progress", str(folder)),
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DICOMWEB_COUCH_FILE_STORE": str(store)})
    assert run.returncode == 0, run.stderr
    kept = sorted(p.read_bytes() for p in store.rglob("*.dcm") if not {"tmp", "trash"} & set(p.relative_to(store).parts))
    assert kept == sorted(sent)  # byte-exact, one file each
    status, body = couch_server.request("GET", f"{couch_db_name}/_all_docs?include_docs=true")
    assert status == 200, body
    docs = [row["doc"] for row in body["rows"] if not row["id"].startswith("_design/")]
    assert len(docs) == 3 and all("file" in doc and "_attachments" not in doc for doc in docs)
