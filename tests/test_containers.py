"""The container files, checked as far as a machine without images or the compose plugin can: every compose
file against the Compose Specification's JSON schema (the copy check-jsonschema vendors), the Dockerfile by
hadolint, the settings they pass known to the server, and the start-up sequence the containers run exercised
for real: settings from the environment, waiting for a CouchDB that comes up later, the HEALTHCHECK command,
a clean stop on SIGTERM, and the one-shot cluster setup against local stores."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, local_couch
from ruamel.yaml import YAML

from dicomweb_couch.commands import COMMANDS
from dicomweb_couch.settings import ENV_PREFIX, Settings

COMPOSE_FILES = ["compose.yaml", "compose.cluster.yaml"]
OTHER_HELPERS_FILES = {"config/couchdb-images.ini"}  # written with the CouchDB tuning work; mounted here
SETTINGS_ENV = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
COMMAND_ENV = {ENV_PREFIX + "CLUSTER_NODES", ENV_PREFIX + "CLUSTER_HOSTS"}  # read by cluster-setup


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def compose(name: str) -> dict:
    return YAML(typ="safe").load((REPO_ROOT / name).read_text())


def test_compose_files_follow_the_compose_specification():
    done = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *COMPOSE_FILES],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_invalid_compose_file_is_caught(tmp_path: Path):
    """The check can fail: a misspelt key is refused."""
    bad = tmp_path / "compose.yaml"
    bad.write_text((REPO_ROOT / "compose.yaml").read_text().replace("depends_on:", "depend_on:", 1))
    done = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "depend_on" in done.stdout


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_pass_known_settings_and_mount_files_that_exist(name: str):
    spec = compose(name)
    for service_name, service in spec["services"].items():
        env = service.get("environment") or {}
        ours = {k for k in env if k.startswith(ENV_PREFIX)}
        assert ours <= SETTINGS_ENV | COMMAND_ENV, (service_name, ours - SETTINGS_ENV - COMMAND_ENV)
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith("./") and source[2:] not in OTHER_HELPERS_FILES:
                assert (REPO_ROOT / source).exists(), (service_name, source)
        if service.get("image", "").startswith("dicomweb-couch") and "command" in service:
            assert service["command"][:3] == ["python", "-m", "dicomweb_couch"]
            assert service["command"][3] in COMMANDS
    assert any(str(v).endswith("couchdb-images.ini:ro") or "couchdb-images.ini:" in str(v)
               for s in spec["services"].values() for v in s.get("volumes") or [])


def test_cluster_variant_has_three_nodes_a_setup_service_replicas_and_a_balancer():
    spec = compose("compose.cluster.yaml")["services"]
    nodes = [name for name, s in spec.items() if s.get("image") == "couchdb:3"]
    assert len(nodes) == 3
    assert {s["environment"]["NODENAME"] for name, s in spec.items() if name in nodes} == set(nodes)
    setup = spec["couchdb-setup"]
    assert setup["environment"]["DICOMWEB_COUCH_CLUSTER_NODES"] == ",".join(f"http://{n}:5984" for n in nodes)
    assert spec["dicomweb"]["deploy"]["replicas"] >= 2
    assert spec["dicomweb"]["depends_on"]["couchdb-setup"]["condition"] == "service_completed_successfully"
    haproxy = (REPO_ROOT / "deploy/haproxy.cfg").read_text()
    assert "option httpchk GET /readyz" in haproxy and all(f"server {n} {n}:5984" in haproxy for n in nodes)


def test_haproxy_accepts_the_load_balancer_configuration():
    """Debian's haproxy (.ci/run installs it) checks deploy/haproxy.cfg as the cluster's image would."""
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if haproxy is None:
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy is not installed (apt-get install haproxy)")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    done = subprocess.run([haproxy, "-c", "-f", "deploy/haproxy.cfg"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_lints_clean_and_runs_our_commands():
    done = subprocess.run([tool("hadolint"), "Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "USER 10001" in text and "FROM python:3.11-slim" in text
    assert 'CMD ["python", "-m", "dicomweb_couch", "healthcheck"]' in text
    assert "scripts/ohif.py install" in text
    for line in text.splitlines():
        if line.startswith("ENV") or line.startswith("    DICOMWEB_COUCH_"):
            for word in line.replace("ENV", "").split():
                key = word.split("=", 1)[0]
                if key.startswith(ENV_PREFIX):
                    assert key in SETTINGS_ENV, key


def run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomweb_couch", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def container_env(**values: str) -> dict[str, str]:
    """The environment as the image sets it (Dockerfile ENV), on loopback, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({ENV_PREFIX + "HOST": "127.0.0.1", ENV_PREFIX + "OHIF_DIR": "/nonexistent/ohif",
                ENV_PREFIX + "COUCH_WAIT": "120", "PYTHONUNBUFFERED": "1"})
    env.update({ENV_PREFIX + k.upper(): v for k, v in values.items()})
    return env


