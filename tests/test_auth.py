"""Keycloak authentication and role-based access, against a stand-in realm (tests/oidc_issuer.py).

Every case goes through the real server and store: a token is accepted when a stored instance can
be stored, found and fetched with it, and refused when the answer is a 401/403 and nothing changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from conftest import REPO_ROOT
from dicom_factory import make_instance, multipart
from dicomweb_cli import Study, run_cli
from jwcrypto import jwk, jwt
from jwcrypto.common import base64url_encode, json_encode
from oidc_issuer import Clock, OidcIssuer, basic, bearer, new_key
from pydicom.uid import generate_uid
from server_process import assert_clean_error, clean_env, couch_env, run, server_process

from dicomweb_couch.auth import AUTHENTICATOR, Permission, Principal, challenge, required_permission
from dicomweb_couch.auth.keycloak import CLOCK_SKEW, KEYS_MAX_AGE, REFETCH_COOLDOWN, KeycloakConfig, _Remembered
from dicomweb_couch.settings import Settings

READ, WRITE, DELETE = "dicomweb-read", "dicomweb-write", "dicomweb-delete"

# The realm is started before, and so stopped after, every server of a test: a server closing
# while its realm is already gone was a flaky teardown (issue 9, item 10).
pytestmark = pytest.mark.usefixtures("issuer")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(clock: Clock) -> Iterator[OidcIssuer]:
    issuer = OidcIssuer()
    issuer.clock = clock
    with issuer.running():
        yield issuer


@pytest.fixture
async def secured(make_client, couch_db_name, issuer, clock) -> TestClient:
    """The server with Keycloak authentication on, trusting ``issuer``; its client sends no credentials.
    Its clocks are the issuer's :class:`Clock`: time moves only when a test says so."""
    client = await make_client(couch_db_name, **issuer.server_settings())
    authenticator = client.app[AUTHENTICATOR]
    authenticator.clock = authenticator.monotonic = clock
    return client


