"""The command line: options, settings precedence, and the server as a real process."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import pytest
from conftest import REPO_ROOT
from dicom_factory import make_instance, multipart
from pydicom.uid import generate_uid
from server_process import (  # noqa: F401  (re-exported for test files that still import them from here)
    START_TIMEOUT,
    STOP_TIMEOUT,
    ServerProcess,
    assert_clean_error,
    clean_env,
    couch_env,
    free_port,
    run,
    server_process,
    terminate,
    wait_until_answering,
)

from dicomweb_couch.settings import Settings
from dicomweb_couch.store import design_docs

OPTIONS = ("--host", "--port", "--couch-url", "--couch-user", "--couch-password", "--database",
           "--prefix", "--log-level", "--config")


# -- helpers ----------------------------------------------------------------------------------


async def stow_and_search(root: str) -> None:
    """STOW one instance at ``root`` (the DICOMweb root URL), then find it with QIDO-RS."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    body, content_type = multipart([make_instance(study, series, sop, patient_id="PAT-PROC")])
    async with aiohttp.ClientSession() as session:
        async with session.post(root + "/studies", data=body, headers={"Content-Type": content_type}) as resp:
            assert resp.status == 200, await resp.text()
        async with session.get(root + "/studies", params={"PatientID": "PAT-PROC"}) as resp:
            assert resp.status == 200
            [found] = await resp.json(content_type=None)
        assert found["0020000D"]["Value"] == [study]
        assert found["00201208"]["Value"] == [1]
        async with session.get(f"{root}/studies/{study}/series/{series}/instances") as resp:
            assert [r["00080018"]["Value"] for r in await resp.json(content_type=None)] == [[sop]]


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


# -- the options --------------------------------------------------------------------------------


def test_help_documents_every_option():
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for option in OPTIONS:
        assert option in result.stdout, option
    assert "DICOMWEB_COUCH_" in result.stdout  # the environment variables are mentioned


def test_version():
    result = run("--version")
    assert result.returncode == 0 and "dicomweb_couch" in result.stdout


def test_unknown_option_is_a_usage_error():
    result = run("--no-such-option")
    assert result.returncode == 2 and "usage:" in result.stderr


# -- Settings.load ------------------------------------------------------------------------------


def test_defaults():
    s = Settings.load(cli={}, environ={})
    assert (s.host, s.port, s.couch_url, s.database, s.prefix, s.log_level) == \
        ("127.0.0.1", 5985, "http://127.0.0.1:5984", "chronicle", "", "INFO")
    assert s.couch_user is None and s.couch_password is None


def test_precedence_cli_over_env_over_file_over_defaults(tmp_path):
    config = write_json(tmp_path / "c.json", {"port": 1111, "database": "from_file", "host": "0.0.0.0"})
    env = {"DICOMWEB_COUCH_PORT": "2222", "DICOMWEB_COUCH_DATABASE": "from_env"}
    cli = {"port": 3333, "database": None, "host": None}  # argparse gives None for options not given

    s = Settings.load(cli=cli, environ=env, config_file=config)
    assert (s.port, s.database, s.host) == (3333, "from_env", "0.0.0.0")
    s = Settings.load(cli={}, environ=env, config_file=config)
    assert (s.port, s.database, s.host) == (2222, "from_env", "0.0.0.0")
    s = Settings.load(cli={}, environ={}, config_file=config)
    assert (s.port, s.database, s.host) == (1111, "from_file", "0.0.0.0")
    assert Settings.load(cli={}, environ={}).port == 5985


def test_config_file_named_by_environment(tmp_path):
    config = write_json(tmp_path / "c.json", {"database": "named_by_env"})
    assert Settings.load(cli={}, environ={"DICOMWEB_COUCH_CONFIG": str(config)}).database == "named_by_env"


def test_environment_values_are_typed():
    s = Settings.load(cli={}, environ={"DICOMWEB_COUCH_PORT": "6000", "DICOMWEB_COUCH_COUCH_WAIT": "2.5",
                                       "DICOMWEB_COUCH_QIDO_MAX_LIMIT": "50"})
    assert (s.port, s.couch_wait, s.qido_max_limit) == (6000, 2.5, 50)


def test_example_config_is_valid():
    s = Settings.load(cli={}, environ={}, config_file=REPO_ROOT / "config" / "example.json")
    assert s.prefix == "/dicom-web"


