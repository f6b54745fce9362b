"""Shared pytest fixtures."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# =============================================================================
# CouchDB-API store
#
# `couch_server` (session): the CouchDB every test talks to. With
# DICOMWEB_COUCH_TEST_URL set (and optionally DICOMWEB_COUCH_TEST_USER and
# DICOMWEB_COUCH_TEST_PASSWORD) that server is used as is, e.g. Apache CouchDB 3;
# otherwise a pouchdb-server (scripts/local_couch.py) is started on a free port
# with its data in a temporary folder, and stopped at the end of the session.
# `couch_db_name` (function): a fresh database name, deleted after the test.
# =============================================================================


def load_script(name: str) -> ModuleType:
    """Import scripts/NAME.py (scripts/ is no package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, REPO_ROOT / "scripts" / f"{name}.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


local_couch = load_script("local_couch")


@dataclass(frozen=True)
class CouchServer:
    """Where the tests' CouchDB answers: base URL (no trailing slash) and credentials."""

    url: str
    user: str | None = None
    password: str | None = None

    def headers(self) -> dict[str, str]:
        """Headers for every request: JSON answers (pouchdb-server needs it), basic auth if set."""
        headers = {"Accept": "application/json"}
        if self.user is not None:
            token = f"{self.user}:{self.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        return headers

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A blocking JSON request, ``path`` relative to the server root: (status, JSON body)."""
        headers = self.headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        url = f"{self.url}/{path.lstrip('/')}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return status, json.loads(raw) if raw else None


@pytest.fixture(scope="session")
def local_couch_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The pouchdb-server started for this session (a ``local_couch.LocalCouch``), or
    None when DICOMWEB_COUCH_TEST_URL names an external server."""
    if os.environ.get("DICOMWEB_COUCH_TEST_URL"):
        yield None
        return
    local_couch.ensure_installed()
    with local_couch.start(tmp_path_factory.mktemp("couch"), port=0) as couch:
        yield couch


@pytest.fixture(scope="session")
def couch_server(local_couch_store: Any) -> CouchServer:
    """The CouchDB-API server for this test session (see the section comment above)."""
    if local_couch_store is None:
        return CouchServer(
            url=os.environ["DICOMWEB_COUCH_TEST_URL"].rstrip("/"),
            user=os.environ.get("DICOMWEB_COUCH_TEST_USER") or None,
            password=os.environ.get("DICOMWEB_COUCH_TEST_PASSWORD") or None,
        )
    return CouchServer(url=local_couch_store.url)


@contextmanager
def temporary_database(couch_server: CouchServer) -> Iterator[str]:
    """A unique database name (not created); the database is deleted at the end if it exists."""
    name = f"test_{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        status, body = couch_server.request("DELETE", name)
        if status not in (200, 202, 404):
            raise AssertionError(f"could not delete test database {name}: {status} {body}")


@pytest.fixture
def couch_db_name(couch_server: CouchServer) -> Iterator[str]:
    """A unique database name (not created); the database is deleted after the test if it exists."""
    with temporary_database(couch_server) as name:
        yield name


# =============================================================================
# End of the CouchDB-API store section.
# =============================================================================


# ---------------------------------------------------------------------------------------------
# The application under test, against the real store above.
# ---------------------------------------------------------------------------------------------

from collections.abc import Awaitable, Callable  # noqa: E402

from aiohttp.test_utils import TestClient  # noqa: E402
from oidc_issuer import OidcIssuer, bearer  # noqa: E402

from dicomweb_couch.app import create_app  # noqa: E402
from dicomweb_couch.settings import Settings  # noqa: E402

MakeClient = Callable[..., Awaitable[TestClient]]


@dataclass(frozen=True)
class SuiteAuth:
    """Settings and client headers that every server of the suite gets (none by default)."""

    settings: dict[str, Any]
    headers: dict[str, str]


@pytest.fixture(scope="session")
def suite_auth() -> Iterator[SuiteAuth]:
    """With DICOMWEB_COUCH_TEST_AUTH=keycloak the whole suite runs behind authentication: the
    servers trust a stand-in Keycloak realm (tests/oidc_issuer.py) and the test clients send one
    of its tokens with every role."""
    mode = os.environ.get("DICOMWEB_COUCH_TEST_AUTH", "none")
    if mode == "none":
        yield SuiteAuth({}, {})
    elif mode == "keycloak":
        with OidcIssuer().running() as issuer:
            yield SuiteAuth(issuer.server_settings(), bearer(issuer.mint(lifetime=24 * 3600)))
    else:
        raise pytest.UsageError(f"DICOMWEB_COUCH_TEST_AUTH={mode!r}: use none or keycloak")


@pytest.fixture
def make_client(aiohttp_client, couch_server: CouchServer, suite_auth: SuiteAuth, tmp_path: Path) -> MakeClient:
    """Start the server (a real TCP port) on a database of the real store, with any settings.
    A test that sets ``auth`` itself is testing authentication: the suite's stays out of it.
    Each server keeps its study catalog in a file of its own, as separate processes do."""

    async def make(database: str, **settings) -> TestClient:
        settings.setdefault("catalog_path", str(tmp_path / f"catalog-{uuid.uuid4().hex[:8]}.sqlite3"))
        suite = SuiteAuth({}, {}) if "auth" in settings else suite_auth
        config = Settings(couch_url=couch_server.url, couch_user=couch_server.user,
                          couch_password=couch_server.password, database=database, couch_wait=30,
                          **{**suite.settings, **settings})
        return await aiohttp_client(create_app(config), headers=suite.headers)

    return make


@pytest.fixture
async def client(make_client: MakeClient, couch_db_name: str) -> TestClient:
    return await make_client(couch_db_name)


# ---------------------------------------------------------------------------------------------
# The pinned OHIF Viewer build (scripts/ohif.py), installed once for the tests that need it.
# ---------------------------------------------------------------------------------------------


def unavailable(reason: str) -> None:
    """Skip when something a test needs cannot be had on this machine; in CI (``CI=true``), fail."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason} (CI must run this test: .ci/run installs what it needs)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def installed_ohif_build() -> Path:
    """The pinned OHIF build in its default place, installed now if it is not there (npm)."""
    ohif = load_script("ohif")
    try:
        return ohif.install(ohif.DEFAULT_DEST, quiet=True)
    except (ohif.OhifError, OSError) as exc:
        unavailable(f"the OHIF build is not available: {exc}")
        raise