async def store(client: TestClient, headers: dict[str, str]) -> tuple[int, dict, dict]:
    """STOW one new instance with ``headers``: (status, JSON body, WADO-URI parameters of it)."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    body, content_type = multipart([make_instance(study, series, sop)])
    resp = await client.post("/studies", data=body, headers={**headers, "Content-Type": content_type})
    wado = {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop}
    return resp.status, await resp.json(content_type=None), wado


async def studies(client: TestClient, issuer: OidcIssuer) -> list[str]:
    """The StudyInstanceUIDs the archive holds, asked with a valid token."""
    resp = await client.get("/studies", headers=bearer(issuer.mint()))
    assert resp.status == 200
    return [r["0020000D"]["Value"][0] for r in await resp.json(content_type=None)]


async def refused(client: TestClient, headers: dict[str, str], *words: str, path: str = "/studies",
                  status: int = 401, error: str | None = "invalid_token") -> dict:
    """GET ``path`` is refused with ``status``, an RFC 6750 challenge and a message naming ``words``."""
    resp = await client.get(path, headers=headers)
    body = await resp.json()
    assert resp.status == status, body
    assert body["status"] == status
    for word in words:
        assert word in body["message"], body
    www = resp.headers["WWW-Authenticate"]
    assert www.startswith('Bearer realm="dicomweb"'), www
    assert (f'error="{error}"' in www) if error else ("error=" not in www), www
    return body


# -- valid tokens ------------------------------------------------------------------------------------


async def test_valid_token_stores_finds_and_fetches(secured, issuer):
    headers = bearer(issuer.mint())
    status, body, wado = await store(secured, headers)
    assert status == 200, body
    assert await studies(secured, issuer) == [wado["studyUID"]]
    resp = await secured.get(f"/studies/{wado['studyUID']}/metadata", headers=headers)
    assert resp.status == 200
    resp = await secured.get("/wado", params=wado, headers=headers)
    assert resp.status == 200
    assert (await resp.read())[128:132] == b"DICM"


async def test_keys_are_fetched_once_not_per_request(secured, issuer):
    for _ in range(5):
        assert (await secured.get("/studies", headers=bearer(issuer.mint()))).status == 200
    assert (issuer.hits["certs"], issuer.hits["well-known"]) == (1, 1)
    assert issuer.hits["token"] == issuer.hits["introspect"] == 0


async def test_concurrent_first_requests_fetch_the_keys_once(secured, issuer):
    answers = await asyncio.gather(*(secured.get("/studies", headers=bearer(issuer.mint())) for _ in range(8)))
    assert [r.status for r in answers] == [200] * 8
    assert issuer.hits["certs"] == 1


async def test_clock_skew_is_tolerated(secured, issuer):
    assert (await secured.get("/studies", headers=bearer(issuer.mint(lifetime=-CLOCK_SKEW // 2)))).status == 200
    nbf = int(time.time()) + CLOCK_SKEW // 2
    assert (await secured.get("/studies", headers=bearer(issuer.mint(nbf=nbf)))).status == 200


async def test_audience_instead_of_authorized_party(secured, issuer):
    token = issuer.mint(aud=["account", issuer.client_id], azp="another-app")
    assert (await secured.get("/studies", headers=bearer(token))).status == 200


async def test_viewer_client_tokens_are_accepted_and_its_login_generated(make_client, couch_db_name, issuer):
    client = await make_client(couch_db_name, **issuer.server_settings(keycloak_viewer_client_id="dicomweb-viewer"))
    assert (await client.get("/studies", headers=bearer(issuer.mint(azp="dicomweb-viewer")))).status == 200
    await refused(client, bearer(issuer.mint(azp="another-app")), "another-app", "'dicomweb-viewer'")
    login = {"authority": issuer.issuer, "client_id": "dicomweb-viewer", "redirect_uri": "/callback",
             "response_type": "code", "scope": "openid profile", "post_logout_redirect_uri": "/"}
    assert await ohif_config(client) == {"oidc": [login]}  # OHIF logs in and sends the token


async def test_viewer_logs_in_only_with_a_viewer_client(secured, client):
    assert await ohif_config(secured) == {}
    assert await ohif_config(client) == {}


async def ohif_config(client: TestClient) -> dict:
    """The ``oidc`` part of the generated OHIF app-config.js, served without credentials."""
    resp = await client.get("/ohif/app-config.js")
    assert resp.status == 200
    text = await resp.text()
    config = json.loads(text.split("window.config = ", 1)[1].split(";\n", 1)[0])
    return {k: v for k, v in config.items() if k == "oidc"}


# -- missing and bad credentials: 401 ------------------------------------------------------------


async def test_no_header_is_401_and_nothing_is_stored(secured, issuer):
    body = await refused(secured, {}, "Bearer", error=None)  # RFC 6750 3.1: no error code without credentials
    assert "realm 'dicomweb'" in body["message"]
    status, _, wado = await store(secured, {})
    assert status == 401
    resp = await secured.get("/wado", params=wado)
    assert resp.status == 401
    resp = await secured.get("/", params=wado)  # the predecessor's WADO-URI root
    assert resp.status == 401
    assert await studies(secured, issuer) == []


async def test_expired_token(secured, issuer):
    await refused(secured, bearer(issuer.mint(lifetime=-2 * CLOCK_SKEW)), "expired")


async def test_token_not_yet_valid(secured, issuer):
    await refused(secured, bearer(issuer.mint(nbf=int(time.time()) + 3 * CLOCK_SKEW)), "not valid before")


async def test_token_without_expiry(secured, issuer):
    await refused(secured, bearer(issuer.mint(exp=None)), "exp")


async def test_wrong_issuer(secured, issuer):
    await refused(secured, bearer(issuer.mint(iss="http://127.0.0.1:1/realms/other")), "realms/other", "issued by")


async def test_wrong_audience(secured, issuer):
    await refused(secured, bearer(issuer.mint(aud="account", azp="another-app")), "another-app", "audience")


async def test_id_token_is_not_an_access_token(secured, issuer):
    await refused(secured, bearer(issuer.mint(typ="ID", aud=issuer.client_id)), "'ID'", "not an access token")


async def test_bad_signature(secured, issuer):
    forged = new_key()
    token = issuer.mint(key=forged, header={"alg": "RS256", "typ": "JWT", "kid": issuer.signing_key["kid"]})
    await refused(secured, bearer(token), "signature")


async def test_tampered_payload(secured, issuer):
    header, _, signature = issuer.mint(roles=(READ,)).split(".")
    payload = base64url_encode(json_encode(issuer.claims(roles=(READ, WRITE, DELETE))))
    await refused(secured, bearer(f"{header}.{payload}.{signature}"), "signature")
    status, _, _ = await store(secured, bearer(f"{header}.{payload}.{signature}"))
    assert status == 401


async def test_alg_none_is_refused(secured, issuer):
    header = base64url_encode(json_encode({"alg": "none", "typ": "JWT", "kid": issuer.signing_key["kid"]}))
    payload = base64url_encode(json_encode(issuer.claims()))
    await refused(secured, bearer(f"{header}.{payload}."), "'none'")


async def test_hmac_keyed_with_the_public_key_is_refused(secured, issuer):
    """The classic confusion: HS256 with the realm's public key (which anyone can fetch) as secret."""
    public_pem = jwk.JWK(**issuer.signing_key.export_public(as_dict=True)).export_to_pem()
    secret = jwk.JWK(kty="oct", k=base64url_encode(public_pem))
    token = jwt.JWT(header={"alg": "HS256", "typ": "JWT", "kid": issuer.signing_key["kid"]}, claims=issuer.claims())
    token.make_signed_token(secret)
    await refused(secured, bearer(token.serialize()), "'HS256'")


