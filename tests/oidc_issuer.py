"""A stand-in Keycloak realm for the tests, with keys made here.

Keycloak (Java) cannot run on the test machines, so this small aiohttp app serves the realm
endpoints python-keycloak calls — ``/realms/{realm}``, its OpenID configuration, its keys
(``certs``), the token endpoint (password grant, for Basic credentials) and token introspection —
on a loopback port, in a thread with its own event loop so that any test, and the synchronous
dicomweb_client, can use it. Tokens are minted as Keycloak mints them (RS256 with a ``kid``,
``typ: Bearer``, ``azp``, ``realm_access``/``resource_access`` roles); the tests bend them to
make the bad ones. ``hits`` counts the requests per endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from jwcrypto import jwk, jwt

ROLES = ("dicomweb-read", "dicomweb-write", "dicomweb-delete")  # the server's default role names


class Clock:
    """A clock that moves only when told: the issuer's and the server's time in the tests that
    depend on time (token lifetimes, key fetch cool-downs), so that they cannot depend on the
    real clock's fraction of a second or on the machine's speed. It starts at a whole second of
    the real time (JWT times are whole seconds), because the JWT library checks ``exp`` against
    the real clock, with the server's 30 s leeway."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def new_key(kty: str = "RSA", use: str = "sig") -> jwk.JWK:
    """A key as Keycloak publishes it: a random ``kid``, its algorithm and use."""
    key = jwk.JWK.generate(kty=kty, size=2048, kid=uuid.uuid4().hex)
    key.update(alg="RS256" if use == "sig" else "RSA-OAEP", use=use)
    return key