def test_start_up_sequence_of_the_server_container(tmp_path: Path):
    """The server starts before its CouchDB, waits for it, becomes healthy and ready, and stops on SIGTERM."""
    port, couch_port = local_couch.free_port(), local_couch.free_port()
    env = container_env(port=str(port), couch_url=f"http://127.0.0.1:{couch_port}", database="container")
    assert run("healthcheck", env=env).returncode == 1  # nothing listens yet
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "dicomweb_couch", "serve"], cwd=REPO_ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(3)
        assert server.poll() is None, (tmp_path / "server.log").read_text()
        assert "waiting for CouchDB" in (tmp_path / "server.log").read_text()
        with local_couch.start(tmp_path / "couch", port=couch_port):
            deadline = time.monotonic() + 60
            while run("healthcheck", env=env).returncode != 0:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.5)
            assert run("healthcheck", "--ready", env=env).returncode == 0
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == 0, (tmp_path / "server.log").read_text()
    finally:
        if server.poll() is None:
            server.kill()
        log.close()


def test_cluster_setup_waits_for_every_node_and_plans_the_documented_steps(tmp_path: Path):
    with local_couch.start(tmp_path / "n1", port=0) as n1, local_couch.start(tmp_path / "n2", port=0) as n2:
        env = container_env(couch_user="admin", couch_password="s3cret", cluster_nodes=f"{n1.url},{n2.url}",
                            cluster_hosts="couchdb-1,couchdb-2")
        done = run("cluster-setup", "--dry-run", env=env)
        assert done.returncode == 0, done.stderr
        assert f"cluster-setup: {n1.url} is up" in done.stdout and f"cluster-setup: {n2.url} is up" in done.stdout
        steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert [s["action"] for s in steps] == ["enable_cluster", "add_node", "finish_cluster"]
        assert steps[0]["remote_node"] == "couchdb-2" and steps[0]["node_count"] == 2
        assert steps[1]["host"] == "couchdb-2" and steps[1]["password"] == "***"
        assert "s3cret" not in done.stdout
        done = run("cluster-setup", env=env)  # pouchdb-server (admin party) knows no such admin: a clear refusal
        assert done.returncode == 2 and "refused the admin credentials of 'admin'" in done.stderr, done.stderr


def test_cluster_setup_gives_up_on_a_node_that_never_comes_up():
    env = container_env(couch_user="admin", couch_password="x", couch_wait="2",
                        cluster_nodes=f"http://127.0.0.1:{local_couch.free_port()}")
    done = run("cluster-setup", env=env)
    assert done.returncode == 2 and "did not come up within 2 s" in done.stderr
    env.pop(ENV_PREFIX + "CLUSTER_NODES")
    done = run("cluster-setup", env=env)
    assert done.returncode == 2 and "give --nodes" in done.stderr