async def test_algorithm_must_be_the_one_of_its_key(secured, issuer):
    token = issuer.mint(header={"alg": "RS512", "typ": "JWT", "kid": issuer.signing_key["kid"]})
    await refused(secured, bearer(token), "'RS512'", "'RS256'")


async def test_token_signed_with_the_encryption_key_is_refused(secured, issuer):
    """Keycloak publishes its encryption key beside the signing keys: it must not verify tokens."""
    as_signer = jwk.JWK(**{**issuer.encryption_key.export(as_dict=True), "use": "sig", "alg": "RS256"})
    await refused(secured, bearer(issuer.mint(key=as_signer)), "does not publish")


@pytest.mark.parametrize("header, words, error", [
    ("Bearer not-a-jwt", ["not a signed JWT"], "invalid_token"),
    ("Bearer a.b.c", ["not a signed JWT"], "invalid_token"),
    ('Bearer {"payload":"e30","signatures":[]}', ["not a signed JWT"], "invalid_token"),  # JSON serialization
    ("Bearer ", ["empty"], "invalid_request"),
    ("Basic !!!", ["RFC 7617"], "invalid_request"),
    ("Basic " + base64url_encode(b"no-colon"), ["RFC 7617"], "invalid_request"),
    ("Digest username=x", ["Digest", "not accepted"], None),
])
async def test_malformed_credentials(secured, header, words, error):
    await refused(secured, {"Authorization": header}, *words, error=error)


# -- key rotation ------------------------------------------------------------------------------------