class OidcIssuer:
    def __init__(self, realm: str = "dicomweb", client_id: str = "dicomweb", client_secret: str = "archive-secret",
                 base_path: str = ""):
        self.realm, self.client_id, self.client_secret = realm, client_id, client_secret
        self.base_path = base_path  # "/auth" for a Keycloak before version 17
        self.signing_key = new_key()
        self.encryption_key = new_key(use="enc")  # published as Keycloak does; never valid for signatures
        self.published = [self.signing_key, self.encryption_key]
        self.users: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.token_lifetime = 300
        self.clock: Callable[[], float] = time.time  # a tests.oidc_issuer.Clock to control time
        self.issued: dict[str, dict[str, Any]] = {}  # token -> claims, for introspection
        self.hits: Counter[str] = Counter()
        self.failing: set[str] = set()  # endpoints (names as in hits) that answer 500, as a broken Keycloak
        self.url = ""

    # -- what the tests use ----------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/{self.realm}"

    def server_settings(self, **extra: Any) -> dict[str, Any]:
        """Settings of a dicomweb_couch server that trusts this realm."""
        return {"auth": "keycloak", "keycloak_url": self.url, "keycloak_realm": self.realm,
                "keycloak_client_id": self.client_id, "keycloak_client_secret": self.client_secret, **extra}

    def add_user(self, name: str, password: str, roles: tuple[str, ...] = ROLES) -> None:
        self.users[name] = (password, roles)

    def claims(self, roles: tuple[str, ...] = ROLES, lifetime: float | None = None, **override: Any) -> dict[str, Any]:
        """An access token's claims as Keycloak writes them; ``override`` replaces or (None) removes."""
        now = int(self.clock())
        claims = {
            "exp": now + int(self.token_lifetime if lifetime is None else lifetime), "iat": now,
            "jti": str(uuid.uuid4()), "iss": self.issuer, "aud": "account", "sub": str(uuid.uuid4()),
            "typ": "Bearer", "azp": self.client_id, "scope": "openid profile", "preferred_username": "tester",
            "realm_access": {"roles": ["default-roles-" + self.realm, *roles]},
            "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
        }
        claims.update(override)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, roles: tuple[str, ...] = ROLES, *, key: jwk.JWK | None = None, header: dict[str, Any] | None = None,
             lifetime: float | None = None, **override: Any) -> str:
        """A signed access token (see :meth:`claims`), by the current signing key unless ``key``."""
        key = key or self.signing_key
        claims = self.claims(roles, lifetime, **override)
        token = jwt.JWT(header=header or {"alg": "RS256", "typ": "JWT", "kid": key["kid"]}, claims=claims)
        token.make_signed_token(key)
        serialized: str = token.serialize()
        self.issued[serialized] = claims
        return serialized

    def opaque(self, roles: tuple[str, ...] = ROLES, **override: Any) -> str:
        """A token that is no JWT: only introspection can tell what it grants."""
        token = secrets.token_urlsafe(32)
        self.issued[token] = self.claims(roles, **override)
        return token

    def rotate(self) -> None:
        """A new signing key replaces the published one, as Keycloak's key rotation does."""
        self.signing_key = new_key()
        self.published = [self.signing_key, self.encryption_key]

    # -- the realm endpoints -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        realm = self.base_path + "/realms/{realm}"
        oidc = realm + "/protocol/openid-connect"
        app.add_routes([
            web.get(realm, self._realm),
            web.get(realm + "/.well-known/openid-configuration", self._well_known),
            web.get(oidc + "/certs", self._certs),
            web.post(oidc + "/token", self._token),
            web.post(oidc + "/token/introspect", self._introspect),
        ])
        return app

    def _count(self, request: web.Request, name: str) -> None:
        self.hits[name] += 1
        if name in self.failing:
            raise web.HTTPInternalServerError(text='{"error":"unknown_error"}', content_type="application/json")
        if request.match_info["realm"] != self.realm:
            raise web.HTTPNotFound(text='{"error":"Realm does not exist"}', content_type="application/json")

    async def _realm(self, request: web.Request) -> web.Response:
        self._count(request, "realm")
        public = self.signing_key.export_to_pem().decode().splitlines()[1:-1]
        return web.json_response({"realm": self.realm, "public_key": "".join(public),
                                  "token-service": self.issuer + "/protocol/openid-connect"})

    async def _well_known(self, request: web.Request) -> web.Response:
        self._count(request, "well-known")
        oidc = self.issuer + "/protocol/openid-connect"
        return web.json_response({
            "issuer": self.issuer, "authorization_endpoint": oidc + "/auth", "token_endpoint": oidc + "/token",
            "introspection_endpoint": oidc + "/token/introspect", "jwks_uri": oidc + "/certs",
            "userinfo_endpoint": oidc + "/userinfo", "end_session_endpoint": oidc + "/logout",
            "grant_types_supported": ["authorization_code", "password", "refresh_token"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })

    async def _certs(self, request: web.Request) -> web.Response:
        self._count(request, "certs")
        return web.json_response({"keys": [key.export_public(as_dict=True) for key in self.published]})

    def _client_ok(self, form: Any) -> bool:
        return bool(form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret)

    async def _token(self, request: web.Request) -> web.Response:
        self._count(request, "token")
        form = await request.post()
        if not self._client_ok(form):
            return web.json_response({"error": "unauthorized_client",
                                      "error_description": "Invalid client or Invalid client credentials"}, status=401)
        if form.get("grant_type") != "password":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        password, roles = self.users.get(str(form.get("username")), (None, ()))
        if password is None or not secrets.compare_digest(password.encode(), str(form.get("password")).encode()):
            return web.json_response({"error": "invalid_grant", "error_description": "Invalid user credentials"},
                                     status=401)
        token = self.mint(roles, preferred_username=form["username"])
        return web.json_response({"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer",
                                  "refresh_expires_in": 1800, "scope": "openid profile"})

    async def _introspect(self, request: web.Request) -> web.Response:
        self._count(request, "introspect")
        form = await request.post()
        if not self._client_ok(form):
            return web.json_response({"error": "invalid_client"}, status=401)
        claims = self.issued.get(str(form.get("token")))
        if claims is None or claims["exp"] < self.clock():
            return web.json_response({"active": False})
        return web.json_response({**claims, "active": True, "client_id": claims["azp"], "token_type": "Bearer"})

    # -- running ---------------------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[OidcIssuer]:
        """Serve on a free loopback port, in a thread, until the block ends."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="oidc-issuer", daemon=True)
        thread.start()

        async def start() -> web.AppRunner:
            runner = web.AppRunner(self.app(), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return runner

        runner = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}{self.base_path}"
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()


def basic(user: str, password: str) -> dict[str, str]:
    """An ``Authorization: Basic`` header (RFC 7617)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