def test_unknown_key_in_config_file_is_an_error(tmp_path):
    config = write_json(tmp_path / "c.json", {"port": 1111, "databse": "typo"})
    with pytest.raises(ValueError, match="databse"):
        Settings.load(cli={}, environ={}, config_file=config)


@pytest.mark.parametrize("source", [
    {"cli": {"port": 0}},
    {"cli": {"port": 70000}},
    {"environ": {"DICOMWEB_COUCH_PORT": "eighty"}},
    {"environ": {"DICOMWEB_COUCH_PORT": "-1"}},
])
def test_bad_port_is_an_error(source):
    with pytest.raises(ValueError):
        Settings.load(cli=source.get("cli", {}), environ=source.get("environ", {}))


@pytest.mark.parametrize("given, expected", [
    ("dicom-web/", "/dicom-web"), ("/dicom-web", "/dicom-web"), ("/dicom-web/", "/dicom-web"),
    (" dicom-web ", "/dicom-web"), ("/", ""), ("", ""), ("a/b/", "/a/b"),
])
def test_prefix_is_normalised(given, expected):
    assert Settings.load(cli={"prefix": given}, environ={}).prefix == expected


# -- start-up errors --------------------------------------------------------------------------------


def test_missing_config_file_is_a_clean_error(tmp_path):
    missing = tmp_path / "nope.json"
    assert_clean_error(run("--config", str(missing)), str(missing))


@pytest.mark.parametrize("content", ['{"port": 1111,', "not json at all", "42", '["port"]', '{"port": null}'],
                         ids=["truncated", "text", "number", "array", "null-port"])
def test_invalid_config_file_is_a_clean_error(tmp_path, content):
    config = write_json(tmp_path / "bad.json", content)
    assert_clean_error(run("--config", str(config)), "bad settings")


def test_bad_port_on_command_line_is_a_clean_error():
    assert_clean_error(run("--port", "70000"), "70000")


async def test_unreachable_couch_exits_non_zero_naming_it():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dicomweb_couch", "--port", str(free_port()), "--couch-url", url,
        cwd=REPO_ROOT, env=clean_env(DICOMWEB_COUCH_COUCH_WAIT="2"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out = (await asyncio.wait_for(proc.communicate(), 15))[0].decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode != 0, out
    last = out.strip().splitlines()[-1]
    assert "CouchDB" in last and url in last, out
    assert "Traceback" not in out, out


# -- the server as a process --------------------------------------------------------------------------------


async def test_server_process_start_round_trip_and_sigterm(tmp_path, couch_server, couch_db_name):
    args = ("--couch-url", couch_server.url, "--database", couch_db_name)
    async with server_process(tmp_path, *args, env=clean_env(**couch_env(couch_server))) as server:
        log = server.log()
        assert f"DICOMweb root (OHIF qidoRoot/wadoRoot): {server.url}\n" in log, log
        assert f"WADO-URI root (OHIF wadoUriRoot): {server.url}/wado\n" in log, log

        status, db = couch_server.request("GET", couch_db_name)
        assert status == 200, db
        status, ddoc = couch_server.request("GET", f"{couch_db_name}/_design/qido")
        assert status == 200, ddoc
        assert ddoc["views"] == design_docs.load()["_design/qido"]["views"]

        await stow_and_search(server.url)

        assert await terminate(server) == 0, server.log()
    assert "Traceback" not in server.log(), server.log()


async def test_server_process_takes_settings_from_file_and_environment(tmp_path, couch_server, couch_db_name):
    """Prefix and database from the config file, CouchDB URL from the environment, port from the command line."""
    config = write_json(tmp_path / "c.json", {"prefix": "dicom-web/", "database": couch_db_name,
                                               "couch_url": "http://127.0.0.1:1", "log_level": "DEBUG"})
    env = clean_env(DICOMWEB_COUCH_COUCH_URL=couch_server.url, DICOMWEB_COUCH_LOG_LEVEL="INFO",
                    **couch_env(couch_server))
    async with server_process(tmp_path, "--config", str(config), env=env) as server:
        log = server.log()
        assert f"DICOMweb root (OHIF qidoRoot/wadoRoot): {server.url}/dicom-web\n" in log, log
        assert f"WADO-URI root (OHIF wadoUriRoot): {server.url}/dicom-web/wado\n" in log, log
        assert " DEBUG " not in log  # the environment's log level won over the file's
        assert couch_server.request("GET", f"{couch_db_name}/_design/qido")[0] == 200
        await stow_and_search(server.url + "/dicom-web")
        assert await terminate(server) == 0, server.log()