async def test_unknown_key_id_is_refused_after_one_refetch(secured, issuer, clock):
    strangers = [new_key() for _ in range(3)]  # made first: making a key takes a while
    assert (await secured.get("/studies", headers=bearer(issuer.mint()))).status == 200
    clock.advance(REFETCH_COOLDOWN)
    await refused(secured, bearer(issuer.mint(key=strangers[0])), strangers[0]["kid"], "does not publish")
    assert issuer.hits["certs"] == 2  # looked once more: it might have been a new key
    clock.advance(REFETCH_COOLDOWN * 0.99)
    await refused(secured, bearer(issuer.mint(key=strangers[1])), "does not publish")
    assert issuer.hits["certs"] == 2  # but not at every unknown key id
    clock.advance(REFETCH_COOLDOWN * 0.02)
    await refused(secured, bearer(issuer.mint(key=strangers[2])), "does not publish")
    assert issuer.hits["certs"] == 3  # once the cool-down has passed, it looks again


async def test_key_rotation_is_followed(secured, issuer, clock):
    old = issuer.mint()
    assert (await secured.get("/studies", headers=bearer(old))).status == 200
    clock.advance(REFETCH_COOLDOWN)
    issuer.rotate()
    assert (await secured.get("/studies", headers=bearer(issuer.mint()))).status == 200
    assert issuer.hits["certs"] == 2
    await refused(secured, bearer(old), "does not publish")  # the withdrawn key no longer counts


async def test_keys_are_fetched_again_when_old_and_withdrawn_keys_stop_counting(secured, issuer, clock):
    old = issuer.mint()
    assert (await secured.get("/studies", headers=bearer(old))).status == 200
    issuer.rotate()
    clock.advance(KEYS_MAX_AGE - 1)
    assert (await secured.get("/studies", headers=bearer(old))).status == 200  # the keys are not old yet
    assert issuer.hits["certs"] == 1
    clock.advance(2)
    await refused(secured, bearer(old), "does not publish")  # old: fetched again, the key is gone
    assert issuer.hits["certs"] == 2
    assert (await secured.get("/studies", headers=bearer(issuer.mint()))).status == 200


async def test_a_failed_refetch_keeps_the_keys_it_had(secured, issuer, clock, caplog):
    caplog.set_level(logging.WARNING, logger="dicomweb_couch.auth.keycloak")
    token = issuer.mint()
    assert (await secured.get("/studies", headers=bearer(token))).status == 200
    issuer.failing.add("certs")
    clock.advance(REFETCH_COOLDOWN)
    stranger = new_key()
    await refused(secured, bearer(issuer.mint(key=stranger)), "does not publish")  # 401, not 503
    assert issuer.hits["certs"] == 2
    assert "keeping the previous ones" in caplog.text
    assert (await secured.get("/studies", headers=bearer(token))).status == 200
    clock.advance(KEYS_MAX_AGE + 1)  # old keys and Keycloak still failing: the old keys still serve
    assert (await secured.get("/studies", headers=bearer(token))).status == 200
    issuer.failing.clear()
    clock.advance(REFETCH_COOLDOWN)
    issuer.published.append(stranger)
    assert (await secured.get("/studies", headers=bearer(issuer.mint(key=stranger)))).status == 200


async def test_a_first_fetch_that_fails_is_503_until_keycloak_answers(secured, issuer):
    issuer.failing.add("certs")
    resp = await secured.get("/studies", headers=bearer(issuer.mint()))
    assert resp.status == 503
    assert "did not give the keys of realm 'dicomweb'" in (await resp.json())["message"]
    issuer.failing.clear()
    assert (await secured.get("/studies", headers=bearer(issuer.mint()))).status == 200


# -- roles: 403 --------------------------------------------------------------------------------------


async def test_missing_write_role_for_stow(secured, issuer):
    status, body, _ = await store(secured, bearer(issuer.mint(roles=(READ,))))
    assert status == 403, body
    assert "'realm:dicomweb-write'" in body["message"] and "'tester'" in body["message"]
    assert await studies(secured, issuer) == []
    assert (await secured.get("/studies", headers=bearer(issuer.mint(roles=(READ,))))).status == 200


async def test_missing_delete_role_for_delete(secured, issuer):
    status, _, wado = await store(secured, bearer(issuer.mint()))
    assert status == 200
    path = f"/studies/{wado['studyUID']}"
    resp = await secured.delete(path, headers=bearer(issuer.mint(roles=(READ, WRITE))))
    body = await resp.json()
    assert resp.status == 403, body
    assert "'realm:dicomweb-delete'" in body["message"]
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    assert await studies(secured, issuer) == [wado["studyUID"]]
    resp = await secured.delete(path, headers=bearer(issuer.mint(roles=(DELETE,))))
    assert resp.status == 204, await resp.text()  # let through to the DELETE service, which deleted
    assert await studies(secured, issuer) == []


async def test_missing_read_role(secured, issuer):
    status, _, wado = await store(secured, bearer(issuer.mint()))
    assert status == 200
    write_only = bearer(issuer.mint(roles=(WRITE,)))
    await refused(secured, write_only, "'realm:dicomweb-read'", status=403, error="insufficient_scope")
    await refused(secured, write_only, "read", path=f"/studies/{wado['studyUID']}/metadata", status=403,
                  error="insufficient_scope")
    assert (await secured.get("/wado", params=wado, headers=write_only)).status == 403


async def test_client_roles_and_any_token_settings(make_client, couch_db_name, issuer):
    """Client roles by name (this client's own) or as CLIENT:ROLE; an empty role lets any valid token in."""
    client = await make_client(couch_db_name, **issuer.server_settings(
        auth_read_role="", auth_write_role="store", auth_delete_role="pacs-admin:purge"))
    no_roles = bearer(issuer.mint(roles=()))
    assert (await client.get("/studies", headers=no_roles)).status == 200
    assert (await store(client, no_roles))[0] == 403
    storer = issuer.mint(roles=(), resource_access={issuer.client_id: {"roles": ["store"]}})
    assert (await store(client, bearer(storer)))[0] == 200
    assert (await client.delete("/studies/1.2.3", headers=bearer(storer))).status == 403
    purger = issuer.mint(roles=(), resource_access={"pacs-admin": {"roles": ["purge"]}})
    resp = await client.delete("/studies/1.2.3", headers=bearer(purger))
    assert resp.status == 404, await resp.text()  # let through to the DELETE service: no such study
    assert "WWW-Authenticate" not in resp.headers


# -- what stays open ---------------------------------------------------------------------------------


async def test_landing_viewer_and_preflight_stay_open(make_client, couch_db_name, issuer, tmp_path):
    secured = await make_client(couch_db_name, **issuer.server_settings(ohif_dir=str(tmp_path / "no-build")))
    resp = await secured.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    resp = await secured.get("/ohif/")  # the viewer's own answer: here that no build is installed
    assert resp.status == 503 and "The OHIF Viewer is not available" in await resp.text()
    assert "WWW-Authenticate" not in resp.headers
    resp = await secured.options("/studies", headers={
        "Origin": "http://viewer.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] in ("*", "http://viewer.example")
    assert "authorization" in resp.headers["Access-Control-Allow-Headers"].lower()
    assert issuer.hits["certs"] == 0  # no credentials were even looked at


def test_permission_by_method_and_path():
    empty: dict[str, str] = {}
    assert required_permission("OPTIONS", "/studies", empty) is None
    assert required_permission("GET", "/", empty) is None
    assert required_permission("GET", "/ohif/viewer", empty) is None
    assert required_permission("GET", "/", {"requestType": "WADO"}) is Permission.READ
    assert required_permission("HEAD", "/dicom-web/studies", empty) is Permission.READ
    assert required_permission("GET", "/ohifx", empty) is Permission.READ
    assert required_permission("POST", "/dicom-web/studies/1.2", empty) is Permission.WRITE
    assert required_permission("PUT", "/studies/1.2", empty) is Permission.WRITE
    assert required_permission("DELETE", "/studies/1.2/series/3.4", empty) is Permission.DELETE


def test_challenge_description_is_header_safe():
    value = challenge("r", "invalid_token", 'the "token" of \\ Zoë')
    assert value == 'Bearer realm="r", error="invalid_token", error_description="the token of  Zo"'


# -- Basic credentials ---------------------------------------------------------------------------


async def test_basic_credentials_are_exchanged_once_and_never_logged(secured, issuer, caplog):
    caplog.set_level(logging.DEBUG)
    issuer.add_user("alice", "pässwörd-1")
    status, body, wado = await store(secured, basic("alice", "pässwörd-1"))
    assert status == 200, body
    resp = await secured.get("/studies", headers=basic("alice", "pässwörd-1"))
    assert resp.status == 200
    assert issuer.hits["token"] == 1  # the second request used the token kept from the first
    assert "POST /studies by alice" in caplog.text  # who stored what
    await refused(secured, basic("alice", "wrong"), "refused", "'alice'")
    await refused(secured, basic("mallory", "pässwörd-1"), "refused")
    assert issuer.hits["token"] == 3  # refusals are not kept: a changed password works at once
    assert "pässwörd" not in caplog.text and "wrong" not in caplog.text


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.985])  # minted early, mid-way or late in a second
async def test_basic_token_is_kept_only_for_its_lifetime(secured, issuer, clock, fraction):
    """Kept until the token's ``exp`` (whole seconds, as Keycloak writes it), then exchanged anew."""
    issuer.add_user("bob", "secret")
    issuer.token_lifetime = 1
    clock.advance(fraction)
    assert (await secured.get("/studies", headers=basic("bob", "secret"))).status == 200
    expires = int(clock()) + 1
    clock.now = expires - 0.001
    assert (await secured.get("/studies", headers=basic("bob", "secret"))).status == 200
    assert issuer.hits["token"] == 1
    clock.now = float(expires)  # the token's exp
    assert (await secured.get("/studies", headers=basic("bob", "secret"))).status == 200
    assert issuer.hits["token"] == 2


async def test_basic_credentials_roles_apply(secured, issuer):
    issuer.add_user("reader", "pw", roles=(READ,))
    assert (await secured.get("/studies", headers=basic("reader", "pw"))).status == 200
    assert (await store(secured, basic("reader", "pw")))[0] == 403


async def test_dicomweb_client_cli_with_basic_credentials(secured, issuer, tmp_path):
    """The dicomweb_client command line's -u/-p, as the predecessor's users loaded data."""
    issuer.add_user("loader", "load-pw")
    url = str(secured.make_url("")).rstrip("/")
    study = Study()
    code, _, err = await run_cli(url, "-u", "loader", "-p", "load-pw", "store", "instances",
                                 *map(str, study.write(tmp_path)))
    assert code == 0, err
    code, out, err = await run_cli(url, "-u", "loader", "-p", "load-pw", "search", "studies")
    assert code == 0, err
    assert [r["0020000D"]["Value"][0] for r in json.loads(out)] == [study.uid]
    code, _, err = await run_cli(url, "search", "studies")
    assert code != 0 and "401" in err


# -- introspection ------------------------------------------------------------------------------------


async def test_introspection_of_opaque_tokens(make_client, couch_db_name, issuer):
    client = await make_client(couch_db_name, **issuer.server_settings(keycloak_introspect=True))
    token = issuer.opaque()
    assert (await store(client, bearer(token)))[0] == 200
    assert (await client.get("/studies", headers=bearer(token))).status == 200
    assert issuer.hits["introspect"] == 1  # the answer is reused for a while
    await refused(client, bearer("unknown-opaque-token"), "not active")
    assert (await store(client, bearer(issuer.opaque(roles=(READ,)))))[0] == 403
    await refused(client, bearer(issuer.opaque(azp="another-app")), "another-app")
    issuer.add_user("carol", "pw")
    assert (await client.get("/studies", headers=basic("carol", "pw"))).status == 200


async def test_introspection_errors_are_503_and_not_remembered(make_client, couch_db_name, issuer):
    client = await make_client(couch_db_name, **issuer.server_settings(keycloak_introspect=True))
    token = issuer.opaque()
    issuer.failing.add("introspect")
    resp = await client.get("/studies", headers=bearer(token))
    assert resp.status == 503
    assert (await resp.json())["message"].startswith("Keycloak did not introspect the token")
    issuer.failing.clear()
    assert (await client.get("/studies", headers=bearer(token))).status == 200  # asked again


def test_remembered_logins_are_evicted_oldest_first_and_expire():
    clock = Clock()
    remembered = _Remembered(clock, size=2)
    people = {key: Principal(key.decode(), key.decode(), frozenset()) for key in (b"a", b"b", b"c")}
    remembered.put(b"a", people[b"a"], clock() + 60)
    remembered.put(b"b", people[b"b"], clock() + 60)
    assert remembered.get(b"a") is people[b"a"]
    remembered.put(b"c", people[b"c"], clock() + 10)
    assert remembered.get(b"a") is None and remembered.get(b"b") is people[b"b"]  # a was the oldest
    clock.advance(10)
    assert remembered.get(b"c") is None and remembered.get(b"b") is people[b"b"]  # c expired


# -- Keycloak unreachable or misconfigured: 503, not 500 ----------------------------------------------


async def test_unreachable_keycloak_is_503(make_client, couch_db_name, issuer):
    settings = issuer.server_settings(keycloak_url="http://127.0.0.1:1")
    client = await make_client(couch_db_name, **settings)
    resp = await client.get("/studies", headers=bearer(issuer.mint()))
    assert resp.status == 503
    assert "Keycloak" in (await resp.json())["message"]
    issuer.add_user("dave", "pw")
    assert (await client.get("/studies", headers=basic("dave", "pw"))).status == 503


async def test_unknown_realm_is_503_naming_it(make_client, couch_db_name, issuer):
    client = await make_client(couch_db_name, **issuer.server_settings(keycloak_realm="typo"))
    resp = await client.get("/studies", headers=bearer(issuer.mint()))
    body = await resp.json()
    assert resp.status == 503
    assert "'typo'" in body["message"] and "Realm does not exist" in body["message"]


# -- configuration -----------------------------------------------------------------------------------


def write(path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


async def test_predecessor_config_file_under_an_auth_path(make_client, couch_db_name, tmp_path):
    """The predecessor's file alone turns authentication on; here for a Keycloak before 17,
    which serves everything under /auth."""
    with OidcIssuer(realm="research", base_path="/auth").running() as old_keycloak:
        path = write(tmp_path / "oidc.json", {"realm": "research", "authServerUrl": old_keycloak.url,
                                             "clientId": old_keycloak.client_id,
                                             "clientSecret": old_keycloak.client_secret})
        client = await make_client(couch_db_name, auth="", keycloak_config=path)
        assert (await client.get("/studies")).status == 401
        assert (await store(client, bearer(old_keycloak.mint())))[0] == 200
        assert old_keycloak.hits["certs"] == 1


def test_settings_from_environment():
    s = Settings.load(environ={"DICOMWEB_COUCH_KEYCLOAK_URL": "https://sso.example.org",
                               "DICOMWEB_COUCH_KEYCLOAK_REALM": "r", "DICOMWEB_COUCH_KEYCLOAK_CLIENT_ID": "c",
                               "DICOMWEB_COUCH_KEYCLOAK_INTROSPECT": "true",
                               "DICOMWEB_COUCH_KEYCLOAK_CLIENT_SECRET": "s"})
    assert s.auth_provider == "keycloak"
    assert KeycloakConfig.from_settings(s) == KeycloakConfig("https://sso.example.org", "r", "c", "s", True)
    assert Settings.load(environ={}).auth_provider == "none"
    off = Settings.load(environ={"DICOMWEB_COUCH_AUTH": "None", "DICOMWEB_COUCH_KEYCLOAK_URL": "x"})
    assert off.auth_provider == "none"


def test_example_keycloak_file_is_valid():
    path = str(REPO_ROOT / "config" / "keycloak.example.json")
    settings = Settings(keycloak_config=path)
    assert settings.auth_provider == "keycloak"
    assert KeycloakConfig.from_settings(settings) == KeycloakConfig("https://sso.example.org", "research", "dicomweb",
                                                                    "change-me")


def test_settings_override_the_keycloak_file(tmp_path):
    path = write(tmp_path / "kc.json", {"realm": "a", "authServerUrl": "http://kc", "clientId": "c", "clientSecret": "s"})
    config = KeycloakConfig.from_settings(Settings(keycloak_config=path, keycloak_realm="b"))
    assert config == KeycloakConfig("http://kc", "b", "c", "s")


def test_keycloak_adapter_file_is_read_too(tmp_path):
    """keycloak.json as Keycloak's admin console exports it for a client."""
    path = write(tmp_path / "keycloak.json", {"realm": "r", "auth-server-url": "http://kc/", "ssl-required": "external",
                                              "resource": "dicomweb", "credentials": {"secret": "s"}})
    assert KeycloakConfig.from_settings(Settings(keycloak_config=path)) == KeycloakConfig("http://kc/", "r", "dicomweb", "s")


@pytest.mark.parametrize("settings, words", [
    (dict(auth="keycloak"), ["keycloak_url", "keycloak_realm", "keycloak_client_id"]),
    (dict(keycloak_url="http://kc", keycloak_client_id="c"), ["keycloak_realm"]),
    (dict(keycloak_url="http://kc", keycloak_realm="r", keycloak_client_id="c", keycloak_introspect=True), ["secret"]),
])
def test_incomplete_keycloak_settings_are_named(settings, words):
    with pytest.raises(ValueError) as info:
        KeycloakConfig.from_settings(Settings(**settings))
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_bad_keycloak_file_is_named(tmp_path, content):
    path = tmp_path / "kc.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="kc.json"):
        KeycloakConfig.from_settings(Settings(keycloak_config=str(path)))


def test_unknown_auth_provider_is_an_error():
    with pytest.raises(ValueError, match="none, keycloak"):
        Settings(auth="ldap")


async def test_server_process_configured_by_environment(tmp_path, couch_server, couch_db_name, issuer):
    """``python -m dicomweb_couch`` with only DICOMWEB_COUCH_KEYCLOAK_* variables: auth on."""
    env = clean_env(DICOMWEB_COUCH_KEYCLOAK_URL=issuer.url, DICOMWEB_COUCH_KEYCLOAK_REALM=issuer.realm,
                    DICOMWEB_COUCH_KEYCLOAK_CLIENT_ID=issuer.client_id,
                    DICOMWEB_COUCH_KEYCLOAK_CLIENT_SECRET=issuer.client_secret, **couch_env(couch_server))
    args = ("--couch-url", couch_server.url, "--database", couch_db_name)
    async with server_process(tmp_path, *args, env=env) as server:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/studies") as resp:
                assert resp.status == 401
            async with session.get(server.url + "/studies", headers=bearer(issuer.mint())) as resp:
                assert resp.status == 200
        assert f"Keycloak realm '{issuer.realm}' at {issuer.url}" in server.log()
        assert issuer.client_secret not in server.log()


def test_incomplete_keycloak_settings_stop_the_command_cleanly():
    result = run(env=clean_env(DICOMWEB_COUCH_AUTH="keycloak", DICOMWEB_COUCH_KEYCLOAK_URL="http://127.0.0.1:1"))
    assert_clean_error(result, "bad settings", "keycloak_realm")
